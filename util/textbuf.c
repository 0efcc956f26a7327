#include "util/textbuf.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void init(struct textbuf *b, int secret)
{
    b->p = b->small;
    b->len = 0;
    b->cap = sizeof b->small;
    b->heap = 0;
    b->secret = secret;
}

void textbuf_init(struct textbuf *b) { init(b, 0); }

void textbuf_init_secret(struct textbuf *b) { init(b, 1); }

/* b gives up its block p of n bytes: wiped when secret, freed when heap. */
static void give_up(const struct textbuf *b, char *p, size_t n, int heap)
{
    if (b->secret)
        explicit_bzero(p, n);
    if (heap)
        free(p);
}

int textbuf_reserve(struct textbuf *b, size_t more)
{
    if (more < b->cap - b->len) /* keeps room for a NUL */
        return 0;
    if (more > SIZE_MAX / 4 - b->len)
        return -ENOMEM;
    size_t need = b->len + more + 1;
    size_t ncap = b->cap * 2 > need ? b->cap * 2 : need;
    char *np;
    if (b->heap && !b->secret) {
        np = realloc(b->p, ncap);
        if (!np)
            return -ENOMEM;
    } else {
        /* From the inline block, or a secret one: moved by hand, so the
         * old block can be wiped. */
        np = malloc(ncap);
        if (!np)
            return -ENOMEM;
        memcpy(np, b->p, b->len);
        give_up(b, b->p, b->cap, b->heap);
    }
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
        return -ENOMEM;
    memcpy(b->p + b->len, buf, size);
    b->len += size;
    return 0;
}

int textbuf_take(struct textbuf *b, size_t extra, char **out)
{
    *out = NULL;
    if (extra > SIZE_MAX - 1 - b->len) {
        textbuf_free(b);
        return -ENOMEM;
    }
    size_t need = b->len + extra + 1;
    char *o = NULL;
    if (b->heap && !b->secret) {
        o = realloc(b->p, need);
        if (!o && b->cap >= need)
            o = b->p; /* a failed shrink: keep the bigger block */
        if (o)
            b->heap = 0; /* handed over */
    } else if ((o = malloc(need)) != NULL) {
        memcpy(o, b->p, b->len);
    }
    if (!o) {
        textbuf_free(b);
        return -ENOMEM;
    }
    o[b->len] = '\0';
    textbuf_free(b);
    *out = o;
    return 0;
}

void textbuf_free(struct textbuf *b)
{
    if (b->heap || b->secret)
        give_up(b, b->p, b->cap, b->heap);
    init(b, b->secret);
}
