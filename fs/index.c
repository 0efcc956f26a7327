/* The listing index (fs/index.h). Object keys of the layout sort by time
 * (the upload_date=<epoch> segment comes right after the dataset prefix),
 * so what was uploaded since the last listing is what sorts after the
 * newest key seen. Each bucket keeps, for every "run" of such keys (the
 * key up to and including "upload_date=": "<domain>/<dataset>/upload_date="
 * where the layout uploads, and whatever else a full listing found, such
 * as a DLZ partition "<domain>/<dataset>/schema=v1/upload_date="), the
 * greatest key seen, and lists after it; the upload dates of the last
 * --relist-window seconds before the previous listing are listed again. The jobs are kept by name with the newest candidate of each. */
#include "fs/index.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"
#include "util/strmap.h"
#include "util/vec.h"

/* More runs than this in a bucket: it is listed in full at each refresh
 * (each run would cost a listing of its own). */
#define RUNS_MAX 16

struct ix_run {
    char *prefix; /* listing prefix, ends with "upload_date=" */
    char *mark;   /* greatest key listed under it; NULL: none yet */
};

struct ix_bucket {
    const char *name;
    struct ix_run *runs;
    size_t nruns, cap;
    int64_t listed_at; /* wall clock (s) at the start of its last listing; 0: never */
};

struct ix_job {
    struct candidate best;
    int has_best;
};

struct index {
    struct store *store;
    const struct layout *layout;
    pthread_mutex_t lock;
    int built;
    struct ix_bucket b[2];
    int nb;
    struct strmap *jobs; /* name -> struct ix_job */
    uint64_t full_listings, listings, objects_listed, history_listings;
    char *gone;         /* "<bucket>/<key>" that made the last rebuild */
    int64_t window_s;
};

static void ix_job_free(void *p)
{
    struct ix_job *e = p;
    if (e) {
        layout_candidate_clear(&e->best);
        free(e);
    }
}

static void runs_clear(struct ix_bucket *b)
{
    for (size_t i = 0; i < b->nruns; i++) {
        free(b->runs[i].prefix);
        free(b->runs[i].mark);
    }
    b->nruns = 0;
    b->listed_at = 0;
}

/* The mark of the run `prefix` (plen bytes), added when new: at least
 * key. Returns the run's position, or -ENOMEM. */
static int run_note(struct ix_bucket *b, const char *prefix, size_t plen, const char *key)
{
    size_t i = 0;
    while (i < b->nruns &&
           !(strlen(b->runs[i].prefix) == plen && memcmp(b->runs[i].prefix, prefix, plen) == 0))
        i++;
    if (i == b->nruns) {
        if (vec_reserve(&b->runs, &b->cap, b->nruns + 1, sizeof *b->runs, 4) != 0)
            return -ENOMEM;
        char *p = strndup(prefix, plen);
        if (!p)
            return -ENOMEM;
        b->runs[i] = (struct ix_run){.prefix = p, .mark = NULL};
        b->nruns++;
    }
    struct ix_run *r = &b->runs[i];
    if (key && (!r->mark || strcmp(key, r->mark) > 0)) {
        char *m = strdup(key);
        if (!m)
            return -ENOMEM;
        free(r->mark);
        r->mark = m;
    }
    return (int)i;
}

/* The run every upload of the layout goes to: always listed, so that the
 * first objects of an empty dataset are found too. */
static int add_upload_run(struct index *ix, struct ix_bucket *b)
{
    char *p;
    if (asprintf(&p, "%s/%s/upload_date=", ix->layout->domain, ix->layout->dataset) < 0)
        return -ENOMEM;
    int rc = run_note(b, p, strlen(p), NULL);
    free(p);
    return rc < 0 ? rc : 0;
}

struct index *index_new(struct store *store, const struct layout *layout,
                        const char *lz_bucket, const char *dlz_bucket)
{
    struct index *ix = calloc(1, sizeof *ix);
    if (!ix)
        return NULL;
    ix->store = store;
    ix->layout = layout;
    ix->b[0].name = dlz_bucket;
    ix->b[1].name = lz_bucket;
    ix->nb = strcmp(lz_bucket, dlz_bucket) == 0 ? 1 : 2;
    ix->window_s = 900;
    if (strmap_new(&ix->jobs) < 0 || pthread_mutex_init(&ix->lock, NULL) != 0) {
        strmap_free(ix->jobs, NULL);
        free(ix);
        return NULL;
    }
    return ix;
}

void index_set_window(struct index *ix, long seconds)
{
    pthread_mutex_lock(&ix->lock);
    ix->window_s = seconds;
    pthread_mutex_unlock(&ix->lock);
}

void index_free(struct index *ix)
{
    if (!ix)
        return;
    for (int i = 0; i < 2; i++) {
        runs_clear(&ix->b[i]);
        free(ix->b[i].runs);
    }
    strmap_free(ix->jobs, ix_job_free);
    pthread_mutex_destroy(&ix->lock);
    free(ix->gone);
    free(ix);
}

struct ingest {
    struct index *ix;
    struct ix_bucket *b;
    int run; /* the run being listed, -1: a full listing */
};

static int ingest_cb(const struct store_object *obj, void *arg)
{
    struct ingest *g = arg;
    struct index *ix = g->ix;
    ix->objects_listed++;
    if (g->run >= 0) {
        struct ix_run *r = &g->b->runs[g->run];
        int rc = run_note(g->b, r->prefix, strlen(r->prefix), obj->key);
        if (rc < 0)
            return rc;
    }
    char *job = NULL;
    enum upload_kind kind;
    const char *date;
    size_t date_len;
    int m = layout_match(ix->layout, obj->key, 1, &job, &kind, &date, &date_len);
    if (m <= 0)
        return m;
    int rc = run_note(g->b, obj->key, (size_t)(date - obj->key), obj->key);
    struct ix_job *e = rc < 0 ? NULL : strmap_get(ix->jobs, job);
    if (rc >= 0 && !e) {
        e = calloc(1, sizeof *e);
        if (!e || (rc = strmap_put(ix->jobs, job, e, NULL)) < 0) {
            free(e);
            e = NULL;
            rc = -ENOMEM;
        }
    }
    free(job);
    if (rc < 0)
        return rc;
    if (kind != UPLOAD_COMPLETED && !ix->layout->resume_running)
        return 0; /* a job to list, not a candidate */
    struct candidate c = {
        .bucket = (char *)g->b->name,
        .key = obj->key,
        .upload_date = strndup(date, date_len),
        .last_modified_ms = obj->last_modified_ms,
        .kind = kind,
    };
    if (!c.upload_date)
        return -ENOMEM;
    if (e->has_best && layout_candidate_cmp(&c, &e->best) <= 0) {
        free(c.upload_date);
        return 0;
    }
    char *bucket = strdup(g->b->name), *key = strdup(obj->key);
    if (!bucket || !key) {
        free(bucket);
        free(key);
        free(c.upload_date);
        return -ENOMEM;
    }
    layout_candidate_clear(&e->best);
    e->best = c;
    e->best.bucket = bucket;
    e->best.key = key;
    e->has_best = 1;
    return 0;
}

static int64_t wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

static int list_full(struct index *ix, struct ix_bucket *b, struct store_error *err)
{
    char *prefix = layout_dataset_prefix(ix->layout);
    if (!prefix)
        return -ENOMEM;
    int64_t started = wall_s();
    struct ingest g = {.ix = ix, .b = b, .run = -1};
    ix->full_listings++;
    ix->listings++;
    int rc = store_list_all(ix->store, b->name, prefix, ingest_cb, &g, err);
    free(prefix);
    if (rc == 0)
        b->listed_at = started;
    return rc;
}

/* Lists what may be new in bucket b: after each run's mark, or from the
 * window before the previous listing when that is earlier. */
static int refresh_bucket(struct index *ix, struct ix_bucket *b, struct store_error *err)
{
    if (b->nruns > RUNS_MAX)
        return list_full(ix, b, err);
    int64_t started = wall_s();
    size_t n = b->nruns; /* runs a listing adds are listed next time */
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char *from = NULL;
        const char *mark = b->runs[i].mark;
        if (b->listed_at > 0) {
            if (asprintf(&from, "%s%" PRId64, b->runs[i].prefix,
                         b->listed_at - ix->window_s) < 0)
                return -ENOMEM;
            if (mark && strcmp(mark, from) < 0) {
                free(from);
                from = NULL;
            }
        }
        char *prefix = strdup(b->runs[i].prefix);
        char *after = from ? from : mark ? strdup(mark) : NULL;
        if (!prefix || (!after && (from || mark))) {
            free(prefix);
            free(after);
            return -ENOMEM;
        }
        struct ingest g = {.ix = ix, .b = b, .run = (int)i};
        ix->listings++;
        rc = store_list_from(ix->store, b->name, prefix, after, ingest_cb, &g, err);
        free(prefix);
        free(after);
    }
    if (rc == 0)
        b->listed_at = started;
    return rc;
}

static void reset_locked(struct index *ix)
{
    for (int i = 0; i < ix->nb; i++)
        runs_clear(&ix->b[i]);
    struct strmap *fresh;
    if (strmap_new(&fresh) == 0) {
        strmap_free(ix->jobs, ix_job_free);
        ix->jobs = fresh;
    }
    ix->built = 0;
}

static int build_locked(struct index *ix, struct store_error *err)
{
    int rc = 0;
    for (int i = 0; i < ix->nb && rc == 0; i++)
        if ((rc = add_upload_run(ix, &ix->b[i])) == 0)
            rc = list_full(ix, &ix->b[i], err);
    if (rc < 0) {
        reset_locked(ix);
        return rc;
    }
    ix->built = 1;
    return 0;
}

static int update_locked(struct index *ix, struct store_error *err)
{
    if (!ix->built)
        return build_locked(ix, err);
    int rc = 0;
    for (int i = 0; i < ix->nb && rc == 0; i++)
        rc = refresh_bucket(ix, &ix->b[i], err);
    return rc;
}

static int copy_best(const struct ix_job *e, struct candidate *out)
{
    memset(out, 0, sizeof *out);
    out->bucket = strdup(e->best.bucket);
    out->key = strdup(e->best.key);
    out->upload_date = strdup(e->best.upload_date);
    out->last_modified_ms = e->best.last_modified_ms;
    out->kind = e->best.kind;
    if (!out->bucket || !out->key || !out->upload_date) {
        layout_candidate_clear(out);
        return -ENOMEM;
    }
    return 1;
}

/* The start of every call that lists: err (may be NULL) tells nothing yet. */
static void untold(struct store_error *err)
{
    if (err)
        memset(err, 0, sizeof *err);
}

/* Its end: a failure the store did not tell (memory, say) is told with
 * rc's own words, so err always describes rc. */
static int told(int rc, struct store_error *err)
{
    if (err && rc < 0 && err->err == 0)
        store_fail(err, rc, "%s", strerror(-rc));
    return rc;
}

int index_newest(struct index *ix, const char *job, struct candidate *best,
                 struct store_error *err)
{
    untold(err);
    memset(best, 0, sizeof *best);
    pthread_mutex_lock(&ix->lock);
    int rc = update_locked(ix, err);
    if (rc == 0) {
        struct ix_job *e = strmap_get(ix->jobs, job);
        rc = e && e->has_best ? copy_best(e, best) : 0;
    }
    pthread_mutex_unlock(&ix->lock);
    return told(rc, err);
}

int index_has_job(struct index *ix, const char *job)
{
    pthread_mutex_lock(&ix->lock);
    int has = strmap_get(ix->jobs, job) != NULL;
    pthread_mutex_unlock(&ix->lock);
    return has;
}

int index_rebuild_gone(struct index *ix, const char *bucket, const char *key,
                       struct store_error *err)
{
    untold(err);
    char *gone;
    if (asprintf(&gone, "%s/%s", bucket, key) < 0)
        return told(-ENOMEM, err);
    pthread_mutex_lock(&ix->lock);
    int rc = 0;
    if (ix->built && ix->gone && strcmp(ix->gone, gone) == 0) {
        free(gone);
        rc = -EALREADY;
    } else {
        free(ix->gone);
        ix->gone = gone;
        reset_locked(ix);
        rc = build_locked(ix, err);
    }
    pthread_mutex_unlock(&ix->lock);
    return told(rc, err);
}

static int add_job_name(const char *name, void *value, void *arg)
{
    (void)value;
    /* A name with '/' or over 255 bytes cannot be a directory, a dot-name
     * is not a job in the mount; jansson refuses names that are not UTF-8.
     * Such objects are skipped. */
    if (!strchr(name, '/') && strlen(name) <= 255 && name[0] != '.')
        json_object_set_new(arg, name, json_true());
    return 0;
}

int index_job_names(struct index *ix, json_t *set, struct store_error *err)
{
    untold(err);
    pthread_mutex_lock(&ix->lock);
    int rc = update_locked(ix, err);
    if (rc == 0)
        strmap_each(ix->jobs, add_job_name, set);
    pthread_mutex_unlock(&ix->lock);
    return told(rc, err);
}

struct history_ctx {
    struct index *ix;
    const char *job;
    const char *bucket;
    struct index_object *v;
    size_t n, cap;
};

static int history_cb(const struct store_object *obj, void *arg)
{
    struct history_ctx *h = arg;
    char *job = NULL;
    enum upload_kind kind;
    const char *date;
    size_t date_len;
    int m = layout_match(h->ix->layout, obj->key, 1, &job, &kind, &date, &date_len);
    if (m <= 0)
        return m;
    int same = strcmp(job, h->job) == 0;
    free(job);
    if (!same)
        return 0;
    if (vec_reserve(&h->v, &h->cap, h->n + 1, sizeof *h->v, 16) != 0)
        return -ENOMEM;
    struct index_object *o = &h->v[h->n];
    memset(o, 0, sizeof *o);
    o->c.bucket = strdup(h->bucket);
    o->c.key = strdup(obj->key);
    o->c.upload_date = strndup(date, date_len);
    o->c.last_modified_ms = obj->last_modified_ms;
    o->c.kind = kind;
    o->size = obj->size;
    h->n++;
    return o->c.bucket && o->c.key && o->c.upload_date ? 0 : -ENOMEM;
}

static int object_cmp(const void *a, const void *b)
{
    const struct index_object *x = a, *y = b;
    return layout_candidate_cmp(&x->c, &y->c);
}

int index_history(struct index *ix, const char *job, struct index_object **out, size_t *n,
                  struct store_error *err)
{
    untold(err);
    *out = NULL;
    *n = 0;
    char *prefix = layout_dataset_prefix(ix->layout);
    if (!prefix)
        return told(-ENOMEM, err);
    struct history_ctx h = {.ix = ix, .job = job};
    int rc = 0;
    pthread_mutex_lock(&ix->lock);
    ix->history_listings++;
    pthread_mutex_unlock(&ix->lock);
    for (int i = 0; i < ix->nb && rc == 0; i++) {
        h.bucket = ix->b[i].name;
        rc = store_list_all(ix->store, h.bucket, prefix, history_cb, &h, err);
    }
    free(prefix);
    if (rc < 0) {
        index_objects_free(h.v, h.n);
        return told(rc, err);
    }
    if (h.n > 1)
        qsort(h.v, h.n, sizeof *h.v, object_cmp);
    *out = h.v;
    *n = h.n;
    return 0;
}

void index_objects_free(struct index_object *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        layout_candidate_clear(&v[i].c);
    free(v);
}

json_t *index_stats(struct index *ix)
{
    pthread_mutex_lock(&ix->lock);
    json_t *s = json_pack("{s:I, s:I, s:I, s:I, s:I}", "full_listings",
                          (json_int_t)ix->full_listings, "listings",
                          (json_int_t)ix->listings, "objects_listed",
                          (json_int_t)ix->objects_listed, "jobs",
                          (json_int_t)strmap_count(ix->jobs), "history_listings",
                          (json_int_t)ix->history_listings);
    pthread_mutex_unlock(&ix->lock);
    return s;
}
