/* chan.c: the encoders and decoders of chan.h's longer messages (an exec
 * attempt, a host's start, a native job). Linked into herald-worker (which
 * encodes them) and herald-launcher (whose supervisors and hosts decode them).
 */
#include "runner_int.h"

/* One environment entry, "NAME=value", as put_bytes writes it. */
static void put_kv(wbuf *b, const char *k, const char *v)
{
    size_t kl = strlen(k), vl = strlen(v);
    put_u32(b, (uint32_t)(kl + 1 + vl));
    wbuf_put(b, k, kl);
    put_u8(b, '=');
    wbuf_put(b, v, vl);
    put_u8(b, 0);
}

int chan_exec_put(wbuf *b, uint8_t type, const chan_exec *m)
{
    size_t at = msg_begin(b, type);
    put_u64(b, m->id);
    put_u32(b, m->timeout_ms);
    put_u32(b, m->memory_mb);
    put_u32(b, m->argc);
    for (uint32_t i = 0; i < m->argc; i++)
        put_str(b, m->argv[i]);
    put_str(b, m->program);
    size_t count_at = b->len;   /* the count of entries: filled in once the attributes are in */
    put_u32(b, 0);
    for (uint32_t i = 0; i < m->nfenv; i++)
        put_kv(b, m->fenv[i].key, m->fenv[i].value);
    for (uint32_t i = 0; i < m->nvars; i++)
        put_kv(b, m->vars[i].key, m->vars[i].value);
    uint32_t nenv = m->nfenv + m->nvars + attrs_put_env(b, m->attrs, m->nattrs);
    if (!b->failed)
        memcpy(b->p + count_at, &nenv, 4);
    put_bytes(b, m->payload, m->payload_len);
    return msg_end(b, at);
}

bool chan_exec_get(const char *body, uint32_t n, chan_exec *m)
{
    memset(m, 0, sizeof *m);
    rd d = { body, n, false };
    m->id = rd_u64(&d);
    m->timeout_ms = rd_u32(&d);
    m->memory_mb = rd_u32(&d);
    m->argc = rd_u32(&d);
    if (!chan_strs_take(&d, m->argc, &m->args))
        return false;
    m->program = rd_str(&d);
    uint32_t nenv = rd_u32(&d);
    if (d.bad || !chan_strs_take(&d, nenv, &m->env))
        return false;
    m->payload = rd_bytes(&d, &m->payload_len);
    return !d.bad;
}

int chan_host_put(wbuf *b, const chan_host *m)
{
    size_t at = msg_begin(b, CH_L_HOST);
    put_u64(b, m->id);
    put_u32(b, m->timeout_ms);
    put_u32(b, m->memory_mb);
    put_u32(b, m->slot);
    put_str(b, m->function);
    put_str(b, m->library);
    put_str(b, m->symbol);
    put_u32(b, m->nfenv);
    for (uint32_t i = 0; i < m->nfenv; i++)
        put_kv(b, m->fenv[i].key, m->fenv[i].value);
    return msg_end(b, at);
}

bool chan_host_get(const char *body, uint32_t n, chan_host *m)
{
    memset(m, 0, sizeof *m);
    rd d = { body, n, false };
    m->id = rd_u64(&d);
    m->timeout_ms = rd_u32(&d);
    m->memory_mb = rd_u32(&d);
    m->slot = rd_u32(&d);
    m->function = rd_str(&d);
    m->library = rd_str(&d);
    m->symbol = rd_str(&d);
    uint32_t nenv = rd_u32(&d);
    return !d.bad && chan_strs_take(&d, nenv, &m->env);
}

/* CH_H_JOB and CH_RT_EVENT: one event; a runtime's has no max_attempts. */
static int event_put(wbuf *b, uint8_t type, const chan_job *m)
{
    size_t at = msg_begin(b, type);
    put_u64(b, m->token);
    put_str(b, m->topic);
    put_str(b, m->message_id);
    put_u32(b, m->attempt);
    if (type == CH_H_JOB)
        put_u32(b, m->max_attempts);
    put_u32(b, m->nattrs);
    for (uint32_t i = 0; i < m->nattrs; i++) {
        put_str(b, m->attrs[i].key);
        put_str(b, m->attrs[i].value);
    }
    put_bytes(b, m->payload, m->payload_len);
    return msg_end(b, at);
}

static bool event_get(const char *body, uint32_t n, chan_job *m, uint8_t type)
{
    memset(m, 0, sizeof *m);
    rd d = { body, n, false };
    m->token = rd_u64(&d);
    m->topic = rd_str(&d);
    m->message_id = rd_str(&d);
    m->attempt = rd_u32(&d);
    if (type == CH_H_JOB)
        m->max_attempts = rd_u32(&d);
    m->nattrs = rd_u32(&d);
    /* 2 × nattrs strings: a count past what the body can hold fails here */
    if (d.bad || m->nattrs > n || !chan_strs_take(&d, 2 * m->nattrs, &m->attr_strs))
        return false;
    m->payload = rd_bytes(&d, &m->payload_len);
    return !d.bad;
}

int chan_job_put(wbuf *b, const chan_job *m) { return event_put(b, CH_H_JOB, m); }
bool chan_job_get(const char *body, uint32_t n, chan_job *m) { return event_get(body, n, m, CH_H_JOB); }
int chan_rtevent_put(wbuf *b, const chan_rtevent *m) { return event_put(b, CH_RT_EVENT, m); }
bool chan_rtevent_get(const char *body, uint32_t n, chan_rtevent *m) { return event_get(body, n, m, CH_RT_EVENT); }

int chan_runtime_put(wbuf *b, const chan_runtime *m)
{
    size_t at = msg_begin(b, CH_L_RUNTIME);
    put_u64(b, m->id);
    put_u32(b, m->timeout_ms);
    put_u32(b, m->memory_mb);
    put_u32(b, m->max_invocations);
    put_u32(b, m->idle_timeout_ms);
    put_u32(b, m->init_timeout_ms);
    put_u8(b, m->format);
    put_str(b, m->function);
    put_str(b, m->handler);
    put_str(b, m->root);
    put_str(b, m->region);
    put_str(b, m->account);
    put_str(b, m->program);
    put_u32(b, m->argc);
    for (uint32_t i = 0; i < m->argc; i++)
        put_str(b, m->argv[i]);
    put_u32(b, m->nfenv);
    for (uint32_t i = 0; i < m->nfenv; i++)
        put_kv(b, m->fenv[i].key, m->fenv[i].value);
    return msg_end(b, at);
}

bool chan_runtime_get(const char *body, uint32_t n, chan_runtime *m)
{
    memset(m, 0, sizeof *m);
    rd d = { body, n, false };
    m->id = rd_u64(&d);
    m->timeout_ms = rd_u32(&d);
    m->memory_mb = rd_u32(&d);
    m->max_invocations = rd_u32(&d);
    m->idle_timeout_ms = rd_u32(&d);
    m->init_timeout_ms = rd_u32(&d);
    m->format = rd_u8(&d);
    m->function = rd_str(&d);
    m->handler = rd_str(&d);
    m->root = rd_str(&d);
    m->region = rd_str(&d);
    m->account = rd_str(&d);
    m->program = rd_str(&d);
    m->argc = rd_u32(&d);
    if (d.bad || m->argc == 0 || !chan_strs_take(&d, m->argc, &m->args))
        return false;
    m->nfenv = rd_u32(&d);
    if (d.bad || !chan_strs_take(&d, m->nfenv, &m->env))
        return false;
    return d.n == 0;
}
