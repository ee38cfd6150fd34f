/* sns.c — Amazon SNS's Query protocol, enough for awscli and boto3 to
 * publish to herald unchanged (DESIGN §10, AWS-COMPAT.md): Publish,
 * PublishBatch, ListTopics, CreateTopic.
 *
 * Requests are form fields (form.c); answers are XML whose
 * <{Action}Result> is a direct child of the root, errors an
 * <ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/>.
 * Topic ARNs are arn:aws:sns:{gateway.region}:{gateway.account}:{topic}; an
 * ARN of another region or account names no topic here (NotFound).
 * Topics are the broker's (its "stats" reply), so CreateTopic only answers
 * for topics that already exist in its config.
 *
 * SNS message attributes become herald attributes: String and Number → their
 * StringValue, String.Array → its JSON text, Binary → its base64 text (as
 * sent); a name that is not a herald key ([A-Za-z0-9_.-]{1,128}) is
 * InvalidParameterValue, as AWS answers a bad attribute name. Dedup id: MessageDeduplicationId, else boto3's
 * amz-sdk-invocation-id header (+ "/" + the entry Id in a batch), made into a
 * herald id (gw_make_id), so a boto3 retry never stores an event twice.
 * Subject, MessageGroupId, CreateTopic's Attributes and Tags are accepted and
 * ignored. No signature is checked.
 *
 * 5xx only when nothing was stored: a broker that does not answer at all
 * (ServiceUnavailable); every other failure is 4xx.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

#define SNS_NS "http://sns.amazonaws.com/doc/2010-03-31/"
#define BATCH_MAX 10                /* SNS's PublishBatch limit */
#define PAGE_SIZE 100               /* ListTopics page, as SNS */

/* ---- responses ---------------------------------------------------------------------- */

void sns_error(gw_resp *r, const gw_req *q, int status, const char *code, const char *fmt, ...)
{
    char msg[4400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) { http_take(r, 500, NULL, NULL, 0); return; }
    fprintf(f, "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"" SNS_NS "\"><Error><Type>%s</Type><Code>",
            status >= 500 ? "Receiver" : "Sender");
    xml_escape(f, code, strlen(code));
    fputs("</Code><Message>", f);
    xml_escape(f, msg, strlen(msg));
    fprintf(f, "</Message></Error><RequestId>%s</RequestId></ErrorResponse>\n", q->id);
    fclose(f);
    http_take(r, status, "text/xml", buf, len);
    http_header(r, "x-amzn-RequestId", "%s", q->id);
}

/* Opens the answer of action: the caller writes the Result's children. */
static FILE *ok_begin(const char *action, char **buf, size_t *len)
{
    FILE *f = open_memstream(buf, len);
    if (f) fprintf(f, "<?xml version=\"1.0\"?>\n<%sResponse xmlns=\"" SNS_NS "\"><%sResult>", action, action);
    return f;
}

static void ok_end(FILE *f, const char *action, const gw_req *q, char **buf, size_t *len, gw_resp *r)
{
    fprintf(f, "</%sResult><ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></%sResponse>\n", action,
            q->id, action);
    fclose(f);
    http_take(r, 200, "text/xml", *buf, *len);
    http_header(r, "x-amzn-RequestId", "%s", q->id);
}

static void arn_of(gw_t *g, FILE *f, const char *topic)
{
    fprintf(f, "arn:aws:sns:%s:%s:", g->gw->region, g->gw->account);
    xml_escape(f, topic, strlen(topic));
}

/* ---- TopicArn ---------------------------------------------------------------------------- */

/* arn:PARTITION:sns:REGION:ACCOUNT:NAME → NAME. 0, or -1 with r answered. */
static int topic_of(gw_t *g, const gw_req *q, const char *arn, char topic[PROTO_NAME_MAX + 1], gw_resp *r)
{
    if (!arn || !*arn) {
        sns_error(r, q, 400, "InvalidParameter", "Invalid parameter: TopicArn (herald-gateway publishes to topics only: "
                                                 "TargetArn and PhoneNumber are not supported)");
        return -1;
    }
    const char *p[6];
    size_t n = 0;
    p[n++] = arn;
    for (const char *c = arn; *c && n < 6; c++)
        if (*c == ':') p[n++] = c + 1;
    if (n < 6 || strncmp(arn, "arn:", 4) != 0 || strncmp(p[2], "sns:", 4) != 0) {
        sns_error(r, q, 400, "InvalidParameter", "Invalid parameter: TopicArn Reason: '%.200s' is not arn:aws:sns:REGION:ACCOUNT:TOPIC", arn);
        return -1;
    }
    size_t rl = (size_t)(p[4] - p[3] - 1), al = (size_t)(p[5] - p[4] - 1);
    const char *name = p[5];
    if (rl != strlen(g->gw->region) || strncmp(p[3], g->gw->region, rl) != 0 || al != strlen(g->gw->account) ||
        strncmp(p[4], g->gw->account, al) != 0 || !proto_valid_name(name)) {
        sns_error(r, q, 404, "NotFound", "Topic does not exist");
        return -1;
    }
    strcpy(topic, name);
    return 0;
}

/* ---- message attributes and body --------------------------------------------------------- */

typedef struct {
    herald_attr a[PROTO_MAX_ATTRS];
    size_t n;
} sns_attrs;

/* Why name is not a herald attribute key, in AWS's words for a bad SNS
 * attribute name (InvalidParameterValue): the first character outside
 * A-Z a-z 0-9 _ - . as #xHEX of its code point, or the length. */
static void bad_name(const char *name, char *msg, size_t msglen)
{
    size_t n = strlen(name), i = strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-");
    if (i == n) {
        snprintf(msg, msglen, "Message attribute name '%.40s...' is longer than %d characters.", name,
                 PROTO_ATTR_KEY_MAX);
        return;
    }
    const unsigned char *p = (const unsigned char *)name + i;
    unsigned cp = p[0];
    int more = cp >= 0xF0 ? 3 : cp >= 0xE0 ? 2 : cp >= 0xC0 ? 1 : 0;
    if (more) cp &= 0x3F >> more;
    for (int k = 1; k <= more && (p[k] & 0xC0) == 0x80; k++) cp = cp << 6 | (p[k] & 0x3F);
    snprintf(msg, msglen, "Invalid non-alphanumeric character '#x%X' was found in the message attribute name. "
             "Can only include alphanumeric characters, hyphens, underscores, or dots.", cp);
}

/* prefix."MessageAttributes.entry.N.…" → attrs. 0, or -1 with code/msg set. */
static int read_attrs(const form_t *f, const char *prefix, sns_attrs *at, const char **code, char *msg, size_t msglen)
{
    char k[256];
    at->n = 0;
    for (unsigned i = 1;; i++) {
        snprintf(k, sizeof k, "%sMessageAttributes.entry.%u.Name", prefix, i);
        size_t nl;
        const char *name = form_get(f, k, &nl);
        if (!name) break;
        *code = "InvalidParameterValue";
        if (at->n == PROTO_MAX_ATTRS) {
            snprintf(msg, msglen, "Number of message attributes [%u] exceeds the allowed maximum [%d].", i,
                     PROTO_MAX_ATTRS);
            for (unsigned j = i + 1;; j++) {   /* say how many there are */
                snprintf(k, sizeof k, "%sMessageAttributes.entry.%u.Name", prefix, j);
                if (!form_get(f, k, NULL)) break;
                snprintf(msg, msglen, "Number of message attributes [%u] exceeds the allowed maximum [%d].", j,
                         PROTO_MAX_ATTRS);
            }
            return -1;
        }
        if (!*name || nl != strlen(name)) {
            snprintf(msg, msglen, "The message attribute name must be non-empty text (entry %u).", i);
            return -1;
        }
        if (!proto_valid_attr_key(name)) {   /* herald's key rule: a name (DESIGN §4) */
            bad_name(name, msg, msglen);
            return -1;
        }
        snprintf(k, sizeof k, "%sMessageAttributes.entry.%u.Value.DataType", prefix, i);
        const char *type = form_get(f, k, NULL);
        if (!type || !*type) {
            snprintf(msg, msglen, "The message attribute '%.128s' must contain non-empty message attribute type.", name);
            return -1;
        }
        bool binary = strncmp(type, "Binary", 6) == 0 && (type[6] == 0 || type[6] == '.');
        bool text = (strncmp(type, "String", 6) == 0 && (type[6] == 0 || type[6] == '.')) ||
                    (strncmp(type, "Number", 6) == 0 && (type[6] == 0 || type[6] == '.'));
        if (!binary && !text) {
            snprintf(msg, msglen, "The message attribute '%.128s' has an invalid message attribute type, the set of "
                     "supported type prefixes is Binary, Number, and String.", name);
            return -1;
        }
        snprintf(k, sizeof k, "%sMessageAttributes.entry.%u.Value.%s", prefix, i, binary ? "BinaryValue" : "StringValue");
        size_t vl;
        const char *v = form_get(f, k, &vl);
        if (!v || (!*v && !text) || vl != strlen(v)) {
            snprintf(msg, msglen, "The message attribute '%.128s' must contain non-empty message attribute value for "
                     "message attribute type '%.64s'.", name, type);
            return -1;
        }
        at->a[at->n].key = name;
        at->a[at->n].value = v;   /* String.Array: its JSON text; Binary: its base64 text */
        at->n++;
    }
    return 0;
}

/* JSON: skips one value at *p (depth-capped). 0 or -1. */
static int skip_ws(const char **p, const char *end)
{
    while (*p < end && (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r')) (*p)++;
    return *p < end ? 0 : -1;
}

static int skip_string(const char **p, const char *end)
{
    if (*p >= end || **p != '"') return -1;
    for ((*p)++; *p < end; (*p)++) {
        if (**p == '\\') { (*p)++; continue; }
        if (**p == '"') { (*p)++; return 0; }
    }
    return -1;
}

static int skip_value(const char **p, const char *end, int depth)
{
    if (depth > 64 || skip_ws(p, end) < 0) return -1;
    char c = **p;
    if (c == '"') return skip_string(p, end);
    if (c == '{' || c == '[') {
        char close = c == '{' ? '}' : ']';
        (*p)++;
        if (skip_ws(p, end) < 0) return -1;
        if (**p == close) { (*p)++; return 0; }
        for (;;) {
            if (c == '{') {
                if (skip_ws(p, end) < 0 || skip_string(p, end) < 0 || skip_ws(p, end) < 0 || **p != ':') return -1;
                (*p)++;
            }
            if (skip_value(p, end, depth + 1) < 0 || skip_ws(p, end) < 0) return -1;
            if (**p == ',') { (*p)++; continue; }
            if (**p == close) { (*p)++; return 0; }
            return -1;
        }
    }
    const char *s = *p;
    while (*p < end && !strchr(",}] \t\r\n", **p)) (*p)++;
    return *p > s ? 0 : -1;
}

static void put_utf8(char **o, unsigned cp)
{
    char *q = *o;
    if (cp < 0x80) *q++ = (char)cp;
    else if (cp < 0x800) { *q++ = (char)(0xc0 | cp >> 6); *q++ = (char)(0x80 | (cp & 0x3f)); }
    else if (cp < 0x10000) {
        *q++ = (char)(0xe0 | cp >> 12); *q++ = (char)(0x80 | (cp >> 6 & 0x3f)); *q++ = (char)(0x80 | (cp & 0x3f));
    } else {
        *q++ = (char)(0xf0 | cp >> 18); *q++ = (char)(0x80 | (cp >> 12 & 0x3f));
        *q++ = (char)(0x80 | (cp >> 6 & 0x3f)); *q++ = (char)(0x80 | (cp & 0x3f));
    }
    *o = q;
}

/* MessageStructure=json: the string value of the top-level "default" key,
 * unescaped, malloc'ed (*len its length). NULL when there is none. */
static char *json_default(const char *s, size_t n, size_t *len)
{
    const char *p = s, *end = s + n;
    if (skip_ws(&p, end) < 0 || *p != '{') return NULL;
    p++;
    for (;;) {
        if (skip_ws(&p, end) < 0 || *p != '"') return NULL;
        const char *k = p;
        if (skip_string(&p, end) < 0) return NULL;
        bool is_default = p - k == 9 && memcmp(k, "\"default\"", 9) == 0;
        if (skip_ws(&p, end) < 0 || *p != ':') return NULL;
        p++;
        if (skip_ws(&p, end) < 0) return NULL;
        if (is_default && *p == '"') {
            const char *v = p;
            if (skip_string(&p, end) < 0) return NULL;
            char *out = malloc((size_t)(p - v) + 4), *o = out;
            if (!out) return NULL;
            for (const char *c = v + 1; c < p - 1; c++) {
                if (*c != '\\') { *o++ = *c; continue; }
                c++;
                switch (*c) {
                case 'n': *o++ = '\n'; break;
                case 't': *o++ = '\t'; break;
                case 'r': *o++ = '\r'; break;
                case 'b': *o++ = '\b'; break;
                case 'f': *o++ = '\f'; break;
                case 'u': {
                    unsigned cp = 0;
                    for (int i = 1; i <= 4 && c + i < p - 1; i++) {
                        char h = c[i];
                        cp = cp << 4 | (unsigned)(h >= '0' && h <= '9' ? h - '0' : (h | 32) - 'a' + 10);
                    }
                    c += 4;
                    if (cp >= 0xd800 && cp < 0xdc00 && c + 6 < p && c[1] == '\\' && c[2] == 'u') {
                        unsigned lo = 0;
                        for (int i = 3; i <= 6; i++) {
                            char h = c[i];
                            lo = lo << 4 | (unsigned)(h >= '0' && h <= '9' ? h - '0' : (h | 32) - 'a' + 10);
                        }
                        if (lo >= 0xdc00 && lo < 0xe000) { cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00); c += 6; }
                    }
                    put_utf8(&o, cp);
                    break;
                }
                default: *o++ = *c;
                }
            }
            *len = (size_t)(o - out);
            return out;
        }
        if (skip_value(&p, end, 1) < 0 || skip_ws(&p, end) < 0) return NULL;
        if (*p == ',') { p++; continue; }
        return NULL;
    }
}

/* The payload of an entry: Message, or its "default" with MessageStructure=json.
 * *owned is set when it was allocated. NULL with code/msg on failure. */
static const char *message_of(const form_t *f, const char *prefix, size_t *len, char **owned, const char **code,
                              char *msg, size_t msglen)
{
    char k[256];
    *owned = NULL;
    snprintf(k, sizeof k, "%sMessage", prefix);
    const char *m = form_get(f, k, len);
    *code = "InvalidParameter";
    if (!m || *len == 0) {
        snprintf(msg, msglen, "Invalid parameter: Empty message");
        return NULL;
    }
    snprintf(k, sizeof k, "%sMessageStructure", prefix);
    const char *ms = form_get(f, k, NULL);
    if (ms && *ms) {
        if (strcmp(ms, "json") != 0) {
            snprintf(msg, msglen, "Invalid parameter: MessageStructure Reason: only 'json' is supported");
            return NULL;
        }
        *owned = json_default(m, *len, len);
        if (!*owned) {
            snprintf(msg, msglen, "Invalid parameter: Message Structure - No default entry in JSON message body");
            return NULL;
        }
        return *owned;
    }
    return m;
}

/* The dedup id of an entry: MessageDeduplicationId, else the SDK's
 * invocation id (+ "/" + entry id in a batch). NULL: none. */
static const char *dedup_of(const form_t *f, const gw_req *q, const char *prefix, const char *entry_id,
                            char out[HERALD_ID_MAX])
{
    char k[256];
    snprintf(k, sizeof k, "%sMessageDeduplicationId", prefix);
    size_t n;
    const char *d = form_get(f, k, &n);
    if (d && n) {
        gw_make_id(d, n, out);
        return out;
    }
    const char *inv = http_get(q, "amz-sdk-invocation-id");
    if (!inv || !*inv) return NULL;
    if (!entry_id) {
        gw_make_id(inv, strlen(inv), out);
        return out;
    }
    char both[512];
    int bl = snprintf(both, sizeof both, "%s/%s", inv, entry_id);
    gw_make_id(both, bl < (int)sizeof both ? (size_t)bl : sizeof both - 1, out);
    return out;
}

/* ---- actions -------------------------------------------------------------------------------- */

static void publish(gw_t *g, gw_req *q, const form_t *f, gw_resp *r)
{
    char topic[PROTO_NAME_MAX + 1], msg[600], did[HERALD_ID_MAX];
    if (topic_of(g, q, form_get(f, "TopicArn", NULL), topic, r) != 0) return;
    const char *code;
    sns_attrs at;
    if (read_attrs(f, "", &at, &code, msg, sizeof msg) != 0) {
        sns_error(r, q, 400, code, "%s", msg);
        return;
    }
    size_t len;
    char *owned;
    const char *m = message_of(f, "", &len, &owned, &code, msg, sizeof msg);
    if (!m) {
        sns_error(r, q, 400, code, "%s", msg);
        return;
    }
    herald_publish_opts po = { .attrs = at.a, .nattrs = at.n, .dedup_id = dedup_of(f, q, "", NULL, did) };
    char err[512], id[HERALD_ID_MAX];
    herald_client *c = pool_take(g, err, sizeof err);
    if (!c) {
        sns_error(r, q, 503, "ServiceUnavailable", "%s", err);
        free(owned);
        return;
    }
    int st = herald_publish(c, topic, m, len, &po, id);
    const char *why = *herald_last_error(c) ? herald_last_error(c) : herald_strerror(st);
    switch (st) {
    case 0: {
        char *buf;
        size_t blen;
        FILE *o = ok_begin("Publish", &buf, &blen);
        if (!o) { sns_error(r, q, 500, "InternalError", "out of memory"); break; }
        fprintf(o, "<MessageId>%s</MessageId>", id);
        ok_end(o, "Publish", q, &buf, &blen, r);
        break;
    }
    case HERALD_E_UNKNOWN: sns_error(r, q, 404, "NotFound", "Topic does not exist"); break;
    case HERALD_E_TOO_LARGE: sns_error(r, q, 400, "InvalidParameter", "Invalid parameter: Message too long (%s)", why); break;
    case HERALD_E_INVALID: sns_error(r, q, 400, "InvalidParameterValue", "%s", why); break;
    case HERALD_E_REFUSED: sns_error(r, q, 400, "InvalidParameter", "%s", why); break;
    case HERALD_E_THROTTLED: sns_error(r, q, 429, "Throttled", "%s", why); break;
    case HERALD_E_UNREACHABLE:
    case HERALD_E_TIMEOUT: sns_error(r, q, 503, "ServiceUnavailable", "%s", why); break;
    default: sns_error(r, q, 500, "InternalError", "%s", why);
    }
    pool_give(g, c, st == HERALD_E_UNREACHABLE || st == HERALD_E_TIMEOUT);
    free(owned);
}

typedef struct {
    char id[96];                /* the entry's Id */
    const char *code;           /* NULL: publish it */
    char msg[300];
    int status;                 /* 1: pending; else 0 or HERALD_E_… */
    char mid[HERALD_ID_MAX];
    char *owned;                /* an allocated payload */
} batch_entry;

static void batch_confirmed(void *arg, int status, const char *mid)
{
    batch_entry *e = arg;
    e->status = status;
    snprintf(e->mid, sizeof e->mid, "%s", mid ? mid : "");
}

static bool valid_entry_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 80) return false;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' || *c == '_'))
            return false;
    return true;
}

static void publish_batch(gw_t *g, gw_req *q, const form_t *f, gw_resp *r)
{
    char topic[PROTO_NAME_MAX + 1], k[128];
    if (topic_of(g, q, form_get(f, "TopicArn", NULL), topic, r) != 0) return;
    size_t n = 0;
    for (unsigned i = 1;; i++) {
        snprintf(k, sizeof k, "PublishBatchRequestEntries.member.%u.Id", i);
        if (!form_get(f, k, NULL)) break;
        n++;
    }
    if (n == 0) {
        sns_error(r, q, 400, "EmptyBatchRequest", "The batch request doesn't contain any entries.");
        return;
    }
    if (n > BATCH_MAX) {
        sns_error(r, q, 400, "TooManyEntriesInBatchRequest",
                  "The batch request contains more entries than permissible (%zu > %d).", n, BATCH_MAX);
        return;
    }
    batch_entry e[BATCH_MAX];
    memset(e, 0, sizeof e);
    for (size_t i = 0; i < n; i++) {
        snprintf(k, sizeof k, "PublishBatchRequestEntries.member.%zu.Id", i + 1);
        const char *id = form_get(f, k, NULL);
        if (!valid_entry_id(id)) {
            sns_error(r, q, 400, "InvalidBatchEntryId",
                      "The Id of a batch entry in a batch request doesn't abide by the specification "
                      "(1 to 80 of A-Z a-z 0-9 - _).");
            return;
        }
        snprintf(e[i].id, sizeof e[i].id, "%s", id);
        for (size_t j = 0; j < i; j++)
            if (strcmp(e[j].id, id) == 0) {
                sns_error(r, q, 400, "BatchEntryIdsNotDistinct", "Two or more batch entries in the request have the same Id.");
                return;
            }
    }
    char err[512];
    herald_client *c = pool_take(g, err, sizeof err);
    if (!c) {
        sns_error(r, q, 503, "ServiceUnavailable", "%s", err);
        return;
    }
    /* pipelined: every entry goes out, then one wait for all the confirms */
    size_t sent = 0;
    for (size_t i = 0; i < n; i++) {
        char prefix[96], did[HERALD_ID_MAX];
        snprintf(prefix, sizeof prefix, "PublishBatchRequestEntries.member.%zu.", i + 1);
        sns_attrs at;
        size_t len;
        const char *m = NULL;
        if (read_attrs(f, prefix, &at, &e[i].code, e[i].msg, sizeof e[i].msg) == 0)
            m = message_of(f, prefix, &len, &e[i].owned, &e[i].code, e[i].msg, sizeof e[i].msg);
        if (!m) continue;
        e[i].code = NULL;
        e[i].status = 1;
        herald_publish_opts po = { .attrs = at.a, .nattrs = at.n, .dedup_id = dedup_of(f, q, prefix, e[i].id, did) };
        int st = herald_publish_async(c, topic, m, len, &po, batch_confirmed, &e[i]);
        if (st != 0) {
            e[i].status = st;
            snprintf(e[i].msg, sizeof e[i].msg, "%s", *herald_last_error(c) ? herald_last_error(c) : herald_strerror(st));
        } else {
            sent++;
        }
    }
    int frc = sent ? herald_flush(c, 0) : 0;
    /* a client that still holds confirms for e[] must not outlive this call:
     * closing it runs (expires) them now, while e[] exists */
    bool bad = frc != 0;
    for (size_t i = 0; i < n; i++) bad = bad || e[i].status == HERALD_E_UNREACHABLE || e[i].status == HERALD_E_TIMEOUT;
    const char *last = *herald_last_error(c) ? herald_last_error(c) : herald_strerror(frc);
    char lastbuf[300];
    snprintf(lastbuf, sizeof lastbuf, "%s", last);
    pool_give(g, c, bad);
    size_t unknown = 0, down = 0, tried = 0;
    for (size_t i = 0; i < n; i++) {
        if (e[i].code) continue;
        tried++;
        if (e[i].status == 1) e[i].status = frc ? frc : HERALD_E_TIMEOUT;
        unknown += e[i].status == HERALD_E_UNKNOWN;
        down += e[i].status == HERALD_E_UNREACHABLE || e[i].status == HERALD_E_TIMEOUT;
    }
    if (tried && unknown == tried) {
        sns_error(r, q, 404, "NotFound", "Topic does not exist");
        goto out;
    }
    if (tried && down == tried && tried == n) {   /* nothing was stored */
        sns_error(r, q, 503, "ServiceUnavailable", "%s", lastbuf);
        goto out;
    }
    char *buf;
    size_t blen;
    FILE *o = ok_begin("PublishBatch", &buf, &blen);
    if (!o) { sns_error(r, q, 500, "InternalError", "out of memory"); goto out; }
    fputs("<Successful>", o);
    for (size_t i = 0; i < n; i++)
        if (!e[i].code && e[i].status == 0)
            fprintf(o, "<member><Id>%s</Id><MessageId>%s</MessageId></member>", e[i].id, e[i].mid);
    fputs("</Successful><Failed>", o);
    for (size_t i = 0; i < n; i++) {
        if (!e[i].code && e[i].status == 0) continue;
        const char *code = e[i].code;
        bool sender = true;
        if (!code) {
            switch (e[i].status) {
            case HERALD_E_UNKNOWN: code = "NotFound"; snprintf(e[i].msg, sizeof e[i].msg, "Topic does not exist"); break;
            case HERALD_E_TOO_LARGE: code = "InvalidParameter"; break;
            case HERALD_E_INVALID: code = "InvalidParameterValue"; break;
            case HERALD_E_THROTTLED: code = "Throttled"; break;
            default: code = "InternalError"; sender = false;
            }
            if (!e[i].msg[0]) snprintf(e[i].msg, sizeof e[i].msg, "%s", herald_strerror(e[i].status));
        }
        fprintf(o, "<member><Id>%s</Id><Code>%s</Code><Message>", e[i].id, code);
        xml_escape(o, e[i].msg, strlen(e[i].msg));
        fprintf(o, "</Message><SenderFault>%s</SenderFault></member>", sender ? "true" : "false");
    }
    fputs("</Failed>", o);
    ok_end(o, "PublishBatch", q, &buf, &blen, r);
out:
    for (size_t i = 0; i < n; i++) free(e[i].owned);
}

static void list_topics(gw_t *g, gw_req *q, const form_t *f, gw_resp *r)
{
    char err[512];
    char **names = pool_names(g, "topics", err, sizeof err);
    if (!names) {
        sns_error(r, q, 503, "ServiceUnavailable", "%s", err);
        return;
    }
    size_t total = 0;
    while (names[total]) total++;
    size_t start = 0;
    const char *tok = form_get(f, "NextToken", NULL);
    if (tok && *tok) {
        char *end;
        unsigned long long v = strtoull(tok, &end, 10);
        if (*end || v > total) {
            sns_error(r, q, 400, "InvalidParameter", "Invalid parameter: NextToken");
            pool_free_names(names);
            return;
        }
        start = (size_t)v;
    }
    char *buf;
    size_t blen;
    FILE *o = ok_begin("ListTopics", &buf, &blen);
    if (!o) { sns_error(r, q, 500, "InternalError", "out of memory"); pool_free_names(names); return; }
    size_t stop = start + PAGE_SIZE < total ? start + PAGE_SIZE : total;
    if (start == stop) {
        fputs("<Topics/>", o);
    } else {
        fputs("<Topics>", o);
        for (size_t i = start; i < stop; i++) {
            fputs("<member><TopicArn>", o);
            arn_of(g, o, names[i]);
            fputs("</TopicArn></member>", o);
        }
        fputs("</Topics>", o);
    }
    if (stop < total) fprintf(o, "<NextToken>%zu</NextToken>", stop);   /* never on the last page */
    ok_end(o, "ListTopics", q, &buf, &blen, r);
    pool_free_names(names);
}

static void create_topic(gw_t *g, gw_req *q, const form_t *f, gw_resp *r)
{
    const char *name = form_get(f, "Name", NULL);
    if (!name || !proto_valid_name(name) || strlen(name) > 256) {
        sns_error(r, q, 400, "InvalidParameter",
                  "Invalid parameter: Topic Name (1 to 128 of A-Z a-z 0-9 _ . -)");
        return;
    }
    char err[512];
    char **names = pool_names(g, "topics", err, sizeof err);
    if (!names) {
        sns_error(r, q, 503, "ServiceUnavailable", "%s", err);
        return;
    }
    bool found = false;
    for (char **p = names; *p && !found; p++) found = strcmp(*p, name) == 0;
    pool_free_names(names);
    if (!found) {
        sns_error(r, q, 400, "InvalidParameter",
                  "Invalid parameter: Topic '%s' is not configured: herald's topics come from the broker's config "
                  "file (add it to topics and send the broker SIGHUP)", name);
        return;
    }
    char *buf;
    size_t blen;
    FILE *o = ok_begin("CreateTopic", &buf, &blen);
    if (!o) { sns_error(r, q, 500, "InternalError", "out of memory"); return; }
    fputs("<TopicArn>", o);
    arn_of(g, o, name);
    fputs("</TopicArn>", o);
    ok_end(o, "CreateTopic", q, &buf, &blen, r);
}

void sns_serve(gw_t *g, gw_req *q, gw_resp *r)
{
    form_t f;
    char err[256];
    if (form_parse(&f, q->body, q->len, err, sizeof err) != 0) {
        sns_error(r, q, 400, "MalformedQueryString", "%s", err);
        return;
    }
    const char *action = form_get(&f, "Action", NULL);
    if (!action) action = "";
    if (strcmp(action, "Publish") == 0) publish(g, q, &f, r);
    else if (strcmp(action, "PublishBatch") == 0) publish_batch(g, q, &f, r);
    else if (strcmp(action, "ListTopics") == 0) list_topics(g, q, &f, r);
    else if (strcmp(action, "CreateTopic") == 0) create_topic(g, q, &f, r);
    else
        sns_error(r, q, 400, "InvalidAction",
                  "The action '%.100s' is not valid for this endpoint (herald-gateway implements Publish, "
                  "PublishBatch, ListTopics and CreateTopic)", action);
    form_free(&f);
}
