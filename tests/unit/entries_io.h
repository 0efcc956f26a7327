/* The unit tests' file I/O through the filesystem core (fs/entries.h), as
 * a shell's `echo TEXT > PATH` and `cat PATH` do it, with no mount. */
#ifndef BOOKMARKFS_TESTS_UNIT_ENTRIES_IO_H
#define BOOKMARKFS_TESTS_UNIT_ENTRIES_IO_H

#include <fcntl.h>
#include <string.h>
#include <sys/types.h>

#include "fs/entries.h"

/* Opens path as uid (creating it with create), writes text, closes it:
 * the open's or the write's error, else the close's result. */
static inline int entries_io_put(struct entries *fs, uid_t uid, const char *path,
                                 int create, const char *text)
{
    struct entries_handle *h = NULL;
    int noflush = 0;
    int flags = O_WRONLY | O_TRUNC;
    int rc = create ? entries_create(fs, uid, path, flags | O_CREAT, &h, &noflush)
                    : entries_open(fs, uid, path, flags, &h, &noflush);
    if (rc < 0)
        return rc;
    int w = entries_write(h, text, strlen(text), 0);
    rc = entries_commit(h);
    entries_close(h);
    return w < 0 ? w : rc;
}

/* Reads path as uid into buf (NUL-terminated, "" on an error): its
 * length or a negative errno. */
static inline int entries_io_get(struct entries *fs, uid_t uid, const char *path,
                                 char *buf, size_t size)
{
    struct entries_handle *h = NULL;
    int noflush = 0;
    buf[0] = '\0';
    int rc = entries_open(fs, uid, path, O_RDONLY, &h, &noflush);
    if (rc < 0)
        return rc;
    int n = entries_read(h, buf, size - 1, 0);
    buf[n < 0 ? 0 : n] = '\0';
    entries_close(h);
    return n;
}

#endif
