/* A mount's metrics for Prometheus (README, "Metrics"): the counters the
 * core bumps through the calls below, and their text exposition. Knows
 * nothing of FUSE or HTTP (the server is fs/metrics_http.c). Thread-safe;
 * every call is cheap and never fails its caller: a job whose counters
 * cannot be allocated is counted in bookmarkfs_metrics_dropped_total. */
#ifndef BOOKMARKFS_FS_METRICS_H
#define BOOKMARKFS_FS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "fs/layout.h"

/* Why a write to a key or .state.json was refused. */
enum metrics_refusal {
    METRICS_REFUSED_INVALID_JSON, /* a key's bytes are not one JSON value */
    METRICS_REFUSED_NOT_OBJECT,   /* .state.json is not a JSON object */
    METRICS_REFUSED_TOO_LARGE,    /* over the size limit (EFBIG) */
    METRICS_REFUSED_JOURNAL,      /* the journal could not take it (EIO) */
    METRICS_REFUSED_COUNT
};

/* One upload of a job's snapshot: rc 0 or its negative errno; seconds it
 * took; attempts made (retries are attempts - 1); epoch_s its upload_date. */
void metrics_upload(const char *job, enum upload_kind kind, int rc, double seconds,
                    int attempts, int64_t epoch_s, size_t bytes);
/* get_or_create loaded the job from an object of that kind stored at
 * epoch_s (its LastModified): the job's last upload of that kind, until
 * this mount uploads one. */
void metrics_loaded(const char *job, enum upload_kind kind, int64_t epoch_s);
void metrics_refused(const char *job, enum metrics_refusal why);

/* What is read at scrape time rather than counted. */
struct metrics_gauges {
    uint64_t jobs_loaded;
    int64_t journal_bytes; /* < 0: no journal */
};
/* fn fills the gauges at each scrape (under no lock of this module). */
void metrics_set_gauges(void (*fn)(struct metrics_gauges *g, void *arg), void *arg);

/* The exposition (Prometheus text format 0.0.4), malloc'd; NULL on ENOMEM. */
char *metrics_text(size_t *len);

/* Forgets everything (at exit). */
void metrics_clear(void);

#endif
