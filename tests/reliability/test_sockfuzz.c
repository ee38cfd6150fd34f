/* test_sockfuzz.c — hostile frames on a live broker (docs/RELIABILITY.md, test 7).
 *
 * While a normal workload runs (a publisher confirming events, two workers
 * handling them with rel_record), raw DEALERs send F frames to each of the
 * three endpoints, in R rounds: random bytes, random multi-frame messages,
 * and valid messages of every type (our own encoders) with bytes flipped,
 * cut, inserted or with their frame count changed. Every 500 messages a
 * DEALER is replaced (a new identity), so sessions come and go too.
 *
 * Must hold: after each round the broker answers and confirms a publish;
 * the workload completes (every confirmed id handled once the fuzzers stop —
 * a fuzzer that registered as a worker and then went silent holds leases
 * until it is declared dead); the broker does not leak: its heap in use
 * outside SQLite (admin "memory", read at rest after each round: every fuzz
 * message handled, the workload drained) has no upward trend from the second
 * round to the last — the median of the slopes between every two of those
 * rounds stays under 16 bytes per hostile message, half the smallest malloc
 * chunk, so one allocation leaked per message fails, and one odd round does
 * not. RSS is only reported: it also moves with what the allocator keeps
 * and with SQLite's page cache, which fills up to cache_size as the database
 * grows (skipped under sanitizers and valgrind, where mallinfo2 says nothing).
 * Short: 6 rounds, 10,002 frames per endpoint; full: 10 rounds, 100,000.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "../../proto/proto.h"
#include "rel.h"

static h_env env;
static void setup(void) { h_setup(&env); }
static void teardown(void) { h_teardown(&env); }

TestSuite(sockfuzz, .init = setup, .fini = teardown, .timeout = 1200);

typedef struct { unsigned char *p; size_t n; } blob;
#define NSEEDS 20
static blob seeds[NSEEDS];
static int nseeds;

static void keep(msgpack_sbuffer *sb)
{
    cr_assert_lt(nseeds, NSEEDS);
    seeds[nseeds].p = malloc(sb->size);
    memcpy(seeds[nseeds].p, sb->data, sb->size);
    seeds[nseeds++].n = sb->size;
    msgpack_sbuffer_clear(sb);
}

/* Valid header frames of every type; topic "t" and function "rec" are real. */
static void make_seeds(void)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    proto_attr attrs[1] = { { "kind", "png" } };
    char *fns[1] = { "rec" };
    proto_hello h = { "fz_1", "publisher" };
    proto_encode_hello(&sb, &h); keep(&sb);
    proto_hello hw = { "fz-w", "worker" };
    proto_encode_hello(&sb, &hw); keep(&sb);
    proto_pub pubs[2] = { { 1, "fz", NULL, attrs, 1, 0, NULL }, { 2, "", "rec", NULL, 0, 0, NULL } };
    proto_publish p = { "fz_1", pubs, 2 };
    proto_encode_publish(&sb, &p); keep(&sb);
    proto_register r = { "fz-w", "fuzzhost", 1, 4, fns, 1 };
    proto_encode_register(&sb, &r); keep(&sb);
    proto_result_entry re[1] = { { 1, OUT_OK, 1700000000000LL, 10, NULL } };
    proto_result rs = { re, 1 };
    proto_encode_result(&sb, &rs); keep(&sb);
    proto_encode_heartbeat(&sb); keep(&sb);
    proto_encode_drain(&sb); keep(&sb);
    proto_encode_admin(&sb, 1, "stats", NULL, 0); keep(&sb);
    const unsigned char args[] = { 0x81, 0xa5, 'l', 'i', 'm', 'i', 't', 0x05 };
    proto_encode_admin(&sb, 2, "dlq.list", args, sizeof args); keep(&sb);
    proto_encode_admin(&sb, 3, "workers", NULL, 0); keep(&sb);
    proto_invoke iv = { 9, "rec", 1000 };
    proto_encode_invoke(&sb, &iv); keep(&sb);
    proto_encode_error(&sb, 1, "x"); keep(&sb);
    proto_welcome w = { 1024, 16, 500 };
    proto_encode_welcome(&sb, &w); keep(&sb);
    msgpack_sbuffer_destroy(&sb);
}

static unsigned rnd(unsigned *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

/* One hostile message into frames (header + payloads); returns the count. */
static int make_message(unsigned *s, unsigned char *buf, size_t cap, blob *fr, int maxfr)
{
    int kind = (int)(rnd(s) % 10), nf = 1;
    size_t len;
    if (kind == 0) {   /* random bytes */
        len = rnd(s) % 200;
        for (size_t i = 0; i < len; i++) buf[i] = (unsigned char)rnd(s);
    } else {          /* a valid message, mutated */
        blob *b = &seeds[rnd(s) % (unsigned)nseeds];
        len = b->n < cap ? b->n : cap;
        memcpy(buf, b->p, len);
        int muts = kind == 1 ? 0 : 1 + (int)(rnd(s) % 4);
        for (int m = 0; m < muts && len > 0; m++) {
            switch (rnd(s) % 5) {
            case 0: buf[rnd(s) % len] ^= (unsigned char)(1u << (rnd(s) % 8)); break;
            case 1: buf[rnd(s) % len] = (unsigned char)rnd(s); break;
            case 2: len = rnd(s) % len; break;   /* truncated */
            case 3:
                if (len + 1 < cap) {
                    size_t at = rnd(s) % (len + 1);
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = (unsigned char)rnd(s);
                    len++;
                }
                break;
            default: { static const unsigned char big[] = { 0xce, 0x7f, 0xff, 0xff, 0xff, 0xdd, 0xff, 0xff };
                       buf[rnd(s) % len] = big[rnd(s) % sizeof big]; }
            }
        }
    }
    fr[0].p = buf;
    fr[0].n = len;
    /* payload frames: usually what the header says (0–2), sometimes not */
    if (rnd(s) % 3 == 0) nf = 1 + (int)(rnd(s) % (unsigned)(maxfr - 1));
    else nf = 1 + (int)(rnd(s) % 3);
    for (int i = 1; i < nf; i++) {
        fr[i].p = buf + cap;   /* payloads: a shared scratch area after the header */
        fr[i].n = rnd(s) % 64;
    }
    return nf;
}

static void *fresh(void *ctx, const char *ep)
{
    void *sk = zmq_socket(ctx, ZMQ_DEALER);
    cr_assert_not_null(sk);
    int zero = 0, tmo = 2000, hwm = 100000;
    zmq_setsockopt(sk, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sk, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
    zmq_setsockopt(sk, ZMQ_RCVHWM, &hwm, sizeof hwm);
    cr_assert_eq(zmq_connect(sk, ep), 0);
    return sk;
}

static void drain_replies(void *sk)
{
    char b[256];
    while (zmq_recv(sk, b, sizeof b, ZMQ_DONTWAIT) >= 0) {}
}

/* Sends [1, "barrier-MARK"] and reads replies until the broker's ERROR that
 * names it: a connection's messages are handled in order, so every message
 * sent before it on sk has been handled (nothing of it waits in a queue). */
static bool barrier(void *sk, const char *mark, int timeout_ms)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint8(&pk, 1);
    size_t ml = strlen(mark);
    msgpack_pack_str(&pk, ml);
    msgpack_pack_str_body(&pk, mark, ml);
    bool sent = zmq_send(sk, sb.data, sb.size, 0) == (int)sb.size, seen = false;
    msgpack_sbuffer_destroy(&sb);
    long end = rel_now_ms() + timeout_ms;
    char b[512];
    while (sent && !seen && rel_now_ms() < end) {
        zmq_pollitem_t it = { sk, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll(&it, 1, 200) <= 0) continue;
        int n = zmq_recv(sk, b, sizeof b, ZMQ_DONTWAIT);
        if (n > 0 && memmem(b, (size_t)(n < (int)sizeof b ? n : (int)sizeof b), mark, ml)) seen = true;
    }
    return seen;
}

/* The broker's heap in use and SQLite's share of it (admin "memory"), bytes. */
static bool heap_in_use(void *ctx, const char *ep, long *heap, long *sqlite)
{
    void *sk = fresh(ctx, ep);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    proto_encode_admin(&sb, 77, "memory", NULL, 0);
    bool ok = zmq_send(sk, sb.data, sb.size, 0) == (int)sb.size;
    msgpack_sbuffer_destroy(&sb);
    *heap = *sqlite = -1;
    zmq_pollitem_t it = { sk, 0, ZMQ_POLLIN, 0 };
    char b[512];
    int n = ok && zmq_poll(&it, 1, 20000) > 0 ? zmq_recv(sk, b, sizeof b, 0) : -1;
    proto_msg m;
    char err[256];
    if (n > 0 && n <= (int)sizeof b && proto_decode(b, (size_t)n, &m, err, sizeof err) == 0) {
        const msgpack_object *r = &m.u.admin_reply.result;
        if (m.type == MSG_ADMIN_REPLY && r->type == MSGPACK_OBJECT_MAP)
            for (uint32_t i = 0; i < r->via.map.size; i++) {
                const msgpack_object_kv *kv = &r->via.map.ptr[i];
                if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER) continue;
                if (kv->key.via.str.size == 11 && !memcmp(kv->key.via.str.ptr, "heap_in_use", 11))
                    *heap = (long)kv->val.via.u64;
                if (kv->key.via.str.size == 6 && !memcmp(kv->key.via.str.ptr, "sqlite", 6))
                    *sqlite = (long)kv->val.via.u64;
            }
        proto_msg_clear(&m);
    }
    zmq_close(sk);
    return *heap >= 0 && *sqlite >= 0;
}

/* Theil–Sen: the median of the slopes (per round) between every two of
 * v[from..to]; a single odd value moves it little, a steady climb does. */
static double trend(const long *v, int from, int to)
{
    double sl[64];
    int n = 0;
    for (int i = from; i <= to; i++)
        for (int j = i + 1; j <= to && n < 64; j++) sl[n++] = (double)(v[j] - v[i]) / (j - i);
    for (int i = 1; i < n; i++)   /* insertion sort: a few dozen values */
        for (int j = i; j > 0 && sl[j - 1] > sl[j]; j--) { double t = sl[j]; sl[j] = sl[j - 1]; sl[j - 1] = t; }
    return n == 0 ? 0 : n % 2 ? sl[n / 2] : (sl[n / 2 - 1] + sl[n / 2]) / 2;
}

Test(sockfuzz, random_and_mutated_frames_on_every_endpoint_while_a_workload_runs)
{
    const int rounds = REL_PICK(6, 10);
    const int per_round = REL_PICK(1667, 10000);   /* messages per endpoint per round */
    const int per_round_events = 500;
    char body[1024];
    snprintf(body, sizeof body,
             "functions = ( { name = \"rec\"; native = { library = \"build/tests/handlers/librel_record.so\";"
             " symbol = \"record\"; }; max_attempts = 100; backoff = { initial = 0.1; max = 0.5; };\n"
             "   env = { RECORD_FILE = \"%s\"; }; } );\n"
             "topics = ( { name = \"t\"; subscriptions = ( { function = \"rec\"; } ); }, { name = \"fz\"; } );\n",
             h_path(&env, "record.txt"));
    h_config_broker(&env, "os", "max_payload = 65536;", body);
    pid_t broker = h_broker(&env);
    h_worker(&env, NULL, 4);
    h_worker(&env, NULL, 4);
    cr_assert(rel_wait_workers(&env, 2, 20000));
    make_seeds();

    unsigned seed = (unsigned)getpid() * 2654435761u | 1;
    const char *sv = getenv("HERALD_RELIABILITY_SEED");
    if (sv) seed = (unsigned)strtoul(sv, NULL, 10) | 1;
    unsigned s = seed;
    void *ctx = zmq_ctx_new();
    const char *eps[3] = { env.pub, env.wrk, env.adm };
    void *sk[3];
    for (int e = 0; e < 3; e++) sk[e] = fresh(ctx, eps[e]);
    static unsigned char buf[4096 + 64];
    blob fr[40];
    long rss[16] = { 0 }, heap[16] = { 0 }, lite[16] = { 0 }, own[16] = { 0 }, sent = 0, frames = 0;
    /* the workload: one input file, published one slice per round */
    int total_events = rounds * per_round_events;
    FILE *in = fopen(h_path(&env, "in.txt"), "w");
    for (int i = 0; i < total_events; i++) fprintf(in, "L%d\n", i);
    fclose(in);
    for (int round = 0; round < rounds; round++) {
        /* this round's slice of the workload, published in the background */
        char script[1500];
        snprintf(script, sizeof script,
                 "sed -n '%d,%dp' '%s' | exec '%s/bin/herald-publish' --broker '%s' --timeout 60 --lines t",
                 round * per_round_events + 1, (round + 1) * per_round_events, h_path(&env, "in.txt"), env.root,
                 env.pub);
        char log[32];
        snprintf(log, sizeof log, "pub%d", round);
        rel_compact_pids(&env);
        pid_t pub = h_start(&env, log, "/bin/sh", "-c", script, NULL);
        for (int i = 0; i < per_round; i++) {
            for (int e = 0; e < 3; e++) {
                if (i % 500 == 499) { zmq_close(sk[e]); sk[e] = fresh(ctx, eps[e]); }
                int nf = make_message(&s, buf, 4096, fr, 40);
                for (int k = 0; k < nf; k++)
                    if (zmq_send(sk[e], fr[k].p, fr[k].n, (k + 1 < nf ? ZMQ_SNDMORE : 0)) < 0) break;
                frames += nf;
                sent++;
                if (i % 64 == 0) drain_replies(sk[e]);
            }
        }
        int st = h_wait_exit(pub, 120000);
        for (int i = 0; i < env.npids; i++)
            if (env.pids[i] == pub) env.pids[i] = 0;
        cr_assert_eq(h_wait_exit(broker, 0), -1, "round %d: the broker died (see %s)", round + 1,
                     h_path(&env, "broker.err"));
        cr_assert_eq(st, 0, "round %d: the workload's publisher exited %d while fuzzed", round + 1, st);
        char *stats = h_stats(&env);
        cr_assert_not_null(stats, "round %d: heraldctl stats did not answer", round + 1);
        free(stats);
        /* measured at rest: every fuzz message handled, the workload drained */
        for (int e = 0; e < 3; e++) {
            char mark[48];
            snprintf(mark, sizeof mark, "barrier-%d-%d", round, e);
            cr_assert(barrier(sk[e], mark, 120000), "round %d: the broker did not answer %s", round + 1, mark);
        }
        cr_assert(rel_wait_drained(&env, "t", "rec", 120000), "round %d: the workload did not drain", round + 1);
        rss[round] = rel_status_kb(broker, "VmRSS");
        cr_assert(heap_in_use(ctx, env.adm, &heap[round], &lite[round]), "round %d: no answer to memory", round + 1);
        own[round] = heap[round] - lite[round];
    }
    for (int e = 0; e < 3; e++) zmq_close(sk[e]);
    zmq_ctx_term(ctx);

    /* the workload completes: every confirmed id handled */
    char ids[64];
    snprintf(ids, sizeof ids, "ids.txt");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "cd '%s' && cat $(for r in $(seq 0 %d); do echo pub$r.out; done) > ids.txt", env.dir,
             rounds - 1);
    cr_assert_eq(system(cmd), 0);
    rel_tally t;
    long end = rel_now_ms() + 120000;
    for (;;) {
        rel_tally_stream("L", h_path(&env, ids), NULL, h_path(&env, "record.txt"), (size_t)total_events, &t, NULL,
                         NULL);
        if (t.lost == 0 || rel_now_ms() > end) break;
        sleep(1);
    }
    char extra[1200];
    int k = snprintf(extra, sizeof extra, "%ld messages (%ld frames) over 3 endpoints in %d rounds; seed %u; "
                     "by round, broker heap outside SQLite / SQLite / VmRSS (kB):", sent, frames, rounds, seed);
    for (int r = 0; r < rounds && k < (int)sizeof extra - 40; r++)
        k += snprintf(extra + k, sizeof extra - (size_t)k, " %ld/%ld/%ld", own[r] / 1024, lite[r] / 1024, rss[r]);
    /* bytes: 16 per hostile message of a round (3 endpoints) */
    const double limit = 16.0 * 3 * per_round, slope = trend(own, 1, rounds - 1);
    const bool measured = !rel_sanitized() && heap[rounds - 1] > 0;   /* valgrind's malloc: mallinfo2 is 0 */
    if (measured && k < (int)sizeof extra - 80)
        snprintf(extra + k, sizeof extra - (size_t)k, "; trend %+.0f B/round (limit %.0f)", slope, limit);
    rel_report("socket-fuzz", "random + mutated frames", sent, (long)t.confirmed, (long)t.lost, (long)t.dup_runs,
               extra);
    cr_assert_eq(t.confirmed, (size_t)total_events);
    cr_assert_eq(t.lost, 0, "%zu confirmed ids never handled, e.g. %s", t.lost, t.first_lost);
    cr_assert_eq(t.twice, 0);
    if (measured)
        cr_assert_leq(slope, limit, "the broker's heap outside SQLite grows by %.0f bytes per round (limit %.0f, "
                      "16 per hostile message): %s", slope, limit, extra);
    for (int i = 0; i < nseeds; i++) free(seeds[i].p);
}
