#include "util/textbuf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void textbuf_init(struct textbuf *b)
{
    b->p = b->small;
    b->len = 0;
    b->cap = sizeof b->small;
    b->heap = 0;
}

int textbuf_reserve(struct textbuf *b, size_t more)
{
    if (more < b->cap - b->len) /* keeps room for a NUL */
        return 0;
    if (more > SIZE_MAX / 4 - b->len)
        return -1;
    size_t need = b->len + more + 1;
    size_t ncap = b->cap * 2 > need ? b->cap * 2 : need;
    char *np = b->heap ? realloc(b->p, ncap) : malloc(ncap);
    if (!np)
        return -1;
    if (!b->heap)
        memcpy(np, b->p, b->len);
    b->p = np;
    b->cap = ncap;
    b->heap = 1;
    return 0;
}

int textbuf_put(const char *buf, size_t size, void *data)
{
    struct textbuf *b = data;
    /* jansson calls this for every few bytes: the common case stays here. */
    if (size >= b->cap - b->len && textbuf_reserve(b, size) != 0)
        return -1;
    memcpy(b->p + b->len, buf, size);
    b->len += size;
    return 0;
}

char *textbuf_take(struct textbuf *b, size_t extra)
{
    char *out = NULL;
    if (extra <= SIZE_MAX - 1 - b->len) {
        size_t need = b->len + extra + 1;
        if (b->heap) {
            out = realloc(b->p, need);
            if (!out && b->cap >= need)
                out = b->p; /* a failed shrink: keep the bigger block */
            if (out)
                b->heap = 0; /* handed over */
        } else if ((out = malloc(need)) != NULL) {
            memcpy(out, b->p, b->len);
        }
        if (out)
            out[b->len] = '\0';
    }
    textbuf_free(b);
    return out;
}

void textbuf_free(struct textbuf *b)
{
    if (b->heap)
        free(b->p);
    textbuf_init(b);
}
