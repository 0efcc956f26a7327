/* The fault-injecting store (faulty.h). One mutex guards the counters and
 * the faults; a held call waits on a condition variable, without it. */
#include "store/faulty.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/clock.h"

/* What one call is to meet: the error it fails with (as.err 0: none), and
 * whether only after the store underneath has taken it (puts: their
 * answer lost, faulty_lose). */
struct verdict {
    struct store_error as;
    int lost;
};

struct fault {
    uint64_t from, to; /* calls numbered from..to fail (to 0: no end); from 0: none */
    struct verdict v;  /* how */
};

struct faulty {
    struct store base;
    struct store *inner;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t calls[FAULTY_OPS];
    struct fault faults[FAULTY_OPS];
    enum faulty_op hold_op;
    uint64_t hold_at;  /* the call of hold_op to hold, 0: none */
    int hold_after;
    int held;          /* the held call is waiting */
    uint64_t releases; /* faulty_release calls: a held call waits for the next */
    void (*watch)(const char *bucket, const char *key, const void *body, size_t len,
                  void *arg);
    void *watch_arg;
};

static struct faulty *fs_of(struct store *st) { return (struct faulty *)st; }

enum stage { BEFORE, AFTER };

/* Counts a call of op; returns its number, and in *v what it meets. */
static uint64_t enter(struct faulty *f, enum faulty_op op, struct verdict *v)
{
    pthread_mutex_lock(&f->lock);
    uint64_t n = ++f->calls[op];
    const struct fault *ft = &f->faults[op];
    v->as.err = 0;
    v->lost = 0;
    if (ft->from && n >= ft->from && (!ft->to || n <= ft->to))
        *v = ft->v;
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* Holds call n of op at stage until the test releases it. */
static void maybe_hold(struct faulty *f, enum faulty_op op, uint64_t n, enum stage stage)
{
    pthread_mutex_lock(&f->lock);
    if (f->hold_at == n && f->hold_op == op && f->hold_after == (stage == AFTER)) {
        f->hold_at = 0;
        f->held = 1;
        uint64_t rel = f->releases;
        pthread_cond_broadcast(&f->cond);
        while (f->releases == rel)
            pthread_cond_wait(&f->cond, &f->lock);
        f->held = 0;
    }
    pthread_mutex_unlock(&f->lock);
}

/* The part every call shares: counted, failed or held before the store.
 * A negative errno: the call fails here. */
static int before(struct faulty *f, enum faulty_op op, uint64_t *n, struct verdict *v)
{
    *n = enter(f, op, v);
    maybe_hold(f, op, *n, BEFORE);
    return v->lost ? 0 : v->as.err;
}

/* A call failed here: its error, told to the caller. */
static int failed(struct store_error *err, const struct store_error *fail)
{
    if (err)
        *err = *fail;
    return fail->err;
}

static int after(struct faulty *f, enum faulty_op op, uint64_t n, int rc)
{
    maybe_hold(f, op, n, AFTER);
    return rc;
}

/* Each call: counted, failed (the error says so) or held before the store
 * underneath, and held after it. */
#define PASS(f, op, call)                                                    \
    do {                                                                     \
        uint64_t n_;                                                         \
        struct verdict v_;                                                   \
        return before(f, op, &n_, &v_) < 0 ? failed(err, &v_.as)             \
                                           : after(f, op, n_, (call));       \
    } while (0)

static int f_list_page(struct store *st, const char *bucket, const char *prefix,
                       const char *token, struct store_page *out, struct store_error *err)
{
    struct store *in = fs_of(st)->inner;
    PASS(fs_of(st), FAULTY_LIST, in->ops->list_page(in, bucket, prefix, token, out, err));
}

static int f_list_from(struct store *st, const char *bucket, const char *prefix,
                       const char *start_after, const char *token,
                       struct store_page *out, struct store_error *err)
{
    struct store *in = fs_of(st)->inner;
    PASS(fs_of(st), FAULTY_LIST,
         in->ops->list_from(in, bucket, prefix, start_after, token, out, err));
}

static int f_get(struct store *st, const char *bucket, const char *key, char **data,
                 size_t *len, struct store_error *err)
{
    struct store *in = fs_of(st)->inner;
    PASS(fs_of(st), FAULTY_GET, in->ops->get(in, bucket, key, data, len, err));
}

static int f_get_info(struct store *st, const char *bucket, const char *key,
                      char **data, size_t *len, struct store_get_info *info,
                      struct store_error *err)
{
    struct store *in = fs_of(st)->inner;
    PASS(fs_of(st), FAULTY_GET, in->ops->get_info(in, bucket, key, data, len, info, err));
}

/* A put: as PASS, and a lost answer turns the store's success into the
 * fault's error, ambiguous as a time-out after the write would be. res
 * starts as a store fills it for a put that fails before it is sent: one
 * attempt, no ETag, nothing ambiguous. */
#define PASS_PUT(f, call)                                                    \
    do {                                                                     \
        uint64_t n_;                                                         \
        struct verdict v_;                                                   \
        memset(res, 0, sizeof *res);                                         \
        res->attempts = 1;                                                   \
        if (before(f, FAULTY_PUT, &n_, &v_) < 0)                             \
            return failed(err, &v_.as);                                      \
        int rc_ = after(f, FAULTY_PUT, n_, (call));                          \
        if (rc_ < 0 || !v_.lost)                                             \
            return rc_;                                                      \
        res->ambiguous = 1;                                                  \
        return failed(err, &v_.as);                                          \
    } while (0)

/* A put that goes on to the store underneath is shown to the watcher. */
static void watch_put(struct faulty *f, const char *bucket, const char *key,
                      const void *body, size_t len)
{
    pthread_mutex_lock(&f->lock);
    void (*fn)(const char *, const char *, const void *, size_t, void *) = f->watch;
    void *arg = f->watch_arg;
    pthread_mutex_unlock(&f->lock);
    if (fn)
        fn(bucket, key, body, len, arg);
}

static int f_put(struct store *st, const char *bucket, const char *key, const void *body,
                 size_t len, struct store_put_result *res, struct store_error *err)
{
    struct store *in = fs_of(st)->inner;
    PASS_PUT(fs_of(st), (watch_put(fs_of(st), bucket, key, body, len),
                         in->ops->put(in, bucket, key, body, len, res, err)));
}

static int f_put_if(struct store *st, const char *bucket, const char *key,
                    const void *body, size_t len, const char *if_match,
                    struct store_put_result *res, struct store_error *err)
{
    struct store *in = fs_of(st)->inner;
    PASS_PUT(fs_of(st), (watch_put(fs_of(st), bucket, key, body, len),
                         in->ops->put_if(in, bucket, key, body, len, if_match, res, err)));
}

static int f_del(struct store *st, const char *bucket, const char *key,
                 struct store_error *err)
{
    struct store *in = fs_of(st)->inner;
    PASS(fs_of(st), FAULTY_DEL, in->ops->del(in, bucket, key, err));
}

static int f_check_bucket(struct store *st, const char *bucket, char *msg, size_t msglen)
{
    struct faulty *f = fs_of(st);
    return store_check_bucket(f->inner, bucket, msg, msglen);
}

static void f_locate(struct store *st, const char *bucket, const char *key, char *buf,
                     size_t len)
{
    store_locate(fs_of(st)->inner, bucket, key, buf, len);
}

static void f_destroy(struct store *st)
{
    struct faulty *f = fs_of(st);
    store_destroy(f->inner);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

/* By enum faulty_op: lists, gets, puts, the delete; then the rest. */
static const struct store_ops faulty_ops = {
    .list_page = f_list_page, .list_from = f_list_from,
    .get = f_get, .get_info = f_get_info,
    .put = f_put, .put_if = f_put_if,
    .del = f_del,
    .check_bucket = f_check_bucket, .locate = f_locate, .destroy = f_destroy,
};

int faulty_new(struct store *inner, struct store **out)
{
    *out = NULL;
    struct faulty *f = calloc(1, sizeof *f);
    if (!f) {
        store_destroy(inner);
        return -ENOMEM;
    }
    if (pthread_mutex_init(&f->lock, NULL) != 0) {
        free(f);
        store_destroy(inner);
        return -ENOMEM;
    }
    pthread_condattr_t ca;
    int crc = pthread_condattr_init(&ca);
    if (crc == 0) {
        crc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* faulty_wait_held */
        if (crc == 0)
            crc = pthread_cond_init(&f->cond, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (crc != 0) {
        pthread_mutex_destroy(&f->lock);
        free(f);
        store_destroy(inner);
        return -ENOMEM;
    }
    f->inner = inner;
    f->base.ops = &faulty_ops;
    f->base.kind = inner->kind;
    f->base.max_segment = inner->max_segment;
    f->base.list_bound_ms = inner->list_bound_ms;
    f->base.list_no_etags = inner->list_no_etags;
    *out = &f->base;
    return 0;
}

struct store *faulty_inner(struct store *st) { return fs_of(st)->inner; }

void faulty_watch_puts(struct store *st,
                       void (*fn)(const char *bucket, const char *key, const void *body,
                                  size_t len, void *arg),
                       void *arg)
{
    struct faulty *f = fs_of(st);
    pthread_mutex_lock(&f->lock);
    f->watch = fn;
    f->watch_arg = arg;
    pthread_mutex_unlock(&f->lock);
}

uint64_t faulty_calls(struct store *st, enum faulty_op op)
{
    struct faulty *f = fs_of(st);
    pthread_mutex_lock(&f->lock);
    uint64_t n = f->calls[op];
    pthread_mutex_unlock(&f->lock);
    return n;
}

/* Sets op's fault: from its nth call counted from now, `times` calls. */
static void set_fault(struct faulty *f, enum faulty_op op, unsigned nth, unsigned times,
                      const struct verdict *v)
{
    pthread_mutex_lock(&f->lock);
    struct fault *ft = &f->faults[op];
    ft->from = nth ? f->calls[op] + nth : 0;
    ft->to = nth && times ? ft->from + times - 1 : 0;
    ft->v = *v;
    pthread_mutex_unlock(&f->lock);
}

void faulty_fail_as(struct store *st, enum faulty_op op, unsigned nth, unsigned times,
                    const struct store_error *as)
{
    struct verdict v = {.as = *as, .lost = 0};
    set_fault(fs_of(st), op, nth, times, &v);
}

void faulty_lose(struct store *st, unsigned nth, unsigned times, int err)
{
    struct verdict v = {.lost = 1};
    store_fail(&v.as, err, "injected fault after the write: %s", strerror(-err));
    set_fault(fs_of(st), FAULTY_PUT, nth, times, &v);
}

void faulty_fail(struct store *st, enum faulty_op op, unsigned nth, unsigned times, int err)
{
    struct store_error as;
    store_fail(&as, err, "injected fault: %s", strerror(-err));
    faulty_fail_as(st, op, nth, times, &as);
}

void faulty_hold(struct store *st, enum faulty_op op, unsigned nth, int after_store)
{
    struct faulty *f = fs_of(st);
    pthread_mutex_lock(&f->lock);
    f->hold_op = op;
    f->hold_at = nth ? f->calls[op] + nth : 0;
    f->hold_after = after_store != 0;
    pthread_mutex_unlock(&f->lock);
}

int faulty_wait_held(struct store *st, long timeout_ms)
{
    struct faulty *f = fs_of(st);
    int64_t end = clock_mono_ms() + timeout_ms;
    struct timespec until = {.tv_sec = (time_t)(end / 1000),
                             .tv_nsec = (long)(end % 1000) * 1000000L};
    int rc = 0;
    pthread_mutex_lock(&f->lock);
    while (!f->held && rc == 0)
        rc = pthread_cond_timedwait(&f->cond, &f->lock, &until);
    int held = f->held;
    pthread_mutex_unlock(&f->lock);
    return held ? 0 : -ETIMEDOUT;
}

void faulty_release(struct store *st)
{
    struct faulty *f = fs_of(st);
    pthread_mutex_lock(&f->lock);
    f->hold_at = 0;
    f->releases++;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}
