/* The counters behind --metrics and their Prometheus text exposition
 * (README, "Metrics"). One process-wide set under one mutex: the calls
 * come from uploads and refused writes, never from the hot path of a key
 * write. */
#include "fs/metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/strmap.h"
#include "util/textbuf.h"

enum { FAIL_DENIED, FAIL_TIMEOUT, FAIL_ERROR, FAIL_COUNT };
static const char *const fail_names[FAIL_COUNT] = {"denied", "timeout", "error"};
static const char *const kind_names[2] = {"running", "completed"};
static const char *const refusal_names[METRICS_REFUSED_COUNT] = {
    "invalid_json", "not_an_object", "too_large", "journal",
};

/* Upper bounds of the latency histogram's buckets, seconds. */
static const double buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                 1, 2.5, 5, 10, 30, 60};
#define NBUCKETS (sizeof buckets / sizeof buckets[0])

struct job_metrics {
    int64_t last[2];          /* seconds since 1970 of the last upload; 0 none */
    uint64_t uploads[2];
    uint64_t failures[2][FAIL_COUNT];
    uint64_t refused[METRICS_REFUSED_COUNT];
};

struct histogram {
    uint64_t counts[NBUCKETS]; /* per bucket, not cumulative */
    uint64_t count;
    double sum;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct strmap *jobs;   /* name -> struct job_metrics */
static struct histogram latency[2];
static uint64_t retries, bytes, dropped;
static void (*gauges_fn)(struct metrics_gauges *, void *);
static void *gauges_arg;

/* The job's counters, created on first use. Caller holds lock. */
static struct job_metrics *job_get(const char *job)
{
    if (!jobs && strmap_new(&jobs) < 0) {
        dropped++;
        return NULL;
    }
    struct job_metrics *m = strmap_get(jobs, job);
    if (m)
        return m;
    m = calloc(1, sizeof *m);
    if (!m || strmap_put(jobs, job, m, NULL) < 0) {
        free(m);
        dropped++;
        return NULL;
    }
    return m;
}

void metrics_upload(const char *job, enum upload_kind kind, int rc, double seconds,
                    int attempts, int64_t epoch_s, size_t nbytes)
{
    pthread_mutex_lock(&lock);
    struct job_metrics *m = job_get(job);
    if (attempts > 1)
        retries += (uint64_t)attempts - 1;
    if (rc == 0) {
        bytes += nbytes;
        struct histogram *h = &latency[kind];
        size_t b = 0;
        while (b < NBUCKETS && seconds > buckets[b])
            b++;
        if (b < NBUCKETS)
            h->counts[b]++;
        h->count++;
        h->sum += seconds;
    }
    if (m) {
        if (rc == 0) {
            m->uploads[kind]++;
            if (epoch_s > m->last[kind])
                m->last[kind] = epoch_s;
        } else {
            m->failures[kind][rc == -EACCES      ? FAIL_DENIED
                              : rc == -ETIMEDOUT ? FAIL_TIMEOUT
                                                 : FAIL_ERROR]++;
        }
    }
    pthread_mutex_unlock(&lock);
}

void metrics_loaded(const char *job, enum upload_kind kind, int64_t epoch_s)
{
    pthread_mutex_lock(&lock);
    struct job_metrics *m = job_get(job);
    if (m && epoch_s > m->last[kind])
        m->last[kind] = epoch_s;
    pthread_mutex_unlock(&lock);
}

void metrics_refused(const char *job, enum metrics_refusal why)
{
    if ((unsigned)why >= METRICS_REFUSED_COUNT)
        return;
    pthread_mutex_lock(&lock);
    struct job_metrics *m = job_get(job);
    if (m)
        m->refused[why]++;
    pthread_mutex_unlock(&lock);
}

void metrics_set_gauges(void (*fn)(struct metrics_gauges *g, void *arg), void *arg)
{
    pthread_mutex_lock(&lock);
    gauges_fn = fn;
    gauges_arg = arg;
    pthread_mutex_unlock(&lock);
}

static void free_job(void *v)
{
    free(v);
}

void metrics_clear(void)
{
    pthread_mutex_lock(&lock);
    strmap_free(jobs, free_job);
    jobs = NULL;
    memset(latency, 0, sizeof latency);
    retries = bytes = dropped = 0;
    gauges_fn = NULL;
    gauges_arg = NULL;
    pthread_mutex_unlock(&lock);
}

/* ---- exposition */

struct out {
    struct textbuf b;
    int failed;
};

__attribute__((format(printf, 2, 3)))
static void put(struct out *o, const char *fmt, ...)
{
    if (o->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || textbuf_reserve(&o->b, (size_t)n) < 0) {
        o->failed = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(o->b.p + o->b.len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    o->b.len += (size_t)n;
}

/* A label value as the text format escapes it: \\, \" and \n. */
static void put_label_value(struct out *o, const char *s)
{
    for (; *s && !o->failed; s++) {
        const char *esc = *s == '\\' ? "\\\\" : *s == '"' ? "\\\"" : *s == '\n' ? "\\n" : NULL;
        if (esc)
            put(o, "%s", esc);
        else if (textbuf_put(s, 1, &o->b) < 0)
            o->failed = 1;
    }
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Per-job series: one pass over the jobs per family, so each family's
 * lines stay together as the format requires. */
enum series {
    S_LAST, S_AGE, S_UPLOADS, S_FAILURES, S_REFUSED,
};

struct each_arg {
    struct out *o;
    enum series which;
    int64_t now;
};

static void job_label(struct out *o, const char *name, const char *metric)
{
    put(o, "%s{etl_job=\"", metric);
    put_label_value(o, name);
    put(o, "\"");
}

static int each_job(const char *name, void *value, void *arg)
{
    struct each_arg *a = arg;
    struct job_metrics *m = value;
    struct out *o = a->o;
    for (int k = 0; k < 2; k++) {
        switch (a->which) {
        case S_LAST:
            if (m->last[k]) {
                job_label(o, name, "bookmarkfs_job_last_upload_timestamp_seconds");
                put(o, ",kind=\"%s\"} %" PRId64 "\n", kind_names[k], m->last[k]);
            }
            break;
        case S_AGE:
            if (m->last[k]) {
                job_label(o, name, "bookmarkfs_job_last_upload_age_seconds");
                put(o, ",kind=\"%s\"} %" PRId64 "\n", kind_names[k],
                    a->now > m->last[k] ? a->now - m->last[k] : 0);
            }
            break;
        case S_UPLOADS:
            job_label(o, name, "bookmarkfs_uploads_total");
            put(o, ",kind=\"%s\"} %" PRIu64 "\n", kind_names[k], m->uploads[k]);
            break;
        case S_FAILURES:
            for (int f = 0; f < FAIL_COUNT; f++) {
                job_label(o, name, "bookmarkfs_upload_failures_total");
                put(o, ",kind=\"%s\",reason=\"%s\"} %" PRIu64 "\n", kind_names[k],
                    fail_names[f], m->failures[k][f]);
            }
            break;
        case S_REFUSED:
            if (k == 0)
                for (int r = 0; r < METRICS_REFUSED_COUNT; r++) {
                    job_label(o, name, "bookmarkfs_refused_writes_total");
                    put(o, ",reason=\"%s\"} %" PRIu64 "\n", refusal_names[r],
                        m->refused[r]);
                }
            break;
        }
    }
    return o->failed;
}

char *metrics_text(size_t *len)
{
    struct metrics_gauges g = {.journal_bytes = -1};
    void (*fn)(struct metrics_gauges *, void *);
    void *arg;
    pthread_mutex_lock(&lock);
    fn = gauges_fn;
    arg = gauges_arg;
    pthread_mutex_unlock(&lock);
    if (fn)
        fn(&g, arg);

    struct out o = {.failed = 0};
    textbuf_init(&o.b);
    family(&o, "bookmarkfs_info", "gauge", "The bookmarkfs daemon's version.");
    put(&o, "bookmarkfs_info{version=\"%s\"} 1\n", BOOKMARKFS_VERSION);
    family(&o, "bookmarkfs_jobs_loaded", "gauge", "Jobs loaded in this mount.");
    put(&o, "bookmarkfs_jobs_loaded %" PRIu64 "\n", g.jobs_loaded);
    if (g.journal_bytes >= 0) {
        family(&o, "bookmarkfs_journal_bytes", "gauge",
               "Size of the local journal of changes not yet uploaded, in bytes.");
        put(&o, "bookmarkfs_journal_bytes %" PRId64 "\n", g.journal_bytes);
    }

    pthread_mutex_lock(&lock);
    struct each_arg ea = {.o = &o, .now = (int64_t)time(NULL)};
    static const struct {
        enum series which;
        const char *name, *type, *help;
    } per_job[] = {
        {S_LAST, "bookmarkfs_job_last_upload_timestamp_seconds", "gauge",
         "When the job's last upload of the kind was stored (this mount's, or "
         "the object its load found), seconds since 1970."},
        {S_AGE, "bookmarkfs_job_last_upload_age_seconds", "gauge",
         "Seconds since the job's last upload of the kind."},
        {S_UPLOADS, "bookmarkfs_uploads_total", "counter",
         "Successful uploads of the job's state, by kind."},
        {S_FAILURES, "bookmarkfs_upload_failures_total", "counter",
         "Uploads that failed after retries, by kind and reason (denied, "
         "timeout, error)."},
        {S_REFUSED, "bookmarkfs_refused_writes_total", "counter",
         "Writes to a key or .state.json that were refused, by reason."},
    };
    for (size_t i = 0; i < sizeof per_job / sizeof per_job[0]; i++) {
        family(&o, per_job[i].name, per_job[i].type, per_job[i].help);
        ea.which = per_job[i].which;
        if (jobs)
            strmap_each(jobs, each_job, &ea);
    }

    family(&o, "bookmarkfs_upload_duration_seconds", "histogram",
           "Time of successful uploads, retries included, by kind.");
    for (int k = 0; k < 2; k++) {
        uint64_t cum = 0;
        for (size_t b = 0; b < NBUCKETS; b++) {
            cum += latency[k].counts[b];
            put(&o, "bookmarkfs_upload_duration_seconds_bucket{kind=\"%s\",le=\"%g\"} %"
                PRIu64 "\n", kind_names[k], buckets[b], cum);
        }
        put(&o, "bookmarkfs_upload_duration_seconds_bucket{kind=\"%s\",le=\"+Inf\"} %"
            PRIu64 "\n", kind_names[k], latency[k].count);
        put(&o, "bookmarkfs_upload_duration_seconds_sum{kind=\"%s\"} %.9g\n",
            kind_names[k], latency[k].sum);
        put(&o, "bookmarkfs_upload_duration_seconds_count{kind=\"%s\"} %" PRIu64 "\n",
            kind_names[k], latency[k].count);
    }
    family(&o, "bookmarkfs_upload_retries_total", "counter",
           "Store requests of uploads that were tries beyond the first.");
    put(&o, "bookmarkfs_upload_retries_total %" PRIu64 "\n", retries);
    family(&o, "bookmarkfs_upload_bytes_total", "counter",
           "Bytes of state uploaded successfully.");
    put(&o, "bookmarkfs_upload_bytes_total %" PRIu64 "\n", bytes);
    family(&o, "bookmarkfs_metrics_dropped_total", "counter",
           "Counter updates lost for want of memory.");
    put(&o, "bookmarkfs_metrics_dropped_total %" PRIu64 "\n", dropped);
    pthread_mutex_unlock(&lock);

    if (o.failed) {
        textbuf_free(&o.b);
        return NULL;
    }
    *len = o.b.len;
    char *text;
    return textbuf_take(&o.b, 0, &text) == 0 ? text : NULL;
}
