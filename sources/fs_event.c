/* fs_event.c: what a change looks like to a handler — S3's event
 * notification JSON (the shape Lambda's S3 handlers read: Records[0].s3.
 * bucket.name, .object.key URL-encoded, size, eTag, sequencer) — and the
 * eTag: the MD5 of the content, as S3 gives a single-part upload.
 * State: none. Every text here is built from safe characters (the key is
 * encoded first), so the JSON needs no escaping.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"

/* application/x-www-form-urlencoded, as S3 encodes keys in notifications:
 * letters, digits and - _ . * stay, a space becomes '+', every other byte
 * %XX; '/' stays, so "a/b c.jpg" reads "a/b+c.jpg". */
static bool keep(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
           ch == '_' || ch == '.' || ch == '*' || ch == '/';
}

char *fs_key_encode(const char *key)
{
    size_t n = strlen(key);
    char *out = malloc(3 * n + 1), *o = out;
    if (!out) return NULL;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        if (keep(*p)) *o++ = (char)*p;
        else if (*p == ' ') *o++ = '+';
        else o += sprintf(o, "%%%02X", *p);
    }
    *o = '\0';
    return out;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

char *fs_key_decode(const char *enc)
{
    char *out = malloc(strlen(enc) + 1), *o = out;
    if (!out) return NULL;
    for (const char *p = enc; *p; p++) {
        if (*p == '+') {
            *o++ = ' ';
        } else if (*p == '%') {
            int h = hexval(p[1]), l = h < 0 ? -1 : hexval(p[2]);
            if (h < 0 || l < 0 || (h == 0 && l == 0)) goto bad;
            *o++ = (char)(h * 16 + l);
            p += 2;
        } else if (keep((unsigned char)*p)) {
            *o++ = *p;
        } else {
            goto bad;
        }
    }
    *o = '\0';
    if (!out[0]) goto bad;
    return out;
bad:
    free(out);
    return NULL;
}

int fs_etag_fd(int fd, char out[FS_ETAG_LEN + 1])
{
    md5_ctx m;
    md5_init(&m);
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) break;
        md5_update(&m, buf, (size_t)n);
    }
    unsigned char d[16];
    md5_final(&m, d);
    for (int i = 0; i < 16; i++) sprintf(out + 2 * i, "%02x", d[i]);
    return 0;
}

/* RFC 3339, UTC, milliseconds: 2026-12-07T20:45:23.123Z (S3's eventTime). */
static void rfc3339(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

char *fs_event_json(const fs_source *s, const fs_rec *r, size_t *len)
{
    const cfg_source *c = s->cfg;
    char *key = fs_key_encode(r->key);
    if (!key) return NULL;
    char when[32], object[160];
    rfc3339(r->time_ms, when);
    /* S3 gives size and eTag for a created object only. */
    if (r->op == FS_CREATED)
        snprintf(object, sizeof object, ",\"size\":%llu,\"eTag\":\"%s\"", (unsigned long long)r->size, r->etag);
    else
        object[0] = '\0';
    size_t cap = strlen(key) + 2 * strlen(c->bucket) + strlen(c->name) + strlen(c->region) + sizeof object + 700;
    char *out = malloc(cap);
    if (!out) {
        free(key);
        return NULL;
    }
    int n = snprintf(out, cap,
        "{\"Records\":[{\"eventVersion\":\"2.1\",\"eventSource\":\"herald:fs\",\"awsRegion\":\"%s\","
        "\"eventTime\":\"%s\",\"eventName\":\"%s\",\"userIdentity\":{\"principalId\":\"herald\"},"
        "\"requestParameters\":{\"sourceIPAddress\":\"127.0.0.1\"},"
        "\"responseElements\":{\"x-amz-request-id\":\"%016llX\",\"x-amz-id-2\":\"%s\"},"
        "\"s3\":{\"s3SchemaVersion\":\"1.0\",\"configurationId\":\"%s\","
        "\"bucket\":{\"name\":\"%s\",\"ownerIdentity\":{\"principalId\":\"herald\"},\"arn\":\"arn:aws:s3:::%s\"},"
        "\"object\":{\"key\":\"%s\"%s,\"sequencer\":\"%016llX\"}}}]}",
        c->region, when, r->op == FS_CREATED ? "ObjectCreated:Put" : "ObjectRemoved:Delete",
        (unsigned long long)r->seq, s->producer, c->name, c->bucket, c->bucket, key, object,
        (unsigned long long)r->seq);
    free(key);
    if (n < 0 || (size_t)n >= cap) {
        free(out);
        return NULL;
    }
    *len = (size_t)n;
    return out;
}
