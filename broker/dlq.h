/* dlq.h — reading dead letters, shared by the broker and heraldctl (dlq.c). */
#ifndef HERALD_DLQ_H
#define HERALD_DLQ_H

#include <msgpack.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    const char *function, *topic;   /* NULL: any */
    int64_t limit;                  /* 0: all */
} dlq_filter;

/* Opens DB read-only. NULL with err filled when it is missing or not ours. */
sqlite3 *dlq_open(const char *path, char *err, size_t errlen);
/* Appends a msgpack array of dead letters, newest first. 0, or -1 (err). */
int dlq_list(sqlite3 *db, const dlq_filter *f, msgpack_sbuffer *out, char *err, size_t errlen);
/* Appends the whole dead letter as a map. 0; 1 when there is no such id; -1 (err). */
int dlq_show(sqlite3 *db, int64_t id, msgpack_sbuffer *out, char *err, size_t errlen);
/* "2026-11-26T15:52:01.123Z" */
void dlq_rfc3339(int64_t unix_ms, char *buf, size_t n);

#endif
