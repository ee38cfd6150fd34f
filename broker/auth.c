/* auth.c — CURVE on the three endpoints and the ZAP handler that decides who
 * may connect to which (DESIGN §7).
 *
 * Each endpoint's socket names its role in ZMQ_ZAP_DOMAIN ("publish",
 * "worker", "admin"); the handler admits a client only when its public key is
 * a .pub file in that role's directory (a key in several directories has each
 * of those roles). A CURVE socket with no ZAP handler would admit any key —
 * encryption without authentication — so the handler is bound before any
 * CURVE socket, and at start the broker connects to itself with a random key
 * and refuses to run unless the handler was asked and said no.
 *
 * The handler is served by the broker's loop (one more socket to poll): no
 * thread, no lock around the key sets, which SIGHUP reloads between turns.
 * Each refused key is logged once (per role), by its .pub file when one of the
 * role directories holds it, and every refusal is counted.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "broker.h"

static const char *const domains[3] = { "publish", "worker", "admin" };
static const char *const roles[3] = { "publishers", "workers", "admins" };

static int cmp_key(const void *a, const void *b) { return memcmp(a, b, 32); }

static void free_keys(auth_key *k, size_t n)
{
    for (size_t i = 0; i < n; i++) free(k[i].file);
    free(k);
}

/* Every *.pub in dir, as binary keys with their files, sorted by key. */
static int load_dir(const char *dir, auth_key **out, size_t *n, char *err, size_t len)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, len, "key directory %s: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l < 5 || strcmp(e->d_name + l - 4, ".pub") != 0) continue;
        char path[4096], z85[41], why[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (keys_read(path, "public-key", z85, why, sizeof why) != 0) {
            snprintf(err, len, "%s", why);
            rc = -1;
            break;
        }
        auth_key *v = realloc(*out, (*n + 1) * sizeof *v);
        if (!v) { rc = -1; snprintf(err, len, "out of memory"); break; }
        *out = v;
        zmq_z85_decode(v[*n].key, z85);
        v[*n].file = strdup(path);
        if (!v[*n].file) { rc = -1; snprintf(err, len, "out of memory"); break; }
        (*n)++;
    }
    closedir(d);
    if (rc != 0) { free_keys(*out, *n); *out = NULL; *n = 0; return -1; }
    qsort(*out, *n, sizeof **out, cmp_key);
    return 0;
}

int auth_load(broker_t *b, const cfg_security *sec, char *err, size_t len)
{
    auth_t *a = &b->auth;
    const char *dirs[3] = { sec->publishers, sec->workers, sec->admins };
    auth_key *keys[3] = { NULL, NULL, NULL };
    size_t n[3] = { 0, 0, 0 };
    for (int r = 0; r < 3; r++)
        if (load_dir(dirs[r], &keys[r], &n[r], err, len) != 0) {
            for (int k = 0; k < r; k++) free_keys(keys[k], n[k]);
            return -1;
        }
    for (int r = 0; r < 3; r++) {
        free_keys(a->keys[r], a->nkeys[r]);
        a->keys[r] = keys[r];
        a->nkeys[r] = n[r];
    }
    free(a->logged);   /* a reload may admit keys refused before: log anew */
    a->logged = NULL;
    a->nlogged = 0;
    return 0;
}

int auth_open(broker_t *b, const cfg_security *sec, char *err, size_t len)
{
    auth_t *a = &b->auth;
    memset(a, 0, sizeof *a);
    if (!sec->present || !sec->curve) return 0;
    if (!zmq_has("curve")) {
        snprintf(err, len, "security.curve is on but this libzmq has no CURVE support");
        return -1;
    }
    struct stat st;
    if (stat(sec->secret_key, &st) != 0) {
        snprintf(err, len, "secret key %s: %s", sec->secret_key, strerror(errno));
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(err, len, "secret key %s is readable or writable by group or others (mode %04o): "
                 "chmod 600 %s", sec->secret_key, (unsigned)(st.st_mode & 07777), sec->secret_key);
        return -1;
    }
    if (keys_read(sec->secret_key, "public-key", a->public_key, err, len) != 0 ||
        keys_read(sec->secret_key, "secret-key", a->secret_key, err, len) != 0)
        return -1;
    if (auth_load(b, sec, err, len) != 0) return -1;
    /* before any CURVE socket exists: without a handler libzmq admits anyone */
    a->zap = zmq_socket(b->zctx, ZMQ_REP);
    int zero = 0;
    if (!a->zap || zmq_setsockopt(a->zap, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_bind(a->zap, "inproc://zeromq.zap.01") != 0) {
        snprintf(err, len, "cannot bind the ZAP handler: %s", zmq_strerror(zmq_errno()));
        if (a->zap) zmq_close(a->zap);
        a->zap = NULL;
        return -1;
    }
    a->on = true;
    return 0;
}

int auth_server(broker_t *b, void *sock, int role)
{
    auth_t *a = &b->auth;
    if (!a->on) return 0;
    int one = 1;
    if (zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, domains[role], strlen(domains[role])) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, a->secret_key, 41) != 0)
        return -1;
    return 0;
}

/* The .pub file of key in any role's directory (a key refused in one role is
 * often one of another's), or NULL. */
static const char *key_file(const auth_t *a, const uint8_t key[32])
{
    for (int r = 0; r < 3; r++) {
        const auth_key *k = bsearch(key, a->keys[r], a->nkeys[r], sizeof *a->keys[r], cmp_key);
        if (k) return k->file;
    }
    return NULL;
}

/* Logs a refused key once per role: by its file when the broker has one,
 * else in Z85 (a key it has never seen). */
static void log_refusal(auth_t *a, int role, const uint8_t key[32], const char *address, const char *why)
{
    for (size_t i = 0; i < a->nlogged; i++)
        if (a->logged[i][0] == role && memcmp(a->logged[i] + 1, key, 32) == 0) return;
    if (a->nlogged < 4096) {
        uint8_t (*v)[33] = realloc(a->logged, (a->nlogged + 1) * sizeof *v);
        if (v) {
            a->logged = v;
            v[a->nlogged][0] = (uint8_t)role;
            memcpy(v[a->nlogged] + 1, key, 32);
            a->nlogged++;
        }
    }
    char z85[41] = "-";
    const char *file = key_file(a, key);
    if (!file) zmq_z85_encode(z85, key, 32);
    LOG_WARN("refused a connection on the %s endpoint from %s: key %s %s (the %s directory)", domains[role],
             address[0] ? address : "?", file ? file : z85, why, roles[role]);
}

/* One ZAP request: [version, request id, domain, address, identity,
 * mechanism, credentials…] → [version, request id, status, text, user, metadata]. */
void auth_handle(broker_t *b)
{
    auth_t *a = &b->auth;
    zmq_msg_t part[8];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, a->zap, n == 0 ? ZMQ_DONTWAIT : 0) < 0) { zmq_msg_close(&m); break; }
        more = zmq_msg_more(&m);
        if (n < 8) part[n++] = m;
        else zmq_msg_close(&m);
    }
    if (n == 0) return;
    char domain[16] = "", address[64] = "";
    const uint8_t *key = NULL;
    if (n >= 3 && zmq_msg_size(&part[2]) < sizeof domain)
        memcpy(domain, zmq_msg_data(&part[2]), zmq_msg_size(&part[2]));
    if (n >= 4 && zmq_msg_size(&part[3]) < sizeof address)
        memcpy(address, zmq_msg_data(&part[3]), zmq_msg_size(&part[3]));
    if (n == 7 && zmq_msg_size(&part[5]) == 5 && memcmp(zmq_msg_data(&part[5]), "CURVE", 5) == 0 &&
        zmq_msg_size(&part[6]) == 32)
        key = zmq_msg_data(&part[6]);
    int role = -1;
    for (int r = 0; r < 3; r++)
        if (strcmp(domain, domains[r]) == 0) role = r;
    bool ok = role >= 0 && key && bsearch(key, a->keys[role], a->nkeys[role], sizeof *a->keys[role], cmp_key) != NULL;
    if (!ok && role >= 0) {
        b->refused_auth[role]++;
        if (key && !a->probing) log_refusal(a, role, key, address, "is not allowed");
    }
    char user[41] = "";
    if (ok) zmq_z85_encode(user, key, 32);
    const char *reply[6] = { "1.0", NULL, ok ? "200" : "400", ok ? "OK" : "key not allowed", user, "" };
    for (int i = 0; i < 6; i++) {
        int flags = i < 5 ? ZMQ_SNDMORE : 0;
        if (i == 1) {   /* the request id, echoed as it came */
            zmq_send(a->zap, n >= 2 ? zmq_msg_data(&part[1]) : "", n >= 2 ? zmq_msg_size(&part[1]) : 0, flags);
            continue;
        }
        zmq_send(a->zap, reply[i], strlen(reply[i]), flags);
    }
    for (int i = 0; i < n; i++) zmq_msg_close(&part[i]);
}

void auth_selftest_endpoint(const char *endpoint, char *out, size_t len)
{
    if (strncmp(endpoint, "tcp://*:", 8) == 0)
        snprintf(out, len, "tcp://127.0.0.1:%s", endpoint + 8);
    else
        snprintf(out, len, "%s", endpoint);
}

int auth_selftest(broker_t *b, const char *endpoint, char *err, size_t len)
{
    auth_t *a = &b->auth;
    if (!a->on) return 0;
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0) {
        snprintf(err, len, "self-test: cannot make a key pair");
        return -1;
    }
    void *c = zmq_socket(b->zctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(c, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(c, ZMQ_CURVE_SERVERKEY, a->public_key, 41);
    zmq_setsockopt(c, ZMQ_CURVE_PUBLICKEY, pub, 41);
    zmq_setsockopt(c, ZMQ_CURVE_SECRETKEY, sec, 41);
    char target[512];
    auth_selftest_endpoint(endpoint, target, sizeof target);
    zmq_connect(c, target);
    uint64_t refused = b->refused_auth[0];
    a->probing = true;
    int64_t end = util_mono_ms() + 5000;
    while (util_mono_ms() < end && b->refused_auth[0] == refused) {
        zmq_pollitem_t it = { a->zap, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll(&it, 1, 100) > 0) auth_handle(b);
    }
    zmq_close(c);
    a->probing = false;
    if (b->refused_auth[0] == refused) {
        snprintf(err, len, "self-test: a client with a random key was not refused on %s "
                 "(the ZAP handler was not consulted): refusing to run unauthenticated", endpoint);
        return -1;
    }
    b->refused_auth[0] = refused;   /* our own probe is not a refusal to report */
    return 0;
}

void auth_close(broker_t *b)
{
    auth_t *a = &b->auth;
    if (a->zap) zmq_close(a->zap);
    for (int r = 0; r < 3; r++) free_keys(a->keys[r], a->nkeys[r]);
    free(a->logged);
    explicit_bzero(a->secret_key, sizeof a->secret_key);
    memset(a, 0, sizeof *a);
}
