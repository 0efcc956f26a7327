#include "util/strlist.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int strlist_take(struct strlist *l, char *s)
{
    if (!s)
        return -ENOMEM;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 16;
        char **nv = ncap <= SIZE_MAX / sizeof *nv ? realloc(l->v, ncap * sizeof *nv) : NULL;
        if (!nv) {
            free(s);
            return -ENOMEM;
        }
        l->v = nv;
        l->cap = ncap;
    }
    l->v[l->n++] = s;
    return 0;
}

int strlist_add(struct strlist *l, const char *s) { return strlist_take(l, strdup(s)); }

void strlist_clear(struct strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = l->cap = 0;
}
