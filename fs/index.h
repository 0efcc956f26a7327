/* The listing index: what get_or_create and `ls MNT` need to know of the
 * dataset's history in each bucket (the newest candidate of every job, and
 * which jobs have objects), built by one full listing per bucket and then
 * kept up to date by listings after the newest key seen (S3's StartAfter),
 * so their cost does not grow with the history. README: "History at any
 * scale" says what is found how. Thread-safe. */
#ifndef BOOKMARKFS_FS_INDEX_H
#define BOOKMARKFS_FS_INDEX_H

#include <jansson.h>
#include <stdint.h>

#include "fs/layout.h"
#include "store/store.h"

struct index;

/* Objects with an upload_date this many seconds before the previous
 * listing of a bucket are listed again (--relist-window, default 900):
 * they may have arrived since under an older date (Amorphic's move from
 * the LZ to the DLZ bucket, a writer whose clock is behind). */
void index_set_window(struct index *ix, long seconds);

/* Copies nothing it is given but keeps the pointers: store, layout and
 * buckets outlive the index. */
struct index *index_new(struct store *store, const struct layout *layout,
                        const char *lz_bucket, const char *dlz_bucket);
void index_free(struct index *ix);

/* Brings the index up to date (the first call lists each bucket in full,
 * later ones list only what is new) and copies the newest candidate of
 * `job` into *best (layout_candidate_clear it). 1: found, 0: the store has none,
 * or a negative errno of the listing, told in err (may be NULL) for the
 * caller to log. The other calls that list tell err alike. */
int index_newest(struct index *ix, const char *job, struct candidate *best,
                 struct store_error *err);

/* Whether `job` has objects of either kind in either bucket, as of the
 * last update (index_newest, index_job_names). */
int index_has_job(struct index *ix, const char *job);

/* bucket/key, which the index holds, is gone (moved or deleted): forgets
 * everything and lists each bucket in full again; -EALREADY (and no
 * listing) when that very object made the last rebuild
 * (a store whose listing keeps showing what it cannot GET costs one full
 * listing, not one per access). */
int index_rebuild_gone(struct index *ix, const char *bucket, const char *key,
                       struct store_error *err);

/* Brings the index up to date and adds the name of every job with objects
 * in either bucket (either kind) to `set` (a JSON object used as a set).
 * 0 or a negative errno (then nothing is added). */
int index_job_names(struct index *ix, json_t *set, struct store_error *err);

/* One stored object of a job (either kind, either bucket). */
struct index_object {
    struct candidate c; /* bucket, key, upload_date, last_modified_ms, kind */
    uint64_t size;
};

/* Every object of `job` in both buckets, oldest first (the order of
 * layout_candidate_cmp), by a full listing of each bucket: for MNT/<job>/.history/.
 * *out is malloc'd (index_objects_free). 0 or a negative errno. */
int index_history(struct index *ix, const char *job, struct index_object **out, size_t *n,
                  struct store_error *err);
void index_objects_free(struct index_object *v, size_t n);

/* For .status: {"full_listings": n, "listings": n, "objects_listed": n,
 * "jobs": n, "history_listings": n} (new reference). */
json_t *index_stats(struct index *ix);

#endif
