#include "fs/jobs.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/blocking.h"
#include "fs/metrics.h"
#include "util/clock.h"
#include "util/log.h"

/* Parsing more than this takes a millisecond or more. */
#define LARGE_TEXT (16 * 1024)

static void iso_time(int64_t ms, char out[64])
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&secs, &tm)) {
        snprintf(out, 64, "?");
        return;
    }
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ms % 1000));
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Where bucket/key is, in the store's own words: s3://B/K, or the dir
 * store's file (README, "Observability"). buf: STORE_LOCATION_MAX bytes. */
static const char *where(const struct jobs *j, const char *bucket, const char *key,
                         char *buf)
{
    store_locate(j->store, bucket, key, buf, STORE_LOCATION_MAX);
    return buf;
}

/* A failed store call's text for the one line that logs it. buf: WHY_MAX. */
#define WHY_MAX 1024
static const char *why_text(const struct store_error *e, char *buf)
{
    store_error_text(e, buf, WHY_MAX);
    return buf;
}

int jobs_new(struct store *store, const struct layout *layout, const char *lz_bucket,
             const char *dlz_bucket, struct jobs **out)
{
    *out = NULL;
    struct jobs *j = calloc(1, sizeof *j);
    if (!j)
        return -ENOMEM;
    /* Default mutexes: their static initializer cannot fail. */
    j->lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    j->load_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    j->store = store;
    j->layout = *layout;
    j->lz_bucket = strdup(lz_bucket);
    j->dlz_bucket = strdup(dlz_bucket);
    if (!j->lz_bucket || !j->dlz_bucket || strmap_new(&j->table) < 0 ||
        !(j->index = index_new(store, &j->layout, j->lz_bucket, j->dlz_bucket))) {
        jobs_free(j);
        return -ENOMEM;
    }
    *out = j;
    return 0;
}

static void job_destroy(struct job *job)
{
    if (!job)
        return;
    state_free(job->state);
    strmap_free(job->scratch, scratch_unref_cb);
    strmap_free(job->pending, NULL);
    strmap_free(job->moved, free);
    json_decref(job->loaded);
    json_decref(job->last_upload[0]);
    json_decref(job->last_upload[1]);
    free(job->base_key);
    for (int i = 0; i < 3; i++)
        layout_candidate_clear(&job->known[i]);
    pthread_cond_destroy(&job->moved_cond);
    pthread_mutex_destroy(&job->lock);
    pthread_mutex_destroy(&job->upload_lock);
    pthread_mutex_destroy(&job->claim_lock);
    free(job->name);
    free(job);
}

static void job_destroy_cb(void *p) { job_destroy(p); }

void jobs_free(struct jobs *j)
{
    if (!j)
        return;
    strmap_free(j->table, job_destroy_cb);
    index_free(j->index);
    pthread_mutex_destroy(&j->lock);
    pthread_mutex_destroy(&j->load_lock);
    free(j->lz_bucket);
    free(j->dlz_bucket);
    free(j);
}

static struct job *job_new(const char *name)
{
    struct job *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    job->upload_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    job->claim_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    pthread_condattr_t ca; /* the moved keys' wait runs on the monotonic clock */
    int crc = pthread_condattr_init(&ca);
    if (crc == 0) {
        crc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        if (crc == 0)
            crc = pthread_cond_init(&job->moved_cond, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (crc != 0) {
        free(job);
        return NULL;
    }
    job->name = strdup(name);
    job->state = state_new();
    int maps = strmap_new(&job->scratch);
    if (maps == 0)
        maps = strmap_new(&job->pending);
    if (maps == 0)
        maps = strmap_new(&job->moved);
    job->loaded = json_object();
    job->last_upload[0] = json_object();
    job->last_upload[1] = json_object();
    clock_gettime(CLOCK_REALTIME, &job->mtime);
    job->lease_date = -1;
    if (maps < 0 || !job->name || !job->state || !job->loaded || !job->last_upload[0] || !job->last_upload[1]) {
        job_destroy(job);
        return NULL;
    }
    job->refs = 1; /* the table's */
    return job;
}

void jobs_ref(struct jobs *j, struct job *job)
{
    pthread_mutex_lock(&j->lock);
    job->refs++;
    pthread_mutex_unlock(&j->lock);
}

void jobs_unref(struct jobs *j, struct job *job)
{
    if (!job)
        return;
    pthread_mutex_lock(&j->lock);
    int last = --job->refs == 0;
    pthread_mutex_unlock(&j->lock);
    if (last)
        job_destroy(job);
}

struct job *jobs_find_loaded(struct jobs *j, const char *name)
{
    pthread_mutex_lock(&j->lock);
    struct job *job = strmap_get(j->table, name);
    if (job)
        job->refs++;
    pthread_mutex_unlock(&j->lock);
    return job;
}

/* The newest candidate of `name` in both buckets, from the index (README,
 * "History at any scale"): *found 0 when none. */
static int find_newest(struct jobs *j, const char *name, struct candidate *best, int *found)
{
    *found = 0;
    struct store_error e;
    int rc = index_newest(j->index, name, best, &e);
    if (rc < 0) {
        char why[WHY_MAX];
        log_error("job '%s': listing the store failed: %s", name, why_text(&e, why));
        /* A listing answered "not found" is a failed listing, not a job
         * without state (README, "Errors a user can see"). */
        return rc == -ENOENT ? -EIO : rc;
    }
    *found = rc;
    return 0;
}

/* Reads one stored object into st. *len: its size. -ENOENT when it is not
 * there; -EIO when it is not a JSON object (logged); store errors. */
static int fetch_state(struct jobs *j, const char *name, const char *bucket,
                       const char *key, struct state *st, size_t *len)
{
    char *body = NULL;
    struct store_error e;
    char w[STORE_LOCATION_MAX];
    int rc = store_get(j->store, bucket, key, &body, len, &e);
    if (rc < 0) {
        char why[WHY_MAX];
        if (rc != -ENOENT)
            log_error("job '%s': reading %s failed: %s", name, where(j, bucket, key, w),
                      why_text(&e, why));
        return rc;
    }
    char why[160] = "";
    rc = state_from_bytes(st, body, *len, why, sizeof why);
    free(body);
    if (rc < 0) {
        log_error("job '%s': %s is not a JSON object (%s); refusing to "
                  "start the job from an empty state",
                  name, where(j, bucket, key, w), why);
        return rc == -ENOMEM ? rc : -EIO;
    }
    return 0;
}

/* The jobs' own copy of a bucket name (the base points to it). */
static const char *our_bucket(struct jobs *j, const char *bucket)
{
    return strcmp(bucket, j->lz_bucket) == 0 ? j->lz_bucket : j->dlz_bucket;
}

/* Loads the newest candidate of `name` into a new job. *out NULL and 0 when
 * the store has no object of the job. */
static int load_from_store(struct jobs *j, const char *name, struct job **out)
{
    char w[STORE_LOCATION_MAX]; /* for the log lines */
    *out = NULL;
    struct candidate best = {0};
    int found = 0;
    int rc = find_newest(j, name, &best, &found);
    if (rc < 0)
        return rc;
    if (!found) {
        /* Objects of the kind --resume-from leaves out only (a job that
         * never completed): it is there, as `ls MNT` shows, and starts
         * empty, as get_or_create does (README, "Jobs"). */
        if (index_has_job(j->index, name) && !(*out = job_new(name)))
            return -ENOMEM;
        return 0;
    }
    struct job *job = job_new(name);
    if (!job) {
        layout_candidate_clear(&best);
        return -ENOMEM;
    }
    size_t len = 0;
    rc = fetch_state(j, name, best.bucket, best.key, job->state, &len);
    if (rc == -ENOENT) {
        /* Gone since the index listed it (moved from the LZ to the DLZ
         * bucket, or deleted): list everything again, once per object. */
        struct store_error e;
        int r = index_rebuild_gone(j->index, best.bucket, best.key, &e);
        if (r == 0) {
            log_info("job '%s': %s is gone since it was listed; listed the "
                     "store again", name, where(j, best.bucket, best.key, w));
            layout_candidate_clear(&best);
            r = find_newest(j, name, &best, &found);
            if (r < 0 || !found) {
                job_destroy(job);
                return r;
            }
            rc = fetch_state(j, name, best.bucket, best.key, job->state, &len);
        } else if (r != -EALREADY) {
            char why[WHY_MAX];
            log_error("job '%s': listing the store failed: %s", name, why_text(&e, why));
            layout_candidate_clear(&best);
            job_destroy(job);
            return r == -ENOENT ? -EIO : r;
        } /* else listed again when it went, and the listing still shows it */
    }
    if (rc < 0) {
        if (rc == -ENOENT)
            log_error("job '%s': reading %s failed: %s", name,
                      where(j, best.bucket, best.key, w), strerror(ENOENT));
        layout_candidate_clear(&best);
        job_destroy(job);
        return rc == -ENOENT ? -EIO : rc;
    }
    char when[64];
    iso_time(best.last_modified_ms, when);
    json_t *info = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "bucket",
                             best.bucket, "key", best.key, "kind",
                             best.kind == UPLOAD_COMPLETED ? "completed" : "running",
                             "last_modified", when, "bytes", (json_int_t)len, "keys",
                             (json_int_t)state_count(job->state));
    if (info) {
        json_decref(job->loaded);
        job->loaded = info;
    }
    metrics_loaded(name, best.kind, best.last_modified_ms / 1000);
    log_info("job '%s': loaded %zu keys from %s", name, state_count(job->state),
             where(j, best.bucket, best.key, w));
    job->base_bucket = our_bucket(j, best.bucket);
    job->base_key = strdup(best.key);
    job->lease_date = strtoll(best.upload_date, NULL, 10); /* its ETag: not known */
    job->known[0] = best; /* taken */
    if (!job->base_key) {
        job_destroy(job);
        return -ENOMEM;
    }
    *out = job;
    return 0;
}

/* The last base among a job's journal records, copied out: the state the
 * records after it stand on. */
struct first_rec {
    int is_base;
    uint64_t seq;
    char *bucket, *key, *text;
    size_t text_len;
};

static void first_clear(struct first_rec *f);

static int first_cb(const struct journal_record *rec, void *arg)
{
    struct first_rec *f = arg;
    if (rec->op != JOURNAL_BASE)
        return 0;
    first_clear(f);
    f->is_base = 1;
    f->seq = rec->seq;
    if (rec->bucket) {
        f->bucket = strdup(rec->bucket);
        f->key = strdup(rec->key);
        if (!f->bucket || !f->key)
            return -ENOMEM;
    } else {
        f->text = malloc(rec->text_len + 1);
        if (!f->text)
            return -ENOMEM;
        memcpy(f->text, rec->text, rec->text_len);
        f->text[rec->text_len] = '\0';
        f->text_len = rec->text_len;
    }
    return 0;
}

static void first_clear(struct first_rec *f)
{
    free(f->bucket);
    free(f->key);
    free(f->text);
    memset(f, 0, sizeof *f);
}

/* Are a job's records only a base that is a running object, with
 * --resume-from=completed? */
static int base_only_running(struct jobs *j, const char *name, const struct first_rec *base)
{
    if (j->layout.resume_running || !base->bucket ||
        journal_changes(j->journal, name) > 0)
        return 0;
    char *job = NULL;
    enum upload_kind kind = UPLOAD_COMPLETED;
    const char *date = NULL;
    size_t date_len = 0;
    int m = layout_match(&j->layout, base->key, 1, &job, &kind, &date, &date_len);
    free(job);
    return m > 0 && kind == UPLOAD_RUNNING;
}

/* A job whose journal records begin with a base comes back as that base
 * (the stored object named, or the text) with the changes on top, whatever
 * the store's newest object is (README, "The local journal"); a newer one
 * from elsewhere is logged, with both keys. */
static int load_from_base(struct jobs *j, const char *name, const struct first_rec *base,
                          struct job **out)
{
    *out = NULL;
    struct candidate best = {0};
    int found = 0;
    int rc = find_newest(j, name, &best, &found);
    if (rc < 0)
        return rc;
    struct job *job = job_new(name);
    if (!job) {
        layout_candidate_clear(&best);
        return -ENOMEM;
    }
    size_t len = 0;
    const char *bucket = base->bucket;
    char w[STORE_LOCATION_MAX]; /* for the log lines */
    if (bucket) {
        rc = fetch_state(j, name, bucket, base->key, job->state, &len);
        if (rc == -ENOENT && strcmp(j->lz_bucket, j->dlz_bucket) != 0) {
            /* moved from the landing zone to the DLZ meanwhile */
            bucket = strcmp(bucket, j->lz_bucket) == 0 ? j->dlz_bucket : j->lz_bucket;
            rc = fetch_state(j, name, bucket, base->key, job->state, &len);
        }
        if (rc == -ENOENT) {
            char w2[STORE_LOCATION_MAX];
            log_error("job '%s': %s, the state the journal's changes stand on, "
                      "is gone from the store; they are replayed on %s instead",
                      name, where(j, base->bucket, base->key, w),
                      found ? where(j, best.bucket, best.key, w2) : "the empty state");
            rc = found ? fetch_state(j, name, best.bucket, best.key, job->state, &len) : 0;
            if (rc == -ENOENT)
                rc = -EIO;
            bucket = NULL;
        }
    } else {
        char why[160] = "";
        len = base->text_len;
        rc = state_from_bytes(job->state, base->text, base->text_len, why, sizeof why);
        if (rc < 0) {
            log_error("job '%s': the journal's base is not a JSON object (%s)", name, why);
            rc = rc == -ENOMEM ? rc : -EIO;
        }
    }
    if (rc < 0) {
        layout_candidate_clear(&best);
        job_destroy(job);
        return rc;
    }
    /* The base object's upload_date and kind, from its key. */
    char *bjob = NULL;
    enum upload_kind bkind = UPLOAD_COMPLETED;
    const char *bdate = NULL;
    size_t bdate_len = 0;
    int m = bucket ? layout_match(&j->layout, base->key, 1, &bjob, &bkind, &bdate,
                                  &bdate_len)
                   : 0;
    free(bjob);
    char *bdate_s = m > 0 ? strndup(bdate, bdate_len) : NULL;
    int same = bucket && found && strcmp(best.key, base->key) == 0 &&
               strcmp(best.bucket, bucket) == 0;
    if (found && !same && (!bucket || (bdate_s && layout_date_cmp(best.upload_date,
                                                                   bdate_s) > 0)))
    {
        char w2[STORE_LOCATION_MAX];
        log_warn("job '%s': the store has %s, newer than %s, which this "
                 "mount's changes stand on; the mount keeps its own state",
                 name, where(j, best.bucket, best.key, w),
                 bucket ? where(j, bucket, base->key, w2) : "the empty state");
    }
    free(bdate_s);
    if (bucket) {
        json_t *info = json_pack("{s:s, s:s, s:s, s:I, s:I, s:b}", "bucket", bucket, "key",
                                 base->key, "kind",
                                 bkind == UPLOAD_COMPLETED ? "completed" : "running",
                                 "bytes", (json_int_t)len, "keys",
                                 (json_int_t)state_count(job->state), "journal", 1);
        if (info) {
            json_decref(job->loaded);
            job->loaded = info;
        }
    }
    log_info("job '%s': %zu keys from %s, the base in the journal", name,
             state_count(job->state),
             bucket ? where(j, bucket, base->key, w) : "the empty state");
    if (found)
        job->known[0] = best; /* taken */
    *out = job;
    return 0;
}

/* ---- the journal */

void jobs_set_journal(struct jobs *j, struct journal *jn) { j->journal = jn; }

/* The journal is shared by all jobs: a thread that finds it held (a large
 * replace or upload snapshot under way) may wait a while. */
static void lock_journal(struct jobs *j)
{
    if (journal_trylock(j->journal) != 0) {
        blocking_may_block();
        journal_lock(j->journal);
    }
}

struct replay_ctx {
    struct job *job;
    uint64_t after; /* the base the job started from: records up to it are in it */
    size_t applied, skipped;
};

static int replay_record(const struct journal_record *rec, void *arg)
{
    struct replay_ctx *rc = arg;
    struct state *st = rc->job->state;
    int r = 0;
    const char *what = NULL;
    if (rec->op == JOURNAL_BASE || rec->seq <= rc->after) {
        rc->job->journal_seq = rec->seq; /* in the base the job started from */
        return 0;
    }
    switch (rec->op) {
    case JOURNAL_BASE:
        break;
    case JOURNAL_SET:
        r = state_set(st, rec->key, json_incref(rec->value));
        what = "set";
        break;
    case JOURNAL_REMOVE:
        r = state_remove(st, rec->key);
        if (r == -ENOENT)
            r = 0; /* already gone: the outcome is the same */
        what = "remove";
        break;
    case JOURNAL_RENAME:
        r = state_rename(st, rec->key, rec->to);
        what = "rename";
        break;
    case JOURNAL_REPLACE:
        r = state_from_bytes(st, rec->text, rec->text_len, NULL, 0);
        what = "replace of .state.json";
        break;
    }
    if (r == -ENOMEM)
        return r;
    if (r < 0) {
        log_warn("job '%s': journal change %llu (%s of '%s') does not apply to the "
                 "state in the store (%s); skipped",
                 rc->job->name, (unsigned long long)rec->seq, what,
                 rec->key ? rec->key : "", strerror(-r));
        rc->skipped++;
    } else {
        rc->applied++;
    }
    rc->job->journal_seq = rec->seq; /* in the journal until an upload */
    return 0;
}

/* Applies the journal's entries of a job being loaded (not yet in the
 * table, so nothing else changes it meanwhile). */
static int replay_job(struct jobs *j, struct job *job, uint64_t after)
{
    struct replay_ctx rc = {.job = job, .after = after};
    int r = journal_each(j->journal, job->name, replay_record, &rc);
    if (r < 0) {
        log_error("job '%s': replaying the journal failed: %s", job->name, strerror(-r));
        return r == -ENOMEM ? r : -EIO;
    }
    size_t n = rc.applied + rc.skipped;
    log_info("job '%s': replayed %zu change%s from the journal (%zu skipped)", job->name,
             n, n == 1 ? "" : "s", rc.skipped);
    return 0;
}

static int replay_one(const char *name, size_t n, void *arg)
{
    (void)n;
    struct job *job = NULL;
    int rc = jobs_get(arg, name, 0, &job);
    if (rc < 0)
        log_error("job '%s': cannot load it to replay its journal entries (%s); they "
                  "stay in the journal",
                  name, strerror(-rc));
    jobs_unref(arg, job);
    return 0;
}

void jobs_replay(struct jobs *j)
{
    if (j->journal)
        journal_jobs(j->journal, replay_one, j);
}

static int warn_one(const char *name, size_t n, void *arg)
{
    size_t *count = arg;
    if (n == 0)
        return 0; /* only a base: its state is uploaded */
    log_warn("job '%s' has %zu change%s not uploaded; kept in the journal for the "
             "next mount",
             name, n, n == 1 ? "" : "s");
    (*count)++;
    return 0;
}

size_t jobs_warn_pending(struct jobs *j)
{
    size_t count = 0;
    if (j->journal)
        journal_jobs(j->journal, warn_one, &count);
    return count;
}

int jobs_sync(struct jobs *j)
{
    blocking_may_block(); /* fsync */
    if (!j->journal)
        return 0;
    return journal_sync(j->journal) < 0 ? -EIO : 0;
}

/* What a caller sees of a change the journal could not take: ENOSPC for
 * a full disk (README, "Errors a user can see"), else EIO. */
static int journal_error(int rc) { return rc == -ENOMEM || rc == -ENOSPC ? rc : -EIO; }

/* Caller holds the journal lock. The first change of a job with no records
 * journals first the base its state stands on: the stored object it equals,
 * or the empty state. Replay then never depends on which object
 * get_or_create would pick. */
static int journal_base_locked(struct jobs *j, struct job *job)
{
    if (job->journal_seq != 0)
        return 0;
    struct journal_record rec = {.op = JOURNAL_BASE, .job = job->name};
    if (job->base_key) {
        rec.bucket = job->base_bucket;
        rec.key = job->base_key;
    } else {
        rec.text = "{}";
        rec.text_len = 2;
    }
    int rc = journal_append_locked(j->journal, &rec);
    if (rc < 0)
        return journal_error(rc);
    job->journal_seq = rec.seq;
    return 0;
}

int jobs_set_key(struct jobs *j, struct job *job, const char *key, json_t *value)
{
    if (!value)
        return -ENOMEM;
    size_t len = 0;
    char *text = NULL;
    (void)state_value_compact(value, &text, &len); /* NULL text: -ENOMEM below */
    json_decref(value);
    return jobs_set_key_text(j, job, key, text, len);
}

int jobs_set_key_text(struct jobs *j, struct job *job, const char *key, char *text, size_t len)
{
    if (!text)
        return -ENOMEM;
    if (!j->journal)
        return state_set_text(job->state, key, text, len);
    lock_journal(j);
    struct journal_record rec = {.op = JOURNAL_SET, .job = job->name, .key = key,
                                 .value_text = text, .value_len = len};
    int rc = journal_base_locked(j, job);
    if (rc == 0 && (rc = journal_append_locked(j->journal, &rec)) < 0)
        rc = journal_error(rc);
    if (rc < 0) {
        free(text);
    } else if ((rc = state_set_text(job->state, key, text, len)) < 0) {
        journal_undo_locked(j->journal);
    } else {
        job->journal_seq = rec.seq;
    }
    journal_unlock(j->journal);
    return rc;
}

int jobs_create_key(struct jobs *j, struct job *job, const char *key, struct timespec *made)
{
    *made = (struct timespec){0};
    if (!j->journal) {
        if (state_has(job->state, key))
            return 0;
        int rc = state_set(job->state, key, json_null());
        if (rc == 0)
            (void)state_mtime(job->state, key, made, 0);
        return rc;
    }
    lock_journal(j);
    int rc = 0;
    if (!state_has(job->state, key)) { /* checked and set under the lock */
        char *text = strdup("null");
        struct journal_record rec = {.op = JOURNAL_SET, .job = job->name, .key = key,
                                     .value_text = text, .value_len = 4};
        if (!text)
            rc = -ENOMEM;
        else if ((rc = journal_base_locked(j, job)) < 0 ||
                 (rc = journal_append_locked(j->journal, &rec)) < 0) {
            rc = journal_error(rc);
            free(text);
        } else if ((rc = state_set_text(job->state, key, text, 4)) < 0) {
            journal_undo_locked(j->journal);
        } else {
            job->journal_seq = rec.seq;
            (void)state_mtime(job->state, key, made, 0);
        }
    }
    journal_unlock(j->journal);
    return rc;
}

/* Does key hold the null jobs_create_key gave it at *made? Caller holds the
 * journal lock, if any. */
static int still_created(struct job *job, const char *key, const struct timespec *made)
{
    struct timespec t;
    if ((made->tv_sec == 0 && made->tv_nsec == 0) ||
        state_mtime(job->state, key, &t, 0) < 0 || t.tv_sec != made->tv_sec ||
        t.tv_nsec != made->tv_nsec)
        return 0;
    size_t len = 0;
    char *text = NULL;
    int same = state_value_text(job->state, key, &text, &len) == 0 && len == 5 &&
               memcmp(text, "null\n", 5) == 0;
    free(text);
    return same;
}

int jobs_uncreate_key(struct jobs *j, struct job *job, const char *key,
                 const struct timespec *made)
{
    if (!j->journal)
        return still_created(job, key, made) ? state_remove(job->state, key) : 0;
    lock_journal(j);
    int rc = 0;
    if (still_created(job, key, made)) { /* checked and removed under the lock */
        struct journal_record rec = {.op = JOURNAL_REMOVE, .job = job->name, .key = key};
        if ((rc = journal_base_locked(j, job)) < 0) {
            /* as journal_error */
        } else if ((rc = journal_append_locked(j->journal, &rec)) < 0) {
            rc = journal_error(rc);
        } else {
            state_remove(job->state, key);
            job->journal_seq = rec.seq;
        }
    }
    journal_unlock(j->journal);
    return rc;
}

int jobs_remove_key(struct jobs *j, struct job *job, const char *key)
{
    if (!j->journal)
        return state_remove(job->state, key);
    lock_journal(j);
    int rc = state_has(job->state, key) ? 0 : -ENOENT;
    struct journal_record rec = {.op = JOURNAL_REMOVE, .job = job->name, .key = key};
    if (rc == 0 && (rc = journal_base_locked(j, job)) == 0 &&
        (rc = journal_append_locked(j->journal, &rec)) < 0)
        rc = journal_error(rc);
    else if (rc == 0) {
        state_remove(job->state, key); /* present: checked under the lock */
        job->journal_seq = rec.seq;
    }
    journal_unlock(j->journal);
    return rc;
}

int jobs_rename_key(struct jobs *j, struct job *job, const char *from, const char *to)
{
    if (!j->journal)
        return state_rename(job->state, from, to);
    lock_journal(j);
    int rc = state_has(job->state, from) ? 0 : -ENOENT;
    struct journal_record rec = {.op = JOURNAL_RENAME, .job = job->name, .key = from,
                                 .to = to};
    if (rc == 0 && (rc = journal_base_locked(j, job)) == 0 &&
        (rc = journal_append_locked(j->journal, &rec)) < 0)
        rc = journal_error(rc);
    else if (rc == 0 && (rc = state_rename(job->state, from, to)) < 0)
        journal_undo_locked(j->journal);
    else if (rc == 0)
        job->journal_seq = rec.seq;
    journal_unlock(j->journal);
    return rc;
}

int jobs_replace_state(struct jobs *j, struct job *job, const char *text, size_t len, char *why,
                size_t whylen)
{
    if (len > LARGE_TEXT)
        blocking_may_block(); /* a long parse */
    if (!j->journal)
        return state_from_bytes(job->state, text, len, why, whylen);
    /* Journaled first and taken back if the document does not parse: the
     * journal holds only changes that apply, and the document is parsed
     * once, with no second copy of the state alive beside the journal's. */
    lock_journal(j);
    struct journal_record rec = {.op = JOURNAL_REPLACE, .job = job->name, .text = text,
                                 .text_len = len};
    int rc = journal_base_locked(j, job);
    if (rc == 0)
        rc = journal_append_locked(j->journal, &rec);
    if (rc == -EINVAL) { /* the journal takes only UTF-8 text, as JSON does */
        if (why && whylen)
            snprintf(why, whylen, "not valid UTF-8");
    } else if (rc < 0) {
        rc = journal_error(rc);
    } else if ((rc = state_from_bytes(job->state, text, len, why, whylen)) < 0) {
        journal_undo_locked(j->journal);
    } else {
        job->journal_seq = rec.seq;
    }
    journal_unlock(j->journal);
    return rc;
}

/* Drops a job's journal entries up to seq (all of them when seq is 0). */
static void journal_drop(struct jobs *j, struct job *job, uint64_t seq)
{
    if (!j->journal)
        return;
    lock_journal(j);
    if (seq == 0)
        seq = journal_last_seq_locked(j->journal);
    /* A job with no records since the last drop has nothing to drop: the
     * journal's other records are not walked for it. */
    int none = job->journal_seq == 0;
    journal_unlock(j->journal);
    if (none)
        return;
    blocking_may_block(); /* the compaction copies the journal and fsyncs it */
    if (journal_compact(j->journal, job->name, seq) < 0)
        return;
    lock_journal(j);
    if (job->journal_seq <= seq)
        job->journal_seq = 0;
    journal_unlock(j->journal);
}

/* After an upload of s3://<lz>/key that holds the journal's changes up to
 * seq: they give way to the uploaded object as the base of the changes made
 * since. With none made since, the job's records go, unless `keep`: the
 * next mount would not load that object back, so the journal keeps it as
 * the job's base. */
static void journal_drop_upload(struct jobs *j, struct job *job, uint64_t seq,
                                const char *key, int keep)
{
    char *copy = strdup(key);
    if (!copy)
        return; /* the records stay: replay gives the same state */
    lock_journal(j);
    int none = job->journal_seq == 0;
    if (none) { /* unchanged since its base: the upload holds the same state */
        free(job->base_key);
        job->base_key = copy;
        job->base_bucket = j->lz_bucket;
    }
    journal_unlock(j->journal);
    if (none)
        return;
    struct journal_record base = {.op = JOURNAL_BASE, .job = job->name,
                                  .bucket = j->lz_bucket, .key = key};
    uint64_t base_seq = 0;
    blocking_may_block(); /* the compaction copies the journal and fsyncs it */
    if (journal_compact_base(j->journal, job->name, seq, &base, keep, &base_seq) < 0) {
        free(copy);
        return;
    }
    lock_journal(j);
    if (job->journal_seq <= seq) { /* nothing changed since the snapshot */
        job->journal_seq = base_seq;
        if (!base_seq) {
            free(job->base_key);
            job->base_key = copy;
            job->base_bucket = j->lz_bucket;
            copy = NULL;
        }
    }
    journal_unlock(j->journal);
    free(copy);
}

/* Would the next mount's get_or_create load back the object just uploaded
 * (kind, upload_date `date`, s3://<lz>/key), as far as this mount knows the
 * store? A running object with --resume-from=completed counts as loaded
 * back: where such a job starts is --resume-from's choice. Equal
 * upload_dates are decided by LastModified, which the listing gives in whole
 * seconds on S3: only completed over running is sure then. */
static int loads_back(struct jobs *j, struct job *job, enum upload_kind kind,
                      const char *date, const char *key)
{
    if (kind == UPLOAD_RUNNING && !j->layout.resume_running)
        return 1;
    for (int i = 0; i < 3; i++) {
        const struct candidate *o = &job->known[i];
        if (!o->key || i == 1 + (int)kind)
            continue;
        if (o->kind == UPLOAD_RUNNING && !j->layout.resume_running)
            continue;
        if (strcmp(o->bucket, j->lz_bucket) == 0 && strcmp(o->key, key) == 0)
            continue; /* the very object: overwritten by this upload */
        int c = layout_date_cmp(o->upload_date, date);
        if (c > 0 || (c == 0 && !(kind == UPLOAD_COMPLETED && o->kind == UPLOAD_RUNNING)))
            return 0;
    }
    return 1;
}

int jobs_get(struct jobs *j, const char *name, int create, struct job **out)
{
    *out = jobs_find_loaded(j, name);
    if (*out)
        return create ? -EEXIST : 0;
    blocking_may_block(); /* the store, or another thread's load of it */

    /* One load at a time: a second thread asking for the same job waits
     * and then finds it in the table. */
    pthread_mutex_lock(&j->load_lock);
    *out = jobs_find_loaded(j, name);
    if (*out) {
        pthread_mutex_unlock(&j->load_lock);
        return create ? -EEXIST : 0;
    }
    struct job *job = NULL;
    size_t journaled = j->journal ? journal_count(j->journal, name) : 0;
    struct first_rec base = {0};
    int rc = journaled ? journal_last_base(j->journal, name, first_cb, &base) : 0;
    int replay = journaled > 0;
    if (rc == 0 && base.is_base && base_only_running(j, name, &base)) {
        /* Kept for --resume-from=running, which this mount does not use:
         * without local changes, where the job starts is its choice. The
         * job's first change journals the base it starts from after it. */
        first_clear(&base);
        replay = 0;
    }
    if (rc == 0 && base.is_base)
        rc = load_from_base(j, name, &base, &job);
    else if (rc == 0)
        rc = load_from_store(j, name, &job);
    uint64_t after = base.seq;
    first_clear(&base);
    int existed = job != NULL || journaled > 0;
    if (rc == 0 && !existed && !create) {
        pthread_mutex_unlock(&j->load_lock);
        return -ENOENT;
    }
    if (rc == 0 && !job && !(job = job_new(name)))
        rc = -ENOMEM;
    if (rc == 0 && replay && (rc = replay_job(j, job, after)) < 0) {
        job_destroy(job);
        job = NULL;
    }
    if (rc == 0) {
        pthread_mutex_lock(&j->lock);
        rc = strmap_put(j->table, name, job, NULL);
        if (rc == 0)
            job->refs++; /* the caller's */
        pthread_mutex_unlock(&j->lock);
        if (rc < 0)
            job_destroy(job);
        else
            *out = job;
    }
    pthread_mutex_unlock(&j->load_lock);
    if (rc == 0 && create && existed)
        return -EEXIST;
    return rc;
}

int jobs_forget(struct jobs *j, const char *name)
{
    struct job *job = jobs_find_loaded(j, name);
    if (!job)
        return -ENOENT;
    /* A fenced job's local changes are dropped by rmdir (README, "Leases"). */
    int fenced = j->leases && lease_fenced(j->leases, name);
    pthread_mutex_lock(&job->lock);
    int busy = state_count(job->state) > 0 || strmap_count(job->scratch) > 0 ||
               strmap_count(job->pending) > 0;
    if (fenced && strmap_count(job->pending) == 0)
        busy = 0;
    pthread_mutex_unlock(&job->lock);
    int rc = -ENOTEMPTY;
    if (!busy) {
        pthread_mutex_lock(&j->lock);
        if (strmap_get(j->table, name) == job) {
            strmap_remove(j->table, name);
            job->refs--; /* the table's; ours remains */
        }
        pthread_mutex_unlock(&j->lock);
        /* Forgotten locally: its journal entries go too, so it does not
         * come back at the next mount other than from the store. */
        journal_drop(j, job, 0);
        if (fenced) {
            log_warn("job '%s': its local changes, fenced, are dropped", name);
            lease_forget(j->leases, name);
        } else if (j->leases) {
            lease_release(j->leases, name);
        }
        rc = 0;
    }
    jobs_unref(j, job);
    return rc;
}

static int add_loaded(const char *key, void *value, void *arg)
{
    (void)value;
    json_object_set_new(arg, key, json_true());
    return 0;
}

static int add_journaled(const char *key, size_t n, void *arg)
{
    (void)n;
    json_object_set_new(arg, key, json_true());
    return 0;
}

int jobs_list_names(struct jobs *j, json_t **out)
{
    blocking_may_block(); /* lists the store */
    json_t *seen = json_object();
    if (!seen)
        return -ENOMEM;
    pthread_mutex_lock(&j->lock);
    strmap_each(j->table, add_loaded, seen);
    pthread_mutex_unlock(&j->lock);
    if (j->journal)
        journal_jobs(j->journal, add_journaled, seen);

    /* The store's names count only when its listings end well. */
    json_t *stored = json_object();
    struct store_error e = {0};
    int rc = stored ? index_job_names(j->index, stored, &e) : -ENOMEM;
    char why[WHY_MAX];
    if (rc < 0)
        log_warn("listing jobs in the store failed (%s); showing loaded jobs only",
                 rc == -ENOMEM ? strerror(ENOMEM) : why_text(&e, why));
    else if (json_object_update(seen, stored) != 0)
        log_warn("listing jobs: out of memory; showing loaded jobs only");
    json_decref(stored);

    json_t *names = json_array();
    const char *k;
    json_t *v;
    if (names)
        json_object_foreach(seen, k, v) json_array_append_new(names, json_string(k));
    json_decref(seen);
    *out = names;
    return names ? 0 : -ENOMEM;
}

int jobs_key_moved(struct job *job, const char *key)
{
    int64_t *until = malloc(sizeof *until);
    if (!until)
        return -ENOMEM;
    *until = clock_mono_ms() + MOVED_WAIT_MS;
    void *old = NULL;
    pthread_mutex_lock(&job->lock);
    int rc = strmap_put(job->moved, key, until, &old);
    job->moved_gen++;
    pthread_mutex_unlock(&job->lock);
    if (rc < 0)
        free(until);
    free(old);
    return rc;
}

void jobs_key_written(struct job *job, const char *key)
{
    pthread_mutex_lock(&job->lock);
    clock_gettime(CLOCK_REALTIME, &job->mtime);
    if (strmap_count(job->moved) > 0) {
        free(strmap_remove(job->moved, key));
        pthread_cond_broadcast(&job->moved_cond);
    }
    pthread_mutex_unlock(&job->lock);
}

struct moved_scan {
    int64_t now, soonest;
    char expired[256]; /* a key whose time is up, or "" */
};

static int scan_moved(const char *key, void *value, void *arg)
{
    struct moved_scan *ms = arg;
    int64_t until = *(int64_t *)value;
    if (until <= ms->now) {
        snprintf(ms->expired, sizeof ms->expired, "%s", key);
        return 1;
    }
    if (ms->soonest == 0 || until < ms->soonest)
        ms->soonest = until;
    return 0;
}

/* Waits until no key of the job is moved away: each is written again, or
 * its time is up (then it stays away: `mv key key.bak`). Caller holds no
 * lock. Returns the count of moves so far, for moved_since. */
static uint64_t wait_moved(struct job *job)
{
    pthread_mutex_lock(&job->lock);
    while (strmap_count(job->moved) > 0) {
        struct moved_scan ms = {.now = clock_mono_ms()};
        if (strmap_each(job->moved, scan_moved, &ms)) {
            free(strmap_remove(job->moved, ms.expired));
            continue;
        }
        struct timespec ts = {.tv_sec = (time_t)(ms.soonest / 1000),
                              .tv_nsec = (long)(ms.soonest % 1000) * 1000000};
        pthread_cond_timedwait(&job->moved_cond, &job->lock, &ts);
    }
    uint64_t gen = job->moved_gen;
    pthread_mutex_unlock(&job->lock);
    return gen;
}

/* Was a key moved away since wait_moved returned gen? A move is counted
 * before the key leaves the state, so a snapshot taken after wait_moved
 * and before this check lacks no moved key unless this says so. */
static int moved_since(struct job *job, uint64_t gen)
{
    pthread_mutex_lock(&job->lock);
    int moved = job->moved_gen != gen;
    pthread_mutex_unlock(&job->lock);
    return moved;
}

void jobs_touch(struct job *job)
{
    pthread_mutex_lock(&job->lock);
    clock_gettime(CLOCK_REALTIME, &job->mtime);
    pthread_mutex_unlock(&job->lock);
}

/* A failed upload, for .status: its message and the store's error whole
 * when there is one (README, "Observability"). */
static void record_error(struct jobs *j, const struct store_error *e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void record_error(struct jobs *j, const struct store_error *e, const char *fmt, ...)
{
    pthread_mutex_lock(&j->lock);
    j->stats.uploads_failed++;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->stats.last_error, sizeof j->stats.last_error, fmt, ap);
    va_end(ap);
    j->stats.last_error_time = time(NULL);
    j->stats.last_refused = 0;
    if (e)
        j->stats.last_store_error = *e;
    else
        memset(&j->stats.last_store_error, 0, sizeof j->stats.last_store_error);
    pthread_mutex_unlock(&j->lock);
}

void jobs_note_refused(struct jobs *j, const char *job, const char *key,
                       const char *reason)
{
    struct jobs_stats *st = &j->stats;
    pthread_mutex_lock(&j->lock);
    st->values_refused++;
    snprintf(st->last_error, sizeof st->last_error,
             "job '%s' key '%s': not one JSON value (%s); old value kept", job, key,
             reason);
    st->last_error_time = time(NULL);
    st->last_refused = 1;
    snprintf(st->refused_job, sizeof st->refused_job, "%s", job);
    snprintf(st->refused_key, sizeof st->refused_key, "%s", key);
    snprintf(st->refused_reason, sizeof st->refused_reason, "%s", reason);
    pthread_mutex_unlock(&j->lock);
    metrics_refused(job, strcmp(key, ".state.json") == 0 &&
                                 strcmp(reason, STATE_NOT_AN_OBJECT) == 0
                             ? METRICS_REFUSED_NOT_OBJECT
                             : METRICS_REFUSED_INVALID_JSON);
}

/* A read-out file's text: doc (stolen) indented, plus a newline. */
static char *readout_text(json_t *doc, size_t *len)
{
    if (!doc)
        return NULL;
    char *text = json_dumps(doc, JSON_INDENT(2));
    json_decref(doc);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    char *out = realloc(text, n + 2);
    if (!out) {
        free(text);
        return NULL;
    }
    out[n] = '\n';
    out[n + 1] = '\0';
    *len = n + 1;
    return out;
}

/* Amorphic reload datasets start processing when an empty _SUCCESS object
 * appears beside the data: put one next to the completed state object. */
static int put_success_trigger(struct jobs *j, struct job *job, const char *state_key)
{
    const char *slash = strrchr(state_key, '/');
    size_t dir = slash ? (size_t)(slash - state_key) + 1 : 0;
    char *key = malloc(dir + sizeof "_SUCCESS");
    if (!key)
        return -ENOMEM;
    memcpy(key, state_key, dir);
    memcpy(key + dir, "_SUCCESS", sizeof "_SUCCESS");
    struct store_put_result res = {0};
    struct store_error e;
    char w[STORE_LOCATION_MAX];
    int rc = store_put(j->store, j->lz_bucket, key, "", 0, &res, &e);
    if (rc == 0) {
        pthread_mutex_lock(&j->lock);
        j->stats.retries += res.attempts > 1 ? (uint64_t)res.attempts - 1 : 0;
        pthread_mutex_unlock(&j->lock);
        log_info("job '%s': success trigger uploaded %s (%d attempts)", job->name,
                 where(j, j->lz_bucket, key, w), res.attempts);
    } else {
        char why[WHY_MAX];
        log_error("job '%s': success trigger %s failed: %s", job->name,
                  where(j, j->lz_bucket, key, w), why_text(&e, why));
        record_error(j, &e, "success trigger of job '%s' failed: %s", job->name, why);
        if (rc != -EACCES && rc != -ETIMEDOUT && rc != -ENOMEM)
            rc = -EIO;
    }
    free(key);
    return rc;
}

static int add_name(const char *key, void *value, void *arg)
{
    (void)value;
    return json_array_append_new(arg, json_string(key)) ? -ENOMEM : 0;
}

size_t jobs_loaded_count(struct jobs *j)
{
    pthread_mutex_lock(&j->lock);
    size_t n = strmap_count(j->table);
    pthread_mutex_unlock(&j->lock);
    return n;
}

char *jobs_status_text(struct jobs *j, size_t *len)
{
    json_t *names = json_array();
    if (!names)
        return NULL;
    pthread_mutex_lock(&j->lock);
    strmap_each(j->table, add_name, names);
    struct jobs_stats st = j->stats;
    pthread_mutex_unlock(&j->lock);
    char mounted[64], when[64];
    iso_time((int64_t)j->mounted.tv_sec * 1000 + j->mounted.tv_nsec / 1000000, mounted);
    json_t *last_error = json_null();
    if (st.last_error_time) {
        iso_time((int64_t)st.last_error_time * 1000, when);
        const struct store_error *se = &st.last_store_error;
        last_error = st.last_refused
                         ? json_pack("{s:s, s:s, s:s, s:s, s:s}", "message", st.last_error,
                                     "time", when, "job", st.refused_job, "key",
                                     st.refused_key, "reason", st.refused_reason)
                         : json_pack("{s:s, s:s, s:s, s:s, s:s}", "message",
                                     st.last_error, "time", when, "code", se->code,
                                     "request_id", se->request_id, "store_message",
                                     se->message);
    }
    json_t *doc = json_pack(
        "{s:s, s:s, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}, s:I, s:o,"
        " s:{s:I, s:I, s:I, s:I}, s:o}",
        "version", BOOKMARKFS_VERSION, "mounted", mounted,
        "store", "kind", j->store->kind, "lz_bucket", j->lz_bucket, "dlz_bucket",
        j->dlz_bucket, "domain", j->layout.domain, "dataset", j->layout.dataset, "user",
        j->layout.user, "file_type", j->layout.file_type, "resume_from",
        j->layout.resume_running ? "running" : "completed",
        "jobs_loaded", (json_int_t)json_array_size(names), "jobs", names,
        "uploads", "done", (json_int_t)st.uploads_ok, "failed",
        (json_int_t)st.uploads_failed, "bytes", (json_int_t)st.bytes_uploaded,
        "retries", (json_int_t)st.retries,
        "last_error", last_error);
    if (doc && json_object_set_new(doc, "values_refused",
                                   json_integer((json_int_t)st.values_refused)) < 0) {
        json_decref(doc);
        doc = NULL;
    }
    if (doc)
        json_object_set_new(doc, "index", index_stats(j->index));
    if (doc) {
        json_t *leases = j->leases ? leases_status(j->leases) : json_object();
        if (leases)
            json_object_set_new(leases, "mode",
                                json_string(j->lease_mode ? j->lease_mode : "off"));
        json_object_set_new(doc, "leases", leases ? leases : json_null());
    }
    return readout_text(doc, len);
}

/* Did this mount upload the object with this ETag (its last upload of
 * either kind)? Job lock held. */
static int uploaded_here(struct job *job, const char *etag)
{
    for (int k = 0; k < 2; k++) {
        const char *e = json_string_value(json_object_get(job->last_upload[k], "etag"));
        if (e && etag[0] && strcmp(e, etag) == 0)
            return 1;
    }
    return 0;
}

/* README, "Leases": a new holder starts from the newest state. Called when
 * this mount just took the job's lease and has no local changes to it:
 * the store's newest candidate is read, and unless it is the object this
 * mount's state came from or went to (by ETag; a listing's whole seconds
 * cannot tell two writes of one key apart) or older than it, the job is
 * loaded from it again. */
static int reload_if_newer(struct jobs *j, struct job *job)
{
    struct candidate best = {0};
    int found = 0;
    int rc = find_newest(j, job->name, &best, &found);
    if (rc < 0 || !found)
        return rc;
    long long date = strtoll(best.upload_date, NULL, 10);
    char *body = NULL;
    size_t len = 0;
    struct store_get_info info;
    struct store_error e;
    char w[STORE_LOCATION_MAX];
    rc = store_get_info(j->store, best.bucket, best.key, &body, &len, &info, &e);
    if (rc < 0) {
        char why[WHY_MAX];
        log_error("job '%s': reading %s failed: %s", job->name,
                  where(j, best.bucket, best.key, w), why_text(&e, why));
        layout_candidate_clear(&best);
        return rc == -ENOMEM ? rc : -EIO;
    }
    pthread_mutex_lock(&job->lock);
    int current = (job->lease_etag[0] && strcmp(info.etag, job->lease_etag) == 0) ||
                  date < job->lease_date || uploaded_here(job, info.etag);
    pthread_mutex_unlock(&job->lock);
    char *key = current ? NULL : strdup(best.key);
    if (current || !key) {
        free(body);
        layout_candidate_clear(&best);
        return current ? 0 : -ENOMEM;
    }
    if (len > LARGE_TEXT)
        blocking_may_block(); /* a long parse */
    char why[160] = "";
    /* The state is replaced, and the job's base moved to the object, in one
     * hold of the journal lock, which every key change takes: a change this
     * mount made since the claim began (a writer whose open came before the
     * last release) is never replaced, and a change after it journals the
     * new base first. */
    uint64_t upto = 0;
    int had_records = 0, changed = 0;
    if (j->journal) {
        lock_journal(j);
        changed = journal_changes_locked(j->journal, job->name) > 0;
    }
    rc = changed ? 0 : state_from_bytes(job->state, body, len, why, sizeof why);
    if (rc == 0 && !changed && j->journal) {
        upto = journal_last_seq_locked(j->journal);
        had_records = job->journal_seq != 0;
        job->journal_seq = 0; /* the next change journals the new base first */
        free(job->base_key);
        job->base_key = key;
        job->base_bucket = our_bucket(j, best.bucket);
        key = NULL;
    }
    if (j->journal)
        journal_unlock(j->journal);
    free(body);
    if (changed) {
        log_warn("job '%s': changed in this mount while its lease was taken; it keeps "
                 "this mount's state over %s", job->name, where(j, best.bucket, best.key, w));
        free(key);
        layout_candidate_clear(&best);
        return 0;
    }
    if (rc < 0) {
        log_error("job '%s': %s is not a JSON object (%s); the job keeps this "
                  "mount's state", job->name, where(j, best.bucket, best.key, w), why);
        free(key);
        layout_candidate_clear(&best);
        return rc == -ENOMEM ? rc : -EIO;
    }
    char when[64];
    iso_time(best.last_modified_ms, when);
    json_t *loaded = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I}", "bucket", best.bucket,
                               "key", best.key, "kind",
                               best.kind == UPLOAD_COMPLETED ? "completed" : "running",
                               "last_modified", when, "bytes", (json_int_t)len, "keys",
                               (json_int_t)state_count(job->state));
    pthread_mutex_lock(&job->lock);
    if (loaded) {
        json_decref(job->loaded);
        job->loaded = loaded;
    }
    snprintf(job->lease_etag, sizeof job->lease_etag, "%s", info.etag);
    job->lease_date = date;
    pthread_mutex_unlock(&job->lock);
    log_info("job '%s': the store holds a newer state than this mount's: reloaded %zu "
             "keys from %s", job->name, state_count(job->state),
             where(j, best.bucket, best.key, w));
    /* The reloaded object is the job's base now; a base the journal kept
     * for the job gives way (should the compaction fail, the new base a
     * later change journals comes after it, and the last base counts). */
    if (had_records) {
        blocking_may_block(); /* the compaction copies the journal and fsyncs it */
        journal_compact(j->journal, job->name, upto);
    }
    if (!j->journal) {
        free(job->base_key);
        job->base_key = key;
        job->base_bucket = our_bucket(j, best.bucket);
    }
    pthread_mutex_lock(&job->upload_lock);
    layout_candidate_clear(&job->known[0]);
    job->known[0] = best; /* taken */
    pthread_mutex_unlock(&job->upload_lock);
    return 0;
}

static int claim_locked(struct jobs *j, struct job *job);

/* One claim at a time per job: a change that finds the lease held also
 * finds done the reload that taking it implied. */
int jobs_claim(struct jobs *j, struct job *job)
{
    if (!j->leases)
        return 0;
    if (pthread_mutex_trylock(&job->claim_lock) != 0) {
        blocking_may_block(); /* another thread is taking the lease */
        pthread_mutex_lock(&job->claim_lock);
    }
    int rc = claim_locked(j, job);
    pthread_mutex_unlock(&job->claim_lock);
    return rc;
}

static int claim_locked(struct jobs *j, struct job *job)
{
    if (lease_held(j->leases, job->name))
        return 0;
    blocking_may_block(); /* the store */
    int local = j->journal && journal_changes(j->journal, job->name) > 0;
    int taken = 0;
    char who[1400] = "";
    int rc = lease_acquire(j->leases, job->name, local, &taken, who, sizeof who);
    if (rc == 0 && taken && !local)
        rc = reload_if_newer(j, job);
    if (rc == -EBUSY) {
        record_error(j, NULL, "job '%s' is held by another mount: %s", job->name, who);
    } else if (rc == -ESTALE) {
        log_error("job '%s': this mount's lease was taken over by %s while the job had "
                  "local changes; they stay in the journal and are not uploaded (rmdir "
                  "the job to drop them; README, \"Leases\")", job->name, who);
        record_error(j, NULL, "job '%s' was taken over while it had local changes: %s",
                     job->name, who);
        rc = -EBUSY;
    } else if (rc < 0) {
        log_error("job '%s': the lease could not be taken: %s", job->name, who);
        record_error(j, NULL, "the lease of job '%s' could not be taken: %s", job->name,
                     who);
        if (rc != -EACCES && rc != -ETIMEDOUT && rc != -ENOMEM && rc != -ENOSPC)
            rc = -EIO;
    }
    return rc;
}

static int base_key_cb(const struct journal_record *rec, void *arg)
{
    const char *const *want = arg; /* bucket, key */
    return rec->bucket && rec->key && strcmp(rec->bucket, want[0]) == 0 &&
           strcmp(rec->key, want[1]) == 0;
}

static int sleep_to_next_second(void)
{
    int64_t ms = now_ms();
    int64_t wait = 1000 - ms % 1000 + 1;
    struct timespec ts = {.tv_sec = (time_t)(wait / 1000),
                          .tv_nsec = (long)(wait % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        if (errno != EINTR)
            return -errno;
    return 0;
}

/* Is the last base of the job's records the object s3://<lz>/key? */
static int base_is(struct jobs *j, struct job *job, const char *key)
{
    const char *want[2] = {j->lz_bucket, key};
    return journal_last_base(j->journal, job->name, base_key_cb, (void *)want) != 0;
}

/* A stored snapshot (jobs_upload): the read-out, the stats and the log line;
 * the journal's changes it holds dropped; for completed, the success
 * trigger and the lease's release. 0 or the trigger's error. Caller holds
 * job->upload_lock. */
static int upload_done(struct jobs *j, struct job *job, enum upload_kind kind,
                       const char *key, size_t len, int64_t wall, long ms,
                       const struct store_put_result *res, uint64_t upto)
{
    const char *kname = kind == UPLOAD_COMPLETED ? "completed" : "running";
    char w[STORE_LOCATION_MAX];
    int rc = 0;
    char when[64];
    iso_time(wall, when);
    json_t *info = json_pack("{s:s, s:s, s:I, s:s, s:s, s:I, s:i, s:I}", "bucket",
                             j->lz_bucket, "key", key, "bytes", (json_int_t)len,
                             "etag", res->etag, "time", when, "epoch",
                             (json_int_t)(wall / 1000), "attempts", res->attempts,
                             "keys", (json_int_t)state_count(job->state));
    pthread_mutex_lock(&job->lock);
    if (info) {
        json_decref(job->last_upload[kind]);
        job->last_upload[kind] = info;
    }
    snprintf(job->lease_etag, sizeof job->lease_etag, "%s", res->etag);
    job->lease_date = wall / 1000;
    pthread_mutex_unlock(&job->lock);
    pthread_mutex_lock(&j->lock);
    j->stats.uploads_ok++;
    j->stats.bytes_uploaded += len;
    j->stats.retries += res->attempts > 1 ? (uint64_t)res->attempts - 1 : 0;
    pthread_mutex_unlock(&j->lock);
    log_info("job '%s': %s uploaded %s (%zu bytes, %ld ms, %d attempts)", job->name,
             kname, where(j, j->lz_bucket, key, w), len, ms, res->attempts);
    /* The snapshot is in the store: it becomes the base of the changes
     * made since, and with none made since, the job's entries go where
     * the next mount loads this object back (which one a job without
     * local changes starts from is --resume-from's choice, as with the
     * seed's StateStore). */
    if (j->journal) {
        char date[24];
        snprintf(date, sizeof date, "%lld", (long long)(wall / 1000));
        struct candidate *mine = &job->known[1 + kind];
        layout_candidate_clear(mine);
        mine->bucket = strdup(j->lz_bucket);
        mine->key = strdup(key);
        mine->upload_date = strdup(date);
        mine->kind = kind;
        if (!mine->bucket || !mine->key || !mine->upload_date)
            layout_candidate_clear(mine); /* then it is not known */
        journal_drop_upload(j, job, upto, key, !loads_back(j, job, kind, date, key));
    }
    if (kind == UPLOAD_COMPLETED && j->success_trigger)
        rc = put_success_trigger(j, job, key);
    if (kind == UPLOAD_COMPLETED && j->leases)
        lease_release(j->leases, job->name); /* the run ended */
    return rc;
}

/* A failed upload (jobs_upload): logged once, with the store's error, and
 * kept for .status (README, "Observability"). The errno the writer sees. */
static int upload_failed(struct jobs *j, struct job *job, enum upload_kind kind,
                         const char *key, long ms, int rc, const struct store_error *err)
{
    const char *kname = kind == UPLOAD_COMPLETED ? "completed" : "running";
    char w[STORE_LOCATION_MAX];
    char why[WHY_MAX];
    log_error("job '%s': %s upload to %s failed after %ld ms: %s", job->name, kname,
              where(j, j->lz_bucket, key, w), ms, why_text(err, why));
    record_error(j, err, "upload of job '%s' failed: %s", job->name, why);
    if (rc != -EACCES && rc != -ETIMEDOUT && rc != -ENOMEM)
        rc = -EIO;
    return rc;
}

int jobs_upload(struct jobs *j, struct job *job, enum upload_kind kind)
{
    blocking_may_block();
again:;
    /* a tool's backup rename and its new write: one change */
    uint64_t moves = wait_moved(job);
    /* Fenced: a mount that lost the job's lease uploads nothing more. */
    int claimed = jobs_claim(j, job);
    if (claimed < 0)
        return claimed;
    pthread_mutex_lock(&job->upload_lock);
    int64_t started = clock_mono_ms();
    int64_t wall = 0;
    char *key = NULL, *body = NULL;
    size_t len = 0;
    uint64_t upto = 0; /* the journal position the snapshot includes */
    int rc = 0, appended = 0;
    for (int tries = 0;; tries++) {
        wall = now_ms();
        key = layout_upload_key(&j->layout, job->name, kind, wall / 1000);
        int over_base = j->journal && key && base_is(j, job, key);
        /* The snapshot and the journal position it includes, taken together. */
        if (j->journal)
            lock_journal(j);
        (void)state_to_bytes(job->state, &body, &len); /* NULL body: ENOMEM */
        if (j->journal) {
            /* The upload goes to the very object the job's records stand on
             * (a second upload of its kind in one second): once it is
             * overwritten, replaying the records on it would apply them
             * twice (a rename is not idempotent). So the snapshot itself
             * becomes their base first (README, "The local journal"). */
            if (key && body && job->journal_seq != 0 &&
                (over_base ||
                 (job->base_key && strcmp(job->base_bucket, j->lz_bucket) == 0 &&
                  strcmp(job->base_key, key) == 0))) {
                struct journal_record rec = {.op = JOURNAL_BASE, .job = job->name,
                                             .text = body, .text_len = len};
                if ((rc = journal_append_locked(j->journal, &rec)) < 0) {
                    rc = journal_error(rc);
                } else {
                    job->journal_seq = rec.seq;
                    appended = 1;
                }
            }
            upto = journal_last_seq_locked(j->journal);
            journal_unlock(j->journal);
        }
        if ((rc != -EIO && rc != -ENOSPC) || tries > 0)
            break;
        /* No room for it (a full disk): the next second's object is
         * another one, and the records' base stays as it is. */
        free(key);
        free(body);
        rc = sleep_to_next_second();
        if (rc < 0) {
            pthread_mutex_unlock(&job->upload_lock);
            return rc;
        }
    }
    if (!key || !body || rc < 0) {
        free(key);
        free(body);
        pthread_mutex_unlock(&job->upload_lock);
        if (rc < 0)
            log_error("job '%s': the journal cannot take the state before an upload over "
                      "the object its changes stand on; nothing uploaded",
                      job->name);
        return rc < 0 ? rc : -ENOMEM;
    }
    if (moved_since(job, moves)) { /* the snapshot may lack a key a tool moved away */
        free(key);
        free(body);
        key = body = NULL;
        appended = 0; /* a base that was a state of the job: it may stay */
        pthread_mutex_unlock(&job->upload_lock);
        goto again;
    }
    if (appended && journal_sync(j->journal) < 0) { /* its power-loss promise */
        free(key);
        free(body);
        pthread_mutex_unlock(&job->upload_lock);
        return -EIO;
    }
    struct store_put_result res = {0};
    struct store_error e;
    rc = store_put(j->store, j->lz_bucket, key, body, len, &res, &e);
    long ms = (long)(clock_mono_ms() - started);
    metrics_upload(job->name, kind, rc, (double)(clock_mono_ms() - started) / 1000.0,
                   res.attempts, wall / 1000, len);
    if (rc == 0)
        rc = upload_done(j, job, kind, key, len, wall, ms, &res, upto);
    else
        rc = upload_failed(j, job, kind, key, ms, rc, &e);
    free(key);
    free(body);
    pthread_mutex_unlock(&job->upload_lock);
    return rc;
}

char *jobs_readout_text(struct jobs *j, struct job *job, size_t *len)
{
    json_t *lease = j->leases ? lease_info(j->leases, job->name) : json_null();
    pthread_mutex_lock(&job->lock);
    json_t *doc = json_pack("{s:s, s:{s:O, s:O}, s:O, s:o}", "job", job->name,
                            "last_upload", "running", job->last_upload[UPLOAD_RUNNING],
                            "completed", job->last_upload[UPLOAD_COMPLETED], "loaded",
                            job->loaded, "lease", lease);
    pthread_mutex_unlock(&job->lock);
    return readout_text(doc, len);
}
