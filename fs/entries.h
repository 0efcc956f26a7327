/* The filesystem over the jobs, without FUSE: what each path of the mount
 * is (the root, its .status, jobs, and a job's keys, control files,
 * .state.json, .status, scratch files and .history/), its attributes and
 * listing, the changes, and open files with what their close commits
 * (README, "Semantics" and "Errors a user can see"). The FUSE adapter
 * (fs/ops.c) calls one function per request.
 *
 * Paths are the mount's, '/'-separated from its root. `caller` is the uid
 * the request comes from: only the mount's owner (and root) changes
 * anything. Functions return 0 (read and write: the bytes done) or a
 * negative errno. Thread-safe. */
#ifndef BOOKMARKFS_FS_ENTRIES_H
#define BOOKMARKFS_FS_ENTRIES_H

#include <stddef.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "fs/jobs.h"
#include "util/strlist.h"

/* Largest value a key file may hold, and largest .state.json write. */
#define ENTRIES_KEY_VALUE_MAX (16u << 20)
#define ENTRIES_STATE_TEXT_MAX (512u << 20)

struct entries;
/* An open file. */
struct entries_handle;

/* The mount of jobs (not owned; outlives it) for uid and gid, which own
 * every entry; scratch_list: --scratch, '/'-separated fnmatch(3) patterns
 * of the names that are scratch files. 0 or -ENOMEM. */
int entries_new(struct jobs *jobs, uid_t uid, gid_t gid, const char *scratch_list,
                struct entries **out);
/* Closes what is still open (entries_close_all) and frees e. */
void entries_free(struct entries *e);

/* Closes every file still open, as its close would have (a new key closed
 * empty still becomes null): for when the request loop ended before every
 * release came. */
void entries_close_all(struct entries *e);

/* stat(2) of path; h: the file it is open as, or NULL. */
int entries_getattr(struct entries *e, const char *path, struct entries_handle *h,
                    struct stat *st);
/* chmod(2) and chown(2): accepted for what exists (cp -p and editors),
 * changing nothing. */
int entries_chattr(struct entries *e, uid_t caller, const char *path,
                   struct entries_handle *h);

/* Whether path is a directory that can be listed. */
int entries_opendir(struct entries *e, const char *path);
/* Appends the names of the directory path, in readdir's order, with "."
 * and ".." first. */
int entries_list(struct entries *e, const char *path, struct strlist *names);

int entries_mkdir(struct entries *e, uid_t caller, const char *path);
int entries_rmdir(struct entries *e, uid_t caller, const char *path);
int entries_unlink(struct entries *e, uid_t caller, const char *path);
/* rename(2)'s flags (<stdio.h> has them with _GNU_SOURCE). */
#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

/* flags: RENAME_NOREPLACE; RENAME_EXCHANGE is refused. */
int entries_rename(struct entries *e, uid_t caller, const char *from, const char *to,
                   unsigned int flags);
/* tv: the access and modification times, as utimensat(2) takes them. */
int entries_utimens(struct entries *e, uid_t caller, const char *path,
                    const struct timespec tv[2]);
/* truncate(2) of path, or ftruncate(2) of h when not NULL. */
int entries_truncate(struct entries *e, uid_t caller, const char *path,
                     struct entries_handle *h, off_t size);
/* Links and device nodes: never made. */
int entries_mknod(struct entries *e, const char *path);

/* open(2) of an existing entry with open flags; entries_create: O_CREAT.
 * *out: the open file; *noflush: 1 when its close commits nothing (no
 * flush needed). */
int entries_open(struct entries *e, uid_t caller, const char *path, int flags,
                 struct entries_handle **out, int *noflush);
int entries_create(struct entries *e, uid_t caller, const char *path, int flags,
                   struct entries_handle **out, int *noflush);
int entries_read(struct entries_handle *h, char *buf, size_t size, off_t off);
int entries_write(struct entries_handle *h, const char *data, size_t size, off_t off);
/* What close(2) does: commits what the file holds (README, "Key files"). */
int entries_commit(struct entries_handle *h);
/* fsync(2): commits (h may be NULL) and makes the journal durable. */
int entries_fsync(struct entries *e, struct entries_handle *h);
/* The last close of the file: frees h. */
void entries_close(struct entries_handle *h);

#endif
