#include "fs/history.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/blocking.h"
#include "util/log.h"
#include "util/strmap.h"

/* How long a listing serves lookups (README, "History and rewind"). */
#define HISTORY_TTL_MS 2000

struct hist_entry {
    char name[256];
    struct index_object o;
};

/* One job's listing. */
struct hist {
    struct hist_entry *v;
    size_t n;
    struct timespec built; /* CLOCK_MONOTONIC */
};

struct history {
    struct store *store;
    struct index *index;
    pthread_mutex_t lock;
    struct strmap *cache; /* job name -> struct hist */
};

static void hist_free(void *p)
{
    struct hist *h = p;
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++)
        layout_candidate_clear(&h->v[i].o.c);
    free(h->v);
    free(h);
}

void history_free(struct history *h)
{
    if (!h)
        return;
    strmap_free(h->cache, hist_free);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

int history_new(struct store *store, struct index *index, struct history **out)
{
    struct history *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    if (pthread_mutex_init(&h->lock, NULL) != 0) {
        free(h);
        return -ENOMEM;
    }
    h->store = store;
    h->index = index;
    int rc = strmap_new(&h->cache);
    if (rc < 0) {
        history_free(h);
        return rc;
    }
    *out = h;
    return 0;
}

int history_path(const char *path, char job[256], char entry[256])
{
    const char *s = path;
    while (*s == '/')
        s++;
    const char *a = strchr(s, '/');
    if (!a || a == s || (size_t)(a - s) > 255)
        return 0;
    const char *h = a + 1;
    size_t hl = sizeof HISTORY_DIR - 1;
    if (strncmp(h, HISTORY_DIR, hl) != 0 || (h[hl] != '\0' && h[hl] != '/'))
        return 0;
    memcpy(job, s, (size_t)(a - s));
    job[a - s] = '\0';
    const char *e = h + hl;
    if (*e == '\0' || (e[0] == '/' && e[1] == '\0')) {
        entry[0] = '\0';
        return 1;
    }
    e++;
    size_t el = strlen(e);
    if (strchr(e, '/') || el > 255)
        return -ENOENT;
    memcpy(entry, e, el + 1);
    return 2;
}

/* An upload_date as a name: no leading zeros, at least 10 digits, so that
 * names sort by it. */
static void epoch_text(const char *digits, char *out, size_t n)
{
    while (digits[0] == '0' && digits[1])
        digits++;
    size_t len = strlen(digits);
    snprintf(out, n, "%.*s%s", len < 10 ? (int)(10 - len) : 0, "0000000000", digits);
}

static int same_date(const struct hist_entry *a, const struct hist_entry *b)
{
    char x[256], y[256];
    epoch_text(a->o.c.upload_date, x, sizeof x);
    epoch_text(b->o.c.upload_date, y, sizeof y);
    return strcmp(x, y) == 0;
}

/* <epoch>-<kind>.json; where several objects would share it, the bucket
 * goes in (<epoch>-<kind>.<bucket>.json), and where one bucket holds
 * several, their rank in upload order too (.<bucket>.<n>.json). Entries
 * whose name would not fit 255 bytes are left out. */
static void hist_name(struct hist *h)
{
    size_t out = 0;
    for (size_t i = 0, start = 0; i < h->n; i++) {
        if (i > 0 && !same_date(&h->v[i - 1], &h->v[i]))
            start = i;
        struct hist_entry *e = &h->v[i];
        size_t same = 0, same_bucket = 0, rank = 0;
        for (size_t j = start; j < h->n && (j == i || same_date(&h->v[j], e)); j++) {
            if (h->v[j].o.c.kind != e->o.c.kind)
                continue;
            same++;
            if (strcmp(h->v[j].o.c.bucket, e->o.c.bucket) == 0) {
                same_bucket++;
                if (j <= i)
                    rank++;
            }
        }
        char epoch[256];
        epoch_text(e->o.c.upload_date, epoch, sizeof epoch);
        const char *kind = e->o.c.kind == UPLOAD_COMPLETED ? "completed" : "running";
        int n;
        if (same == 1)
            n = snprintf(e->name, sizeof e->name, "%s-%s.json", epoch, kind);
        else if (same_bucket == 1)
            n = snprintf(e->name, sizeof e->name, "%s-%s.%s.json", epoch, kind,
                         e->o.c.bucket);
        else
            n = snprintf(e->name, sizeof e->name, "%s-%s.%s.%zu.json", epoch, kind,
                         e->o.c.bucket, rank);
        e->name[n < 0 || (size_t)n >= sizeof e->name ? 0 : n] = '\0';
        if (n < 0 || (size_t)n >= sizeof e->name)
            e->name[0] = '\0';
    }
    for (size_t i = 0; i < h->n; i++) {
        if (!h->v[i].name[0]) {
            layout_candidate_clear(&h->v[i].o.c);
            continue;
        }
        if (out != i)
            h->v[out] = h->v[i];
        out++;
    }
    h->n = out;
}

static int64_t mono_elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)(now.tv_sec - since->tv_sec) * 1000 +
           (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* The job's listing, listed afresh when `fresh` or older than the TTL.
 * Caller holds hs->lock; the result lives until the next call. */
static int hist_get(struct history *hs, const char *job, int fresh, struct hist **out)
{
    struct hist *h = strmap_get(hs->cache, job);
    if (h && !fresh && mono_elapsed_ms(&h->built) < HISTORY_TTL_MS) {
        *out = h;
        return 0;
    }
    blocking_may_block(); /* lists the store */
    struct index_object *v = NULL;
    size_t n = 0;
    struct store_error e;
    int rc = index_history(hs->index, job, &v, &n, &e);
    if (rc < 0) {
        char why[1024];
        store_error_text(&e, why, sizeof why);
        log_error("job '%s': listing its history failed: %s", job, why);
        return rc;
    }
    struct hist *nh = calloc(1, sizeof *nh);
    if (nh && n && !(nh->v = calloc(n, sizeof *nh->v))) {
        free(nh);
        nh = NULL;
    }
    if (!nh) {
        index_objects_free(v, n);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        nh->v[i].o = v[i]; /* taken */
    free(v);
    nh->n = n;
    hist_name(nh);
    clock_gettime(CLOCK_MONOTONIC, &nh->built);
    void *old = NULL;
    if ((rc = strmap_put(hs->cache, job, nh, &old)) < 0) {
        hist_free(nh);
        return rc;
    }
    hist_free(old);
    *out = nh;
    return 0;
}

int history_find(struct history *hs, const char *job, const char *name,
                 struct index_object *o)
{
    pthread_mutex_lock(&hs->lock);
    int rc = -ENOENT;
    for (int fresh = 0; fresh < 2 && rc == -ENOENT; fresh++) {
        struct hist *h;
        struct timespec before = {0};
        struct hist *cached = strmap_get(hs->cache, job);
        if (cached)
            before = cached->built;
        int r = hist_get(hs, job, fresh, &h);
        if (r < 0) {
            rc = r;
            break;
        }
        for (size_t i = 0; i < h->n; i++) {
            if (strcmp(h->v[i].name, name) != 0)
                continue;
            *o = h->v[i].o;
            o->c.bucket = strdup(h->v[i].o.c.bucket);
            o->c.key = strdup(h->v[i].o.c.key);
            o->c.upload_date = strdup(h->v[i].o.c.upload_date);
            rc = o->c.bucket && o->c.key && o->c.upload_date ? 0 : -ENOMEM;
            if (rc < 0)
                layout_candidate_clear(&o->c);
            break;
        }
        /* Just listed: listing again would find no more. */
        if (!cached || before.tv_sec != h->built.tv_sec || before.tv_nsec != h->built.tv_nsec)
            break;
    }
    pthread_mutex_unlock(&hs->lock);
    return rc;
}

int history_list(struct history *hs, const char *job, struct strlist *names)
{
    pthread_mutex_lock(&hs->lock);
    struct hist *h;
    int rc = hist_get(hs, job, 1, &h);
    for (size_t i = 0; rc == 0 && i < h->n; i++)
        rc = strlist_add(names, h->v[i].name);
    pthread_mutex_unlock(&hs->lock);
    return rc;
}

int history_fetch(struct history *hs, const char *job, const struct index_object *o,
                  char **buf, size_t *len)
{
    blocking_may_block(); /* a GET */
    struct store *st = hs->store;
    *buf = NULL;
    *len = 0;
    struct store_error e;
    int rc = store_get(st, o->c.bucket, o->c.key, buf, len, &e);
    if (rc < 0) {
        char w[STORE_LOCATION_MAX], why[1024];
        store_locate(st, o->c.bucket, o->c.key, w, sizeof w);
        store_error_text(&e, why, sizeof why);
        log_error("job '%s': reading %s of its history failed: %s", job, w, why);
        *buf = NULL;
        *len = 0;
        return rc == -ENOENT ? -ENOENT : rc == -ENOMEM ? rc : -EIO;
    }
    return 0;
}
