/* Directories on the local disk, as the dir store and the local journal
 * create them (README, "The local journal"). */
#ifndef BOOKMARKFS_UTIL_FILES_H
#define BOOKMARKFS_UTIL_FILES_H

#include <stdint.h>
#include <sys/types.h>

/* fsync(2) of the directory at path. 0 or a negative errno. */
int files_fsync_dir(const char *path);

/* mkdir -p: creates every missing component of path with mode; with
 * durable, fsyncs the parent of each directory it creates, so that a later
 * rename into it survives power loss. 0 when path is a directory at the
 * end, else a negative errno (-ENOTDIR when a component is something else,
 * -ENOENT for ""). */
int files_mkdir_p(const char *path, mode_t mode, int durable);

/* Writes all n bytes of buf to fd: at off with pwrite(2), or at the file
 * position with write(2) when off is negative; short writes and EINTR are
 * retried. 0, or a negative errno (-EIO when the disk takes nothing),
 * which errno holds too (the dir store's messages read it). */
int files_write_all(int fd, const void *buf, size_t n, off_t off);

/* Reads exactly n bytes into buf, as files_write_all writes them. 0, or
 * -EIO at the end of the file, or a negative errno. */
int files_read_all(int fd, void *buf, size_t n, off_t off);

/* Reads fd to its end into *data (malloc'd, NUL-terminated, exactly
 * *len + 1 bytes). With secret, every block the reading gives up is
 * wiped (util/textbuf.h). 0, or -EFBIG past max bytes, or a negative
 * errno (*data NULL). */
int files_read_fd(int fd, size_t max, int secret, char **data, size_t *len);
/* The same, reading no later than deadline_ms (util/clock.h's
 * clock_mono_ms; negative: no deadline): -ETIMEDOUT past it. */
int files_read_fd_until(int fd, size_t max, int secret, int64_t deadline_ms, char **data,
                        size_t *len);

#endif
