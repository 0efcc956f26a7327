/* Room in a growing array of fixed-size elements (the listings and
 * journal records that grow by doubling). */
#ifndef BOOKMARKFS_UTIL_VEC_H
#define BOOKMARKFS_UTIL_VEC_H

#include <stddef.h>

/* Makes *v (an array of *cap elements of size bytes each, or NULL) hold at
 * least n elements: when it does not, doubles *cap (from first when 0)
 * until it does and reallocates. 0, or -ENOMEM (*v and *cap unchanged).
 * Pass the address of the array pointer: vec_reserve(&a, &cap, n + 1,
 * sizeof *a, 16). */
int vec_reserve(void *v, size_t *cap, size_t n, size_t size, size_t first);

#endif
