/* MNT/<job>/.history/: a job's stored states, read-only (README, "History
 * and rewind"). Listed, by a full listing of both buckets, only when read,
 * and kept for a moment so that `ls -l` does not list again for every
 * entry. Thread-safe. */
#ifndef BOOKMARKFS_FS_HISTORY_H
#define BOOKMARKFS_FS_HISTORY_H

#include <stddef.h>

#include "fs/index.h"
#include "store/store.h"
#include "util/strlist.h"

/* The directory's name inside a job. */
#define HISTORY_DIR ".history"

struct history;

/* Keeps the pointers: store and index outlive the history. 0 or -ENOMEM. */
int history_new(struct store *store, struct index *index, struct history **out);
void history_free(struct history *h);

/* What path names: 1, MNT/<job>/.history (job set, entry empty); 2, an
 * entry of it (both set); 0, neither; -ENOENT, a path below an entry. */
int history_path(const char *path, char job[256], char entry[256]);

/* Appends the names of the job's entries, in upload order (the order of
 * layout_candidate_cmp, which is also the names'), listing the store afresh.
 * 0 or a negative errno. */
int history_list(struct history *h, const char *job, struct strlist *names);

/* Copies out the entry `name` of the job (layout_candidate_clear it), listing the
 * store again once when it is not there. 0, -ENOENT or a negative errno. */
int history_find(struct history *h, const char *job, const char *name,
                 struct index_object *o);

/* The body of the entry o of the job: *buf malloc'd. 0, -ENOENT, -ENOMEM
 * or -EIO (logged). */
int history_fetch(struct history *h, const char *job, const struct index_object *o,
                  char **buf, size_t *len);

#endif
