/* Jobs: the table of loaded jobs, get_or_create against the store, and the
 * synchronous upload of a job's snapshot. Knows nothing of FUSE. */
#ifndef BOOKMARKFS_FS_JOBS_H
#define BOOKMARKFS_FS_JOBS_H

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "fs/index.h"
#include "fs/journal.h"
#include "fs/layout.h"
#include "fs/lease.h"
#include "fs/scratch.h"
#include "fs/state.h"
#include "store/store.h"
#include "util/strmap.h"

struct job {
    char *name;
    struct state *state;
    int refs;                  /* guarded by the table lock */
    pthread_mutex_t lock;      /* scratch, pending, info, mtime */
    pthread_mutex_t upload_lock; /* one upload at a time per job */
    pthread_mutex_t claim_lock; /* one lease claim (and its reload) at a time */
    struct strmap *scratch;    /* name -> struct scratch (fs/scratch.h) */
    struct strmap *pending;    /* created, not yet closed keys -> open count */
    struct strmap *moved;      /* keys renamed to a scratch name (a tool's
                                  backup) -> until when an upload waits for
                                  them to be written again (int64_t ms) */
    pthread_cond_t moved_cond; /* a moved key written again (job lock) */
    uint64_t moved_gen;        /* keys ever moved away (job lock) */
    json_t *loaded;            /* what get_or_create loaded, {} when none */
    json_t *last_upload[2];    /* per enum upload_kind, {} when none */
    struct timespec mtime;
    unsigned hidden;           /* removed entries (running, completed,
                                  .state.json) until created again: 1 << etype */
    uint64_t journal_seq;      /* its newest journal record, 0: none (journal lock) */
    /* While the job has no journal records, the stored object its state
     * equals (the one loaded or last uploaded; bucket is the jobs' lz_bucket
     * or dlz_bucket), or none: the empty state. Its first change journals
     * it as the base the changes stand on. Journal lock. */
    const char *base_bucket;
    char *base_key;
    /* The candidates this mount knows the store holds: the newest when the
     * job was loaded, and this mount's last upload of each kind (index
     * 1 + enum upload_kind). upload_lock. */
    struct candidate known[3];
    /* The ETag and upload_date of the stored object this mount's state was
     * loaded from or last uploaded as (lock): whether a new lease holder
     * must reload the job (README, "Leases"). */
    char lease_etag[STORE_ETAG_MAX];
    long long lease_date;      /* -1: none */
};

struct jobs_stats {
    uint64_t uploads_ok, uploads_failed, bytes_uploaded, retries;
    uint64_t values_refused;
    char last_error[1280];
    time_t last_error_time;
    /* when the last error is a refused value: where and why */
    int last_refused;
    char refused_job[256], refused_key[256], refused_reason[160];
    /* when it is a failed upload: the store's error (README, "Observability") */
    struct store_error last_store_error;
};

struct jobs {
    struct store *store;
    struct layout layout;
    char *lz_bucket;
    char *dlz_bucket;
    pthread_mutex_t lock;      /* the table and the stats */
    pthread_mutex_t load_lock; /* serializes loads from the store */
    struct strmap *table;      /* name -> struct job */
    struct jobs_stats stats;
    struct journal *journal;   /* NULL: changes live in memory only */
    struct index *index;       /* what the store holds, listed incrementally */
    int success_trigger;       /* --success-trigger: _SUCCESS after completed */
    struct leases *leases;     /* job leases (README, "Leases"); NULL: off */
    const char *lease_mode;    /* for .status: "on", "auto", "off", or why off */
    struct timespec mounted;
};

/* 0 with *out set, or -ENOMEM. Takes ownership of nothing; copies what it
 * keeps. */
int jobs_new(struct store *store, const struct layout *layout, const char *lz_bucket,
             const char *dlz_bucket, struct jobs **out);
void jobs_free(struct jobs *j);

/* Attaches the journal (not owned; outlives j). Set before the first
 * jobs_get. */
void jobs_set_journal(struct jobs *j, struct journal *jn);

/* At mount: loads every job that has journal entries, so they come back on
 * top of what the store holds. Failures are logged (the entries stay and
 * are applied when the job loads later). */
void jobs_replay(struct jobs *j);

/* At unmount: logs a warning for each job with changes in the journal that
 * are not uploaded yet. Returns the number of such jobs. */
size_t jobs_warn_pending(struct jobs *j);

/* fsync of the journal. 0 or -EIO. */
int jobs_sync(struct jobs *j);

/* The changes to a job's state. Each is appended to the journal and then
 * applied, under the journal lock (so the journal's order is the state's).
 * When the journal cannot take it, nothing is applied and -ENOSPC (its disk
 * is full) or -EIO returned.
 * jobs_set_key steals value. jobs_replace_state: -EINVAL with the reason in why when
 * text is not a JSON object. */
int jobs_set_key(struct jobs *j, struct job *job, const char *key, json_t *value);
/* jobs_set_key_text: the same with the value as its compact JSON text (from
 * state_value_compact), which it takes. */
int jobs_set_key_text(struct jobs *j, struct job *job, const char *key, char *text, size_t len);
/* jobs_create_key: a key created and closed with no content (README, "Key
 * files") holds null: journaled and applied like jobs_set_key_text, unless the
 * key exists by then (another writer's value stays). 0 or as jobs_set_key;
 * *made is the new key's mtime, or zero when the key was there. */
int jobs_create_key(struct jobs *j, struct job *job, const char *key, struct timespec *made);
/* jobs_uncreate_key: takes back the null of jobs_create_key (a new key whose first
 * value is refused does not exist) if the key still holds it, unchanged
 * since *made; else does nothing. 0 or as jobs_remove_key. */
int jobs_uncreate_key(struct jobs *j, struct job *job, const char *key,
                 const struct timespec *made);
int jobs_remove_key(struct jobs *j, struct job *job, const char *key);
int jobs_rename_key(struct jobs *j, struct job *job, const char *from, const char *to);
int jobs_replace_state(struct jobs *j, struct job *job, const char *text, size_t len, char *why,
                size_t whylen);

/* get_or_create. Finds a loaded job, or loads it from the store. When the
 * store has no candidate: creates an empty job if `create`, else -ENOENT.
 * With `create`, an already existing job gives -EEXIST (it is still
 * returned in *out, with a reference). Errors: -EIO when the newest object
 * is not a JSON object, store errors. On success *out holds a reference. */
int jobs_get(struct jobs *j, const char *name, int create, struct job **out);

/* Only a job that is loaded already; NULL otherwise (with a reference). */
struct job *jobs_find_loaded(struct jobs *j, const char *name);

void jobs_ref(struct jobs *j, struct job *job);
void jobs_unref(struct jobs *j, struct job *job);

/* rmdir: -ENOTEMPTY when the job has keys, scratch or pending files, unless
 * the job is fenced (its lease was taken over while it had local changes):
 * then its local changes are dropped. Releases the job's lease. */
int jobs_forget(struct jobs *j, const char *name);

/* Names of loaded jobs and of jobs with objects in the store, each once:
 * *out, a jansson array of strings (new reference). 0 or -ENOMEM. */
int jobs_list_names(struct jobs *j, json_t **out);

/* README, "Leases": the first change to a job takes this mount's lease on
 * it (and reloads the job when the store holds a newer state than this
 * mount's); later changes find it held. 0; -EBUSY when another mount holds
 * it, or when this mount's lease was taken over while it had local changes
 * (the log, .status and the read-out name the holder); -EIO etc. when the
 * store failed. 0 at once when leases are off. */
int jobs_claim(struct jobs *j, struct job *job);

/* update()/complete(): uploads one snapshot synchronously, under the lease
 * (jobs_claim); complete() then releases it. 0 or -errno. */
int jobs_upload(struct jobs *j, struct job *job, enum upload_kind kind);

/* A value written to a key (or .state.json) that was refused: counted, and
 * the last error of .status. */
void jobs_note_refused(struct jobs *j, const char *job, const char *key,
                       const char *reason);

/* How many jobs are loaded (for the metrics). */
size_t jobs_loaded_count(struct jobs *j);

/* The root's .status: malloc'd JSON text plus newline. */
char *jobs_status_text(struct jobs *j, size_t *len);

/* The job's read-out, MNT/<job>/.status (README, "Control files"): the
 * last upload of each kind, what get_or_create loaded and the lease.
 * malloc'd JSON text plus newline. */
char *jobs_readout_text(struct jobs *j, struct job *job, size_t *len);

void jobs_touch(struct job *job);

/* A key renamed to a scratch name (sed -i.bak, vim's and cp --backup's
 * backups rename the key first and write it again right after): uploads
 * wait up to MOVED_WAIT_MS for it to be written again, so that no snapshot
 * lacks it (README, "Scratch files"). jobs_key_moved: 0 or -ENOMEM.
 * jobs_key_written: the key has a value again (and the job is touched). */
#define MOVED_WAIT_MS 5000
int jobs_key_moved(struct job *job, const char *key);
void jobs_key_written(struct job *job, const char *key);

#endif
