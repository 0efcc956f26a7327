/* The FUSE operations (high-level, path-based API). */
#ifndef BOOKMARKFS_FS_OPS_H
#define BOOKMARKFS_FS_OPS_H

#include <fuse.h>
#include <sys/types.h>
#include <time.h>

#include "fs/history.h"
#include "fs/jobs.h"

struct fsctx {
    struct jobs *jobs;
    uid_t uid;
    gid_t gid;
    struct timespec mounted;
    char **scratch; /* --scratch: NULL-terminated fnmatch(3) patterns */
    struct history *history; /* MNT/<job>/.history/ */
};

/* Splits a '/'-separated pattern list (--scratch) into fc->scratch. 0 or
 * -ENOMEM. */
int ops_scratch_init(struct fsctx *fc, const char *list);
void ops_scratch_free(struct fsctx *fc);

extern const struct fuse_operations bookmarkfs_ops;

/* After the FUSE loop: releases the files whose RELEASE never came (a new
 * key closed empty still becomes null). */
void ops_release_open_files(struct fsctx *fc);

/* Largest value a key file may hold, and largest .state.json write. */
#define KEY_VALUE_MAX (16u << 20)
#define STATE_TEXT_MAX (512u << 20)

#endif
