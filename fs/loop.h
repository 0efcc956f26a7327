/* The request loop (see loop.c): a leader thread serves requests as it
 * reads them, and hands the device over before work that may wait. */
#ifndef BOOKMARKFS_FS_LOOP_H
#define BOOKMARKFS_FS_LOOP_H

#include <fuse_lowlevel.h>

struct loop_config {
    unsigned max_threads; /* threads serving requests at most */
    long spin_us;         /* how long the leader watches before it sleeps */
};

/* Serves se until it is exited (a signal) or unmounted. 0, or a negative
 * errno when reading the device failed. */
int loop_run(struct fuse_session *se, const struct loop_config *cfg);

/* Called before work that may wait: on the store, the disk, a large parse
 * or another thread. From the leader, it hands the device over first;
 * from any other thread (or another loop) it does nothing. */
void loop_may_block(void);

#endif
