/* config/scan.c: finds the integers libconfig 1.5 truncates without a word.
 *
 * libconfig 1.5 reads a decimal literal with atoi() and a hex one into an int,
 * so 5000000000 silently becomes 705032704 and 0xFFFFFFFF becomes -1; only an
 * L suffix makes a 64-bit value. The parsed tree cannot tell, so this file
 * walks the raw text the way libconfig's scanner does (skipping "strings",
 * # and // and block comments, and names such as abc123) and reports each
 * integer literal outside int32 that has no L, at its line. It recurses
 * into @include files as libconfig does. The text has already parsed, so
 * the walk can trust its syntax.
 *
 * No state: each finding is reported through the ctx and its line marked.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static bool name_char(char ch)
{
    return isalnum((unsigned char)ch) || ch == '-' || ch == '_' || ch == '*';
}

/* Digits of a literal to a magnitude; false when beyond uint64. */
static bool magnitude(const char *p, const char *end, int base, uint64_t *out)
{
    uint64_t v = 0;
    for (; p < end; p++) {
        unsigned d = isdigit((unsigned char)*p) ? (unsigned)(*p - '0')
                                                 : (unsigned)(tolower((unsigned char)*p) - 'a' + 10);
        if (v > (UINT64_MAX - d) / (uint64_t)base)
            return false;
        v = v * (uint64_t)base + d;
    }
    *out = v;
    return true;
}

/* Reports the literal at [start, end) when it does not fit its type. */
static void judge(cfg_ctx *x, const char *file, int line, const char *start, const char *digits,
                  const char *end, int base, bool negative, bool has_l)
{
    uint64_t v = 0;
    bool fits64 = magnitude(digits, end, base, &v);
    int len = (int)(end - start);
    if (has_l) {
        /* libconfig reads hex64 with strtoull (any 64-bit pattern), decimal
         * with atoll (signed). */
        uint64_t lim = base == 16 ? UINT64_MAX : negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        if (!fits64 || v > lim) {
            config_err_at(x, file, line, "integer %.*s does not fit in 64 bits", len, start);
            config_mark_line(x, file, line);
        }
        return;
    }
    uint64_t lim = base == 16 ? (uint64_t)INT32_MAX
                   : negative ? (uint64_t)INT32_MAX + 1 : (uint64_t)INT32_MAX;
    if (!fits64 || v > lim) {
        config_err_at(x, file, line,
                      "integer %.*s does not fit in 32 bits: write it with an L suffix (e.g. %.*sL)",
                      len, start, len, start);
        config_mark_line(x, file, line);
    }
}

/* Scans the file named by an @include, as libconfig would open it. */
static void scan_include(cfg_ctx *x, const char *name, size_t len, int depth)
{
    char *raw = strndup(name, len);
    if (!raw) {
        x->oom = true;
        return;
    }
    char *path = config_include_path(x, raw);
    char *text = path ? config_read_text(path) : NULL;
    /* Unreadable: libconfig has already said so; nothing to add. */
    if (text)
        config_scan_ints(x, text, path, depth + 1);
    free(text);
    free(path);
    free(raw);
}

void config_scan_ints(cfg_ctx *x, const char *text, const char *file, int depth)
{
    if (depth > CONFIG_INCLUDE_DEPTH)
        return;
    int line = 1;
    bool line_start = true; /* only blanks so far on this line: @include may come */
    const char *p = text;
    while (*p) {
        char ch = *p;
        if (ch == '\n') {
            line++;
            line_start = true;
            p++;
            continue;
        }
        if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\f' || ch == '\v') {
            p++;
            continue;
        }
        bool at_start = line_start;
        line_start = false;
        if (ch == '"') {
            for (p++; *p && *p != '"'; p++) {
                if (*p == '\\' && p[1])
                    p++;
                if (*p == '\n')
                    line++;
            }
            if (*p)
                p++;
        } else if (ch == '#' || (ch == '/' && p[1] == '/')) {
            while (*p && *p != '\n')
                p++;
        } else if (ch == '/' && p[1] == '*') {
            for (p += 2; *p && !(p[0] == '*' && p[1] == '/'); p++)
                if (*p == '\n')
                    line++;
            p += *p ? 2 : 0;
        } else if (ch == '@' && at_start && strncmp(p, "@include", 8) == 0 &&
                   (p[8] == ' ' || p[8] == '\t')) {
            p += 8;
            while (*p == ' ' || *p == '\t')
                p++;
            if (*p == '"') {
                const char *name = ++p;
                while (*p && *p != '"' && *p != '\n')
                    p++;
                scan_include(x, name, (size_t)(p - name), depth);
                if (*p == '"')
                    p++;
            }
        } else if (isalpha((unsigned char)ch) || ch == '*' || ch == '_') {
            /* A name such as thumbnail2 or true: its digits are no number. */
            while (name_char(*p))
                p++;
        } else if (isdigit((unsigned char)ch) || ch == '.' ||
                   ((ch == '-' || ch == '+') && (isdigit((unsigned char)p[1]) || p[1] == '.'))) {
            const char *start = p;
            bool negative = ch == '-';
            if (ch == '-' || ch == '+')
                p++;
            if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
                const char *digits = p + 2;
                for (p = digits; isxdigit((unsigned char)*p); p++)
                    ;
                const char *end = p;
                bool has_l = *p == 'L';
                while (*p == 'L')
                    p++;
                judge(x, file, line, start, digits, end, 16, false, has_l);
                continue;
            }
            const char *digits = p;
            while (isdigit((unsigned char)*p))
                p++;
            if (*p == '.' || *p == 'e' || *p == 'E') {
                /* A float: 1.5, .5, 10., 1e10, 2.5e-3. */
                if (*p == '.')
                    for (p++; isdigit((unsigned char)*p); p++)
                        ;
                if (*p == 'e' || *p == 'E') {
                    p++;
                    if (*p == '+' || *p == '-')
                        p++;
                    while (isdigit((unsigned char)*p))
                        p++;
                }
                continue;
            }
            const char *end = p;
            bool has_l = *p == 'L';
            while (*p == 'L')
                p++;
            judge(x, file, line, start, digits, end, 10, negative, has_l);
        } else {
            p++;
        }
    }
}
