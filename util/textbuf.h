/* The one growing byte buffer: filled by json_dump_callback (textbuf_put
 * has its sink signature) or directly, and by the HTTP transport with the
 * bodies of answers. Small texts stay in the struct itself. A buffer made
 * with textbuf_init_secret (answers that hold credentials) never leaves a
 * copy behind: every block it gives up is wiped first. */
#ifndef BOOKMARKFS_UTIL_TEXTBUF_H
#define BOOKMARKFS_UTIL_TEXTBUF_H

#include <stddef.h>

struct textbuf {
    char *p;        /* the bytes; always room for one more (a NUL) */
    size_t len, cap;
    int heap;       /* p is malloc'd (else it is small[]) */
    int secret;     /* wipe every block given up */
    char small[256];
};

void textbuf_init(struct textbuf *b);
void textbuf_init_secret(struct textbuf *b);
/* Makes room for `more` bytes beyond len (plus a NUL). 0 or -ENOMEM (b is
 * unchanged then). */
int textbuf_reserve(struct textbuf *b, size_t more);
/* Appends size bytes; 0 or -ENOMEM. A json_dump_callback sink (jansson
 * takes any non-zero answer as a failure). */
int textbuf_put(const char *buf, size_t size, void *data);
/* Hands the bytes over, NUL-terminated, in a malloc'd block of exactly
 * len + 1 + extra bytes that the caller frees, in *out; b is empty
 * afterwards. 0, or -ENOMEM (*out is NULL and b is freed). */
int textbuf_take(struct textbuf *b, size_t extra, char **out);
/* Frees (wipes, when secret) the bytes; b is empty and usable again. */
void textbuf_free(struct textbuf *b);

#endif
