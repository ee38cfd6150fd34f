/* leases.c — lease id → delivery, an open-addressing hash map with linear
 * probing and backward-shift deletion (no tombstones, so a long-running broker
 * never degrades). Keys are never 0: lease ids start above it. */
#include <stdlib.h>

#include "broker.h"

static size_t slot_of(uint64_t k, size_t cap)
{
    k ^= k >> 33; k *= 0xff51afd7ed558ccdULL; k ^= k >> 33;   /* mix: ids are sequential */
    return (size_t)k & (cap - 1);
}

static int grow(lease_map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    lease_slot *s = calloc(cap, sizeof *s);
    if (!s) return -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key) continue;
        size_t j = slot_of(m->slots[i].key, cap);
        while (s[j].key) j = (j + 1) & (cap - 1);
        s[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = s;
    m->cap = cap;
    return 0;
}

int lease_put(lease_map *m, uint64_t key, void *val)
{
    if ((m->n + 1) * 2 > m->cap && grow(m) != 0) return -1;   /* load ≤ 1/2 */
    size_t j = slot_of(key, m->cap);
    while (m->slots[j].key && m->slots[j].key != key) j = (j + 1) & (m->cap - 1);
    if (!m->slots[j].key) m->n++;
    m->slots[j].key = key;
    m->slots[j].val = val;
    return 0;
}

void *lease_get(const lease_map *m, uint64_t key)
{
    if (!m->cap || !key) return NULL;
    size_t j = slot_of(key, m->cap);
    while (m->slots[j].key) {
        if (m->slots[j].key == key) return m->slots[j].val;
        j = (j + 1) & (m->cap - 1);
    }
    return NULL;
}

void *lease_del(lease_map *m, uint64_t key)
{
    if (!m->cap || !key) return NULL;
    size_t mask = m->cap - 1, j = slot_of(key, m->cap);
    while (m->slots[j].key && m->slots[j].key != key) j = (j + 1) & mask;
    if (!m->slots[j].key) return NULL;
    void *val = m->slots[j].val;
    /* backward shift: pull later entries of the probe run into the hole */
    size_t hole = j;
    for (size_t k = (j + 1) & mask; m->slots[k].key; k = (k + 1) & mask) {
        size_t home = slot_of(m->slots[k].key, m->cap);
        if (((k - home) & mask) >= ((k - hole) & mask)) {
            m->slots[hole] = m->slots[k];
            hole = k;
        }
    }
    m->slots[hole].key = 0;
    m->slots[hole].val = NULL;
    m->n--;
    return val;
}

void lease_map_free(lease_map *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}
