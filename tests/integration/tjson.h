/* tjson.h — the integration tests' JSON parser (tjson.c). */
#ifndef HERALD_TEST_TJSON_H
#define HERALD_TEST_TJSON_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } j_type;

typedef struct j_val {
    j_type t;
    bool b;
    double num;
    bool is_int;                /* a number written without fraction or exponent */
    long long i;
    char *s;                    /* J_STR: the decoded bytes (NUL-terminated too) */
    size_t slen;
    struct j_val **items;       /* J_ARR, J_OBJ: the values */
    char **keys;                /* J_OBJ: the keys */
    size_t n;
} j_val;

/* Parses a whole JSON text (one value, whitespace around it); NULL if it is not JSON. */
j_val *j_parse(const char *text);
const j_val *j_get(const j_val *o, const char *key);
const j_val *j_at(const j_val *a, size_t i);
size_t j_len(const j_val *a);
long long j_int(const j_val *o, const char *key);
double j_num(const j_val *o, const char *key);
const char *j_str(const j_val *o, const char *key);
const j_val *j_find(const j_val *a, const char *k1, const char *v1, const char *k2, const char *v2);
void assert_keys(const j_val *o, const char *spec, const char *where);

#endif
