/* Lowercase hexadecimal, as SigV4 signatures and hashes and the dir store's
 * ETags (MD5) are written. */
#ifndef BOOKMARKFS_UTIL_HEX_H
#define BOOKMARKFS_UTIL_HEX_H

#include <stddef.h>

/* Writes the 2 * n hex digits of the n bytes at data, and a NUL, to out
 * (2 * n + 1 bytes). */
void hex_encode(const void *data, size_t n, char *out);

#endif
