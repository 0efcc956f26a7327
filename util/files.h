/* Directories on the local disk, as the dir store and the local journal
 * create them (README, "The local journal"). */
#ifndef BOOKMARKFS_UTIL_FILES_H
#define BOOKMARKFS_UTIL_FILES_H

#include <sys/types.h>

/* fsync(2) of the directory at path. 0 or a negative errno. */
int files_fsync_dir(const char *path);

/* mkdir -p: creates every missing component of path with mode; with
 * durable, fsyncs the parent of each directory it creates, so that a later
 * rename into it survives power loss. 0 when path is a directory at the
 * end, else a negative errno (-ENOTDIR when a component is something else,
 * -ENOENT for ""). */
int files_mkdir_p(const char *path, mode_t mode, int durable);

#endif
