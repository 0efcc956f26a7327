/* A growing byte buffer, filled by json_dump_callback (textbuf_put has its
 * sink signature) or directly. Small texts stay in the struct itself. */
#ifndef BOOKMARKFS_UTIL_TEXTBUF_H
#define BOOKMARKFS_UTIL_TEXTBUF_H

#include <stddef.h>

struct textbuf {
    char *p;        /* the bytes; always room for one more (a NUL) */
    size_t len, cap;
    int heap;       /* p is malloc'd (else it is small[]) */
    char small[256];
};

void textbuf_init(struct textbuf *b);
/* Makes room for `more` bytes beyond len (plus a NUL). 0 or -1 (ENOMEM). */
int textbuf_reserve(struct textbuf *b, size_t more);
/* Appends size bytes; 0 or -1 (ENOMEM). A json_dump_callback sink. */
int textbuf_put(const char *buf, size_t size, void *data);
/* The bytes, NUL-terminated, in a malloc'd block of exactly len + 1 +
 * extra bytes that the caller frees; b is empty afterwards. NULL on ENOMEM
 * (b is then freed). */
char *textbuf_take(struct textbuf *b, size_t extra);
void textbuf_free(struct textbuf *b);

#endif
