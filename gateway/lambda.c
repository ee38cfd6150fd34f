/* lambda.c — AWS Lambda's Invoke (REST-JSON), enough for `aws lambda invoke`
 * and boto3's invoke() to run herald functions unchanged (DESIGN §10,
 * AWS-COMPAT.md).
 *
 *   POST …/2015-03-31/functions/{name}/invocations[?Qualifier=Q]
 *   X-Amz-Invocation-Type: RequestResponse (default) | Event | DryRun
 *
 * {name}: NAME, NAME:QUALIFIER, ACCOUNT:function:NAME[:QUALIFIER] or
 * arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]; another region or
 * account, or a qualifier other than $LATEST, names no function here (404).
 *
 * RequestResponse: herald_invoke (nothing stored, nothing retried): 200 +
 * output; handler failed (or its deadline passed after dispatch, or its
 * output was over 6 MiB: errorType Function.ResponseSizeTooLarge) 200 +
 * X-Amz-Function-Error: Unhandled + {"errorMessage","errorType"}; unknown
 * function 404 ResourceNotFoundException; no worker serves it 502
 * ResourceNotReadyException; no free slot in time 429. Event:
 * herald_invoke_async (stored, run with the function's retries and dead
 * letters) → 202. DryRun: 204 when the broker knows the function.
 * X-Amz-Client-Context and X-Amz-Log-Type are ignored (no log tail).
 * 5xx only when nothing ran or was stored.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"

void lambda_error(gw_resp *r, int status, const char *type, const char *fmt, ...)
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
    fprintf(f, "{\"Type\":\"%s\",\"Message\":", status >= 500 ? "Service" : "User");
    json_string(f, msg, strlen(msg));
    fputs("}", f);
    fclose(f);
    http_take(r, status, "application/json", buf, len);
    http_header(r, "x-amzn-ErrorType", "%s", type);
}

/* The function name out of the path's name part. 0, or -1 with r answered. */
static int function_of(gw_t *g, const gw_req *q, const char *spec, char name[PROTO_NAME_MAX + 1], gw_resp *r)
{
    char buf[512];
    if (strlen(spec) >= sizeof buf) goto notfound;
    strcpy(buf, spec);
    char *part[9];
    int n = 0;
    for (char *s = buf, *save = NULL, *t; n < 9 && (t = strtok_r(s, ":", &save)); s = NULL) part[n++] = t;
    /* strtok_r skips empty fields: "a::b" would look like "a:b" — refuse it */
    if (n == 0 || strstr(spec, "::") || spec[0] == ':' || spec[strlen(spec) - 1] == ':') goto notfound;
    const char *fn = NULL, *qual = NULL, *region = NULL, *account = NULL;
    if (n >= 7 && strcmp(part[0], "arn") == 0 && strcmp(part[2], "lambda") == 0 && strcmp(part[5], "function") == 0 &&
        n <= 8) {
        region = part[3];
        account = part[4];
        fn = part[6];
        qual = n == 8 ? part[7] : NULL;
    } else if ((n == 3 || n == 4) && strcmp(part[1], "function") == 0) {
        account = part[0];
        fn = part[2];
        qual = n == 4 ? part[3] : NULL;
    } else if (n <= 2) {
        fn = part[0];
        qual = n == 2 ? part[1] : NULL;
    } else {
        goto notfound;
    }
    const char *qq = MHD_lookup_connection_value(q->conn, MHD_GET_ARGUMENT_KIND, "Qualifier");
    if ((region && strcmp(region, g->gw->region) != 0) || (account && strcmp(account, g->gw->account) != 0) ||
        (qual && strcmp(qual, "$LATEST") != 0) || (qq && *qq && strcmp(qq, "$LATEST") != 0) ||
        !proto_valid_name(fn))
        goto notfound;
    strcpy(name, fn);
    return 0;
notfound:
    lambda_error(r, 404, "ResourceNotFoundException", "Function not found: %.300s", spec);
    return -1;
}

static void not_found(gw_t *g, gw_resp *r, const char *fn)
{
    lambda_error(r, 404, "ResourceNotFoundException", "Function not found: arn:aws:lambda:%s:%s:function:%s",
                 g->gw->region, g->gw->account, fn);
}

static void request_response(gw_t *g, gw_req *q, const char *fn, gw_resp *r)
{
    char err[512];
    herald_client *c = pool_take(g, err, sizeof err);
    if (!c) {
        lambda_error(r, 503, "ServiceException", "%s", err);
        return;
    }
    void *out = NULL;
    size_t out_len = 0;
    int st = herald_invoke(c, fn, q->body, q->len, 0, &out, &out_len);
    const char *why = *herald_last_error(c) ? herald_last_error(c) : herald_strerror(st);
    bool unhandled = false;
    const char *etype = "HandlerError";
    switch (st) {
    case 0:
        http_take(r, 200, "application/json", out, out_len);   /* byte for byte */
        out = NULL;
        http_header(r, "X-Amz-Executed-Version", "$LATEST");
        break;
    case HERALD_E_HANDLER:
        unhandled = true;
        if (strncmp(why, "timeout after ", 14) == 0) etype = "Sandbox.Timedout";
        if (strncmp(why, PROTO_RESPONSE_TOO_LARGE ": ", sizeof PROTO_RESPONSE_TOO_LARGE + 1) == 0) {
            etype = PROTO_RESPONSE_TOO_LARGE;   /* Lambda's type; the message is the rest */
            why += sizeof PROTO_RESPONSE_TOO_LARGE + 1;
        }
        break;
    case HERALD_E_UNKNOWN: not_found(g, r, fn); break;
    case HERALD_E_NO_WORKER: lambda_error(r, 502, "ResourceNotReadyException", "%s", why); break;
    case HERALD_E_TOO_LARGE: lambda_error(r, 413, "RequestTooLargeException", "%s", why); break;
    case HERALD_E_INVALID: lambda_error(r, 400, "InvalidParameterValueException", "%s", why); break;
    case HERALD_E_BUSY:   /* never dispatched: nothing ran (DESIGN §10: 429) */
        lambda_error(r, 429, "TooManyRequestsException", "%s", why);
        break;
    case HERALD_E_TIMEOUT:   /* dispatched, then the deadline passed: 200 + Unhandled */
        unhandled = true;
        etype = "Sandbox.Timedout";
        break;
    case HERALD_E_UNREACHABLE:
        /* lost mid-invoke: it may have run, so no 5xx (clients would run it again) */
        if (strstr(why, "during the invoke")) unhandled = true;
        else lambda_error(r, 503, "ServiceException", "%s", why);
        break;
    default: lambda_error(r, 500, "ServiceException", "%s", why);
    }
    if (unhandled) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (f) {
            fputs("{\"errorMessage\":", f);
            json_string(f, why, strlen(why));
            fputs(",\"errorType\":", f);
            json_string(f, etype, strlen(etype));
            fputs("}", f);
            fclose(f);
        }
        http_take(r, 200, "application/json", buf, len);
        http_header(r, "X-Amz-Function-Error", "Unhandled");
        http_header(r, "X-Amz-Executed-Version", "$LATEST");
    }
    free(out);
    pool_give(g, c, st == HERALD_E_UNREACHABLE);
}

static void event(gw_t *g, gw_req *q, const char *fn, gw_resp *r)
{
    char err[512], id[HERALD_ID_MAX];
    herald_client *c = pool_take(g, err, sizeof err);
    if (!c) {
        lambda_error(r, 503, "ServiceException", "%s", err);
        return;
    }
    int st = herald_invoke_async(c, fn, q->body, q->len, id);
    const char *why = *herald_last_error(c) ? herald_last_error(c) : herald_strerror(st);
    switch (st) {
    case 0:
        http_take(r, 202, NULL, NULL, 0);
        http_header(r, "X-Herald-Message-Id", "%s", id);
        break;
    case HERALD_E_UNKNOWN: not_found(g, r, fn); break;
    case HERALD_E_TOO_LARGE: lambda_error(r, 413, "RequestTooLargeException", "%s", why); break;
    case HERALD_E_THROTTLED: lambda_error(r, 429, "TooManyRequestsException", "%s", why); break;
    case HERALD_E_INVALID: lambda_error(r, 400, "InvalidParameterValueException", "%s", why); break;
    case HERALD_E_UNREACHABLE:
    case HERALD_E_TIMEOUT: lambda_error(r, 503, "ServiceException", "%s", why); break;
    default: lambda_error(r, 500, "ServiceException", "%s", why);
    }
    pool_give(g, c, st == HERALD_E_UNREACHABLE || st == HERALD_E_TIMEOUT);
}

static void dry_run(gw_t *g, const char *fn, gw_resp *r)
{
    char err[512];
    char **names = pool_names(g, "functions", err, sizeof err);
    if (!names) {
        lambda_error(r, 503, "ServiceException", "%s", err);
        return;
    }
    bool found = false;
    for (char **p = names; *p && !found; p++) found = strcmp(*p, fn) == 0;
    pool_free_names(names);
    if (found) http_take(r, 204, NULL, NULL, 0);
    else not_found(g, r, fn);
}

void lambda_serve(gw_t *g, gw_req *q, const char *rest, gw_resp *r)
{
    static const char suffix[] = "/invocations";
    size_t n = strlen(rest), sl = sizeof suffix - 1;
    if (strcmp(q->method, "POST") != 0 || n <= sl || strcmp(rest + n - sl, suffix) != 0) {
        lambda_error(r, 400, "UnsupportedOperation",
                     "herald-gateway implements only Invoke: POST /2015-03-31/functions/NAME/invocations");
        return;
    }
    char spec[600], fn[PROTO_NAME_MAX + 1];
    if (n - sl >= sizeof spec) {
        lambda_error(r, 404, "ResourceNotFoundException", "Function not found: %.200s", rest);
        return;
    }
    memcpy(spec, rest, n - sl);
    spec[n - sl] = 0;
    if (function_of(g, q, spec, fn, r) != 0) return;
    const char *type = http_get(q, "X-Amz-Invocation-Type");
    if (!type || !*type || strcmp(type, "RequestResponse") == 0) request_response(g, q, fn, r);
    else if (strcmp(type, "Event") == 0) event(g, q, fn, r);
    else if (strcmp(type, "DryRun") == 0) dry_run(g, fn, r);
    else
        lambda_error(r, 400, "InvalidParameterValueException",
                     "X-Amz-Invocation-Type '%.40s' is not RequestResponse, Event or DryRun", type);
    http_header(r, "x-amzn-RequestId", "%s", q->id);
}
