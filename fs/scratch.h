/* A scratch file: a local file of a job, dot-named or named like a tool's
 * temp, backup or probe file (--scratch), never uploaded (README, "Scratch
 * files"). Plain bytes, refcounted so that open files survive unlink and
 * rename: the job's scratch map holds one reference, each open file one.
 * The references, and the bytes, are guarded by the job's lock. */
#ifndef BOOKMARKFS_FS_SCRATCH_H
#define BOOKMARKFS_FS_SCRATCH_H

#include <stddef.h>
#include <time.h>

struct scratch {
    char *data;
    size_t len, cap;
    struct timespec mtime;
    int refs;
};

/* An empty scratch file with one reference, changed now. 0 or -ENOMEM. */
int scratch_new(struct scratch **out);

/* Drops a reference; the last one frees it. NULL: nothing. */
void scratch_unref(struct scratch *s);

/* scratch_unref for a map's destructor (strmap_free). */
void scratch_unref_cb(void *s);

#endif
