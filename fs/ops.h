/* The FUSE operations (high-level, path-based API): the adapter over the
 * filesystem of fs/entries.h. */
#ifndef BOOKMARKFS_FS_OPS_H
#define BOOKMARKFS_FS_OPS_H

#include <fuse.h>

#include "fs/entries.h"

/* fuse_new's private_data: what the operations reach through
 * fuse_get_context(). */
struct ops_context {
    struct entries *entries;
};

extern const struct fuse_operations ops_fuse_operations;

#endif
