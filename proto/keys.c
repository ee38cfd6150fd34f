/* keys.c — CURVE key files, shared by every program (DESIGN §7).
 *
 * Keys live in the ZeroMQ certificate text format that czmq's zcert and
 * pyzmq's zmq.auth.load_certificate read: `public-key = "Z85"` (and in a .key
 * file `secret-key = "Z85"`) under a `curve` section. `heraldctl keygen NAME`
 * writes NAME.key (mode 0600, both keys) and NAME.pub (public key only), and
 * never overwrites. Clients take --key/--broker-key or HERALD_KEY /
 * HERALD_BROKER_KEY; one without the other is a usage error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"

int keys_read(const char *path, const char *field, char out[41], char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read key file %s: %s", path, strerror(errno));
        return -1;
    }
    char line[512];
    int rc = -1;
    size_t flen = strlen(field);
    snprintf(err, errlen, "key file %s has no %s line", path, field);
    while (fgets(line, sizeof line, f)) {
        char *p = line + strspn(line, " \t");
        if (strncmp(p, field, flen) != 0) continue;
        p += flen;
        p += strspn(p, " \t");
        if (*p++ != '=') continue;
        p += strspn(p, " \t");
        if (*p++ != '"') continue;
        char *q = strchr(p, '"');
        uint8_t bin[32];
        if (!q || q - p != 40) {
            snprintf(err, errlen, "key file %s: %s is not 40 characters of Z85", path, field);
            break;
        }
        memcpy(out, p, 40);
        out[40] = '\0';
        if (!zmq_z85_decode(bin, out)) {
            snprintf(err, errlen, "key file %s: %s is not valid Z85", path, field);
            break;
        }
        rc = 0;
        break;
    }
    fclose(f);
    return rc;
}

int keys_pick(const char **key_file, const char **broker_key_file, char *err, size_t errlen)
{
    if (!*key_file) *key_file = getenv("HERALD_KEY");
    if (!*broker_key_file) *broker_key_file = getenv("HERALD_BROKER_KEY");
    if (*key_file && !**key_file) *key_file = NULL;
    if (*broker_key_file && !**broker_key_file) *broker_key_file = NULL;
    if (!*key_file != !*broker_key_file) {
        snprintf(err, errlen, "%s given without %s: CURVE needs both (our .key and the broker's .pub)",
                 *key_file ? "--key (or HERALD_KEY)" : "--broker-key (or HERALD_BROKER_KEY)",
                 *key_file ? "--broker-key (or HERALD_BROKER_KEY)" : "--key (or HERALD_KEY)");
        return -1;
    }
    return 0;
}

int keys_client(void *sock, const char *key_file, const char *broker_key_file, char *err, size_t errlen)
{
    if (!key_file) return 0;
    char pub[41], sec[41], srv[41];
    if (!zmq_has("curve")) {
        snprintf(err, errlen, "this libzmq was built without CURVE support");
        return -1;
    }
    if (keys_read(key_file, "public-key", pub, err, errlen) < 0 ||
        keys_read(key_file, "secret-key", sec, err, errlen) < 0 ||
        keys_read(broker_key_file, "public-key", srv, err, errlen) < 0)
        return -1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, srv, 41) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, 41) < 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 41) < 0) {
        snprintf(err, errlen, "cannot set the CURVE keys: %s", zmq_strerror(zmq_errno()));
        return -1;
    }
    explicit_bzero(sec, sizeof sec);
    return 0;
}

/* Writes one certificate file; O_EXCL: an existing key is never replaced. */
static int write_cert(const char *path, mode_t mode, const char *pub, const char *sec, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        snprintf(err, errlen, errno == EEXIST ? "%s already exists: keys are never overwritten"
                                              : "cannot create %s: %s", path, strerror(errno));
        return -1;
    }
    fchmod(fd, mode);   /* whatever the umask */
    char when[32];
    time_t t = time(NULL);
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&t, &tm));
    FILE *f = fdopen(fd, "w");
    if (!f) { close(fd); return -1; }
    fprintf(f, "#   ****  Generated on %s by heraldctl keygen  ****\n", when);
    fprintf(f, "#   ZeroMQ CURVE %s Certificate\n", sec ? "**Secret**" : "Public");
    fprintf(f, sec ? "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\n"
                   : "#   Exchange securely, or use a secure mechanism to verify the contents\n"
                     "#   of this file after exchange. Store public certificates in your home\n"
                     "#   directory, in the .curve subdirectory.\n\n");
    fprintf(f, "metadata\ncurve\n    public-key = \"%s\"\n", pub);
    if (sec) fprintf(f, "    secret-key = \"%s\"\n", sec);
    if (fclose(f) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int keys_generate(const char *name, char *err, size_t errlen)
{
    char pub[41], sec[41], kpath[4096], ppath[4096];
    if (zmq_curve_keypair(pub, sec) != 0) {
        snprintf(err, errlen, "cannot make a key pair: %s", zmq_strerror(zmq_errno()));
        return -1;
    }
    snprintf(kpath, sizeof kpath, "%s.key", name);
    snprintf(ppath, sizeof ppath, "%s.pub", name);
    if (access(kpath, F_OK) == 0 || access(ppath, F_OK) == 0) {
        snprintf(err, errlen, "%s already exists: keys are never overwritten",
                 access(kpath, F_OK) == 0 ? kpath : ppath);
        return -1;
    }
    int rc = write_cert(kpath, 0600, pub, sec, err, errlen);
    explicit_bzero(sec, sizeof sec);
    if (rc == 0 && write_cert(ppath, 0644, pub, NULL, err, errlen) != 0) {
        unlink(kpath);
        rc = -1;
    }
    return rc;
}
