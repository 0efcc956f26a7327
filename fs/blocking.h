/* "This thread is about to wait": what the core (jobs, journal, store
 * calls) tells whoever runs it, without knowing who that is. The daemon
 * installs its request loop's hand-over (README, "The request loop"); with
 * no hook installed (the unit tests, the single-threaded loop) a call does
 * nothing. */
#ifndef BOOKMARKFS_FS_BLOCKING_H
#define BOOKMARKFS_FS_BLOCKING_H

/* Installs hook (NULL: none), called by blocking_may_block from any
 * thread. Install it before the threads that call it start. */
void blocking_set_hook(void (*hook)(void));

/* Called before work that may wait: on the store, the disk, a large parse
 * or another thread. Calls the hook, if any. */
void blocking_may_block(void);

#endif
