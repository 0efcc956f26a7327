#include "util/vec.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int vec_reserve(void *v, size_t *cap, size_t n, size_t size, size_t first)
{
    if (n <= *cap)
        return 0;
    size_t c = *cap ? *cap : (first ? first : 1);
    while (c < n) {
        if (c > SIZE_MAX / 2)
            return -ENOMEM;
        c *= 2;
    }
    if (size && c > SIZE_MAX / size)
        return -ENOMEM;
    void *old;
    memcpy(&old, v, sizeof old);
    void *nv = realloc(old, c * size);
    if (!nv)
        return -ENOMEM;
    memcpy(v, &nv, sizeof nv);
    *cap = c;
    return 0;
}
