/* A string-keyed hash map (open hashing with chaining). Not thread-safe:
 * callers hold their own lock. Keys are copied; values are borrowed. */
#ifndef BOOKMARKFS_UTIL_STRMAP_H
#define BOOKMARKFS_UTIL_STRMAP_H

#include <stddef.h>

struct strmap;

/* An empty map in *out. 0 or -ENOMEM (*out NULL). */
int strmap_new(struct strmap **out);
/* Frees the map; calls free_value on each value when not NULL. */
void strmap_free(struct strmap *m, void (*free_value)(void *));
void *strmap_get(const struct strmap *m, const char *key);
/* Inserts or replaces; returns the previous value (or NULL) in *old when
 * old is not NULL. 0 or -ENOMEM. */
int strmap_put(struct strmap *m, const char *key, void *value, void **old);
/* Removes key and returns its value, or NULL when absent. */
void *strmap_remove(struct strmap *m, const char *key);
size_t strmap_count(const struct strmap *m);
/* Calls fn for each entry until it returns non-zero (which is returned).
 * fn must not modify the map. */
int strmap_each(const struct strmap *m,
                int (*fn)(const char *key, void *value, void *arg), void *arg);

#endif
