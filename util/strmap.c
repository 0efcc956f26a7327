#include "util/strmap.h"
#include "util/hash.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    struct entry *next;
    uint64_t hash;
    void *value;
    char key[];
};

struct strmap {
    struct entry **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
};

static uint64_t hash_str(const char *s)
{
    return hash_fnv1a(s, strlen(s));
}

int strmap_new(struct strmap **out)
{
    *out = NULL;
    struct strmap *m = calloc(1, sizeof *m);
    if (!m)
        return -ENOMEM;
    m->nbuckets = 16;
    m->buckets = calloc(m->nbuckets, sizeof *m->buckets);
    if (!m->buckets) {
        free(m);
        return -ENOMEM;
    }
    *out = m;
    return 0;
}

void strmap_free(struct strmap *m, void (*free_value)(void *))
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct entry *e = m->buckets[i];
        while (e) {
            struct entry *next = e->next;
            if (free_value)
                free_value(e->value);
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    free(m);
}

static struct entry **find(const struct strmap *m, const char *key, uint64_t h)
{
    struct entry **pp = &m->buckets[h & (m->nbuckets - 1)];
    while (*pp && ((*pp)->hash != h || strcmp((*pp)->key, key) != 0))
        pp = &(*pp)->next;
    return pp;
}

void *strmap_get(const struct strmap *m, const char *key)
{
    struct entry *e = *find(m, key, hash_str(key));
    return e ? e->value : NULL;
}

static void grow(struct strmap *m)
{
    size_t n = m->nbuckets * 2;
    struct entry **b = calloc(n, sizeof *b);
    if (!b)
        return; /* keep the longer chains; still correct */
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct entry *e = m->buckets[i];
        while (e) {
            struct entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

int strmap_put(struct strmap *m, const char *key, void *value, void **old)
{
    uint64_t h = hash_str(key);
    struct entry **pp = find(m, key, h);
    if (*pp) {
        if (old)
            *old = (*pp)->value;
        (*pp)->value = value;
        return 0;
    }
    size_t len = strlen(key);
    struct entry *e = malloc(sizeof *e + len + 1);
    if (!e)
        return -ENOMEM;
    memcpy(e->key, key, len + 1);
    e->hash = h;
    e->value = value;
    e->next = NULL;
    *pp = e;
    m->count++;
    if (old)
        *old = NULL;
    if (m->count > m->nbuckets)
        grow(m);
    return 0;
}

void *strmap_remove(struct strmap *m, const char *key)
{
    struct entry **pp = find(m, key, hash_str(key));
    struct entry *e = *pp;
    if (!e)
        return NULL;
    *pp = e->next;
    void *v = e->value;
    free(e);
    m->count--;
    return v;
}

size_t strmap_count(const struct strmap *m) { return m->count; }

int strmap_each(const struct strmap *m,
                int (*fn)(const char *key, void *value, void *arg), void *arg)
{
    for (size_t i = 0; i < m->nbuckets; i++)
        for (struct entry *e = m->buckets[i]; e; e = e->next) {
            int rc = fn(e->key, e->value, arg);
            if (rc)
                return rc;
        }
    return 0;
}
