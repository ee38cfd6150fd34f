/* endpoint.c — what a ZeroMQ endpoint must look like to herald (DESIGN §3),
 * checked before libzmq sees it: libzmq reads the port with strtol and keeps
 * 16 bits of it, so "tcp://host:99999" would quietly mean port 34463.
 *
 * Accepted: tcp://HOST:PORT with PORT 1–65535 and HOST a host or interface
 * name, an IPv4 address, an IPv6 address in brackets (with an optional
 * %zone), or '*' (every interface) for a bind; ipc://PATH (or ipc://@NAME,
 * Linux's abstract namespace) whose path fits a Unix socket address.
 * Refused: every other transport (inproc:// reaches only its own process,
 * which no herald program shares with another); ZeroMQ's "any free port"
 * (port '*' or 0) and random ipc path ('*'), since the broker's clients could
 * not find them; tcp's source-address form (SRC;HOST:PORT).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "proto.h"

/* A Unix socket path, without its terminating NUL. */
#define IPC_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)
/* DNS's limit on a whole name. */
#define HOST_MAX 253

static bool all_digits_and_dots(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]) && s[i] != '.') return false;
    return true;
}

/* A host or interface name: labels of [A-Za-z0-9_-] joined by single dots. */
static bool host_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > HOST_MAX || s[0] == '.' || s[0] == '-' || s[n - 1] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.' && s[i + 1] == '.') return false;
        if (!isalnum(c) && c != '-' && c != '_' && c != '.') return false;
    }
    return true;
}

static int check_tcp(const char *rest, bool bind, char *why, size_t len)
{
    const char *colon = strrchr(rest, ':');
    const char *host = rest;
    size_t hlen;
    const char *port;
    if (rest[0] == '[') {
        const char *end = strchr(rest, ']');
        if (!end || (end[1] != ':' && end[1] != '\0')) {
            snprintf(why, len, "has an unclosed '[' (write tcp://[ADDRESS]:PORT)");
            return -1;
        }
        hlen = (size_t)(end - rest) + 1;
        port = end[1] ? end + 2 : NULL;
    } else {
        hlen = colon ? (size_t)(colon - rest) : strlen(rest);
        port = colon ? colon + 1 : NULL;
        if (memchr(host, ':', hlen)) {
            snprintf(why, len, "has an IPv6 address without brackets (write tcp://[ADDRESS]:PORT)");
            return -1;
        }
    }
    if (hlen == 0) {
        snprintf(why, len, "has no host (expected tcp://HOST:PORT)");
        return -1;
    }
    if (!port || !*port) {
        snprintf(why, len, "has no port (expected tcp://HOST:PORT)");
        return -1;
    }

    /* the host */
    if (hlen == 1 && host[0] == '*') {
        if (!bind) {
            snprintf(why, len, "has host '*', which only a bind can use: give the broker's address");
            return -1;
        }
    } else if (host[0] == '[') {
        char addr[INET6_ADDRSTRLEN + 64];
        size_t alen = hlen - 2;
        const char *zone = memchr(host + 1, '%', alen);
        if (zone) alen = (size_t)(zone - host - 1);
        unsigned char bin[16];
        bool ok = alen < sizeof addr && (!zone || zone + 1 < host + hlen - 1);
        if (ok) {
            memcpy(addr, host + 1, alen);
            addr[alen] = '\0';
            ok = inet_pton(AF_INET6, addr, bin) == 1;
        }
        if (!ok) {
            snprintf(why, len, "has host '%.*s', not an IPv6 address", (int)(hlen > 80 ? 80 : hlen), host);
            return -1;
        }
    } else if (all_digits_and_dots(host, hlen)) {
        char addr[INET_ADDRSTRLEN + 1];
        struct in_addr bin;
        bool ok = hlen < sizeof addr;
        if (ok) {
            memcpy(addr, host, hlen);
            addr[hlen] = '\0';
            ok = inet_pton(AF_INET, addr, &bin) == 1;
        }
        if (!ok) {
            snprintf(why, len, "has host '%.*s', not an IPv4 address", (int)(hlen > 80 ? 80 : hlen), host);
            return -1;
        }
    } else if (!host_name_ok(host, hlen)) {
        snprintf(why, len, "has host '%.*s', not a host name, an IP address or [IPv6]", (int)(hlen > 80 ? 80 : hlen),
                 host);
        return -1;
    }

    /* the port */
    if (strcmp(port, "*") == 0 && bind) {
        snprintf(why, len, "has port '*' (any free port), which clients could not find: give a port from 1 to 65535");
        return -1;
    }
    size_t plen = strlen(port);
    for (size_t i = 0; i < plen; i++)
        if (!isdigit((unsigned char)port[i])) {
            snprintf(why, len, "has port '%.*s', not a number from 1 to 65535", (int)(plen > 20 ? 20 : plen), port);
            return -1;
        }
    const char *p = port;
    while (*p == '0' && p[1]) p++;   /* leading zeros: the same port */
    long v = strlen(p) > 6 ? 1000000 : strtol(p, NULL, 10);
    if (v < 1 || v > 65535) {
        snprintf(why, len, "has port %s, outside 1 to 65535", strlen(p) > 20 ? "beyond 65535" : p);
        return -1;
    }
    return 0;
}

int endpoint_check(const char *endpoint, bool bind, char *why, size_t len)
{
    const char *sep = strstr(endpoint, "://");
    if (!sep) {
        snprintf(why, len, "is not a ZeroMQ endpoint (expected tcp://HOST:PORT or ipc://PATH)");
        return -1;
    }
    size_t tlen = (size_t)(sep - endpoint);
    const char *rest = sep + 3;
    if (tlen == 3 && strncmp(endpoint, "tcp", 3) == 0) return check_tcp(rest, bind, why, len);
    if (tlen == 3 && strncmp(endpoint, "ipc", 3) == 0) {
        size_t plen = strlen(rest);
        if (plen == 0) {
            snprintf(why, len, "has an empty path");
            return -1;
        }
        if (strcmp(rest, "*") == 0) {
            snprintf(why, len, "has path '*' (a random one), which clients could not find");
            return -1;
        }
        if (plen > IPC_PATH_MAX) {
            snprintf(why, len, "has a path of %zu bytes; a Unix socket path holds at most %zu", plen,
                     (size_t)IPC_PATH_MAX);
            return -1;
        }
        return 0;
    }
    if (tlen == 6 && strncmp(endpoint, "inproc", 6) == 0) {
        snprintf(why, len, "uses inproc://, which reaches only the same process (use tcp:// or ipc://)");
        return -1;
    }
    snprintf(why, len, "has an unknown transport '%.*s' (herald speaks tcp:// and ipc://)",
             (int)(tlen > 20 ? 20 : tlen), endpoint);
    return -1;
}
