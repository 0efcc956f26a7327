/* The fault-injecting store (faulty.h). One mutex guards the counters and
 * the faults; a held call waits on a condition variable, without it. */
#include "store/faulty.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct fault {
    uint64_t from, to; /* calls numbered from..to fail (to 0: no end); from 0: none */
    int err;
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

/* Counts a call of op; returns its number, and in *err the errno it must
 * fail with (0: none). */
static uint64_t enter(struct faulty *f, enum faulty_op op, int *err)
{
    pthread_mutex_lock(&f->lock);
    uint64_t n = ++f->calls[op];
    const struct fault *ft = &f->faults[op];
    *err = ft->from && n >= ft->from && (!ft->to || n <= ft->to) ? ft->err : 0;
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

/* The part every call shares: counted, failed or held before the store. */
static int before(struct faulty *f, enum faulty_op op, uint64_t *n)
{
    int err = 0;
    *n = enter(f, op, &err);
    maybe_hold(f, op, *n, BEFORE);
    return err;
}

static int after(struct faulty *f, enum faulty_op op, uint64_t n, int rc)
{
    maybe_hold(f, op, n, AFTER);
    return rc;
}

static int f_list_page(struct store *st, const char *bucket, const char *prefix,
                       const char *token, struct store_page *out)
{
    struct faulty *f = fs_of(st);
    uint64_t n;
    int rc = before(f, FAULTY_LIST, &n);
    if (rc < 0)
        return rc;
    rc = f->inner->ops->list_page(f->inner, bucket, prefix, token, out);
    return after(f, FAULTY_LIST, n, rc);
}

static int f_list_from(struct store *st, const char *bucket, const char *prefix,
                       const char *start_after, const char *token,
                       struct store_page *out)
{
    struct faulty *f = fs_of(st);
    uint64_t n;
    int rc = before(f, FAULTY_LIST, &n);
    if (rc < 0)
        return rc;
    rc = f->inner->ops->list_from(f->inner, bucket, prefix, start_after, token, out);
    return after(f, FAULTY_LIST, n, rc);
}

static int f_get(struct store *st, const char *bucket, const char *key, char **data,
                 size_t *len)
{
    struct faulty *f = fs_of(st);
    uint64_t n;
    int rc = before(f, FAULTY_GET, &n);
    if (rc < 0)
        return rc;
    rc = f->inner->ops->get(f->inner, bucket, key, data, len);
    return after(f, FAULTY_GET, n, rc);
}

static int f_get_info(struct store *st, const char *bucket, const char *key,
                      char **data, size_t *len, struct store_get_info *info)
{
    struct faulty *f = fs_of(st);
    uint64_t n;
    int rc = before(f, FAULTY_GET, &n);
    if (rc < 0)
        return rc;
    rc = f->inner->ops->get_info(f->inner, bucket, key, data, len, info);
    return after(f, FAULTY_GET, n, rc);
}

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
                 size_t len, struct store_put_result *res)
{
    struct faulty *f = fs_of(st);
    uint64_t n;
    int rc = before(f, FAULTY_PUT, &n);
    if (rc < 0) {
        res->attempts = 1;
        return rc;
    }
    watch_put(f, bucket, key, body, len);
    rc = f->inner->ops->put(f->inner, bucket, key, body, len, res);
    return after(f, FAULTY_PUT, n, rc);
}

static int f_put_if(struct store *st, const char *bucket, const char *key,
                    const void *body, size_t len, const char *if_match,
                    struct store_put_result *res)
{
    struct faulty *f = fs_of(st);
    uint64_t n;
    int rc = before(f, FAULTY_PUT, &n);
    if (rc < 0) {
        res->attempts = 1;
        return rc;
    }
    watch_put(f, bucket, key, body, len);
    rc = f->inner->ops->put_if(f->inner, bucket, key, body, len, if_match, res);
    return after(f, FAULTY_PUT, n, rc);
}

static int f_del(struct store *st, const char *bucket, const char *key)
{
    struct faulty *f = fs_of(st);
    uint64_t n;
    int rc = before(f, FAULTY_DEL, &n);
    if (rc < 0)
        return rc;
    rc = f->inner->ops->del(f->inner, bucket, key);
    return after(f, FAULTY_DEL, n, rc);
}

static int f_check_bucket(struct store *st, const char *bucket, char *msg, size_t msglen)
{
    struct faulty *f = fs_of(st);
    return f->inner->ops->check_bucket(f->inner, bucket, msg, msglen);
}

static void f_destroy(struct store *st)
{
    struct faulty *f = fs_of(st);
    store_destroy(f->inner);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static const struct store_ops faulty_ops = {
    .list_page = f_list_page,
    .list_from = f_list_from,
    .get = f_get,
    .put = f_put,
    .put_if = f_put_if,
    .get_info = f_get_info,
    .del = f_del,
    .check_bucket = f_check_bucket,
    .destroy = f_destroy,
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
    if (pthread_cond_init(&f->cond, NULL) != 0) {
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

void faulty_fail(struct store *st, enum faulty_op op, unsigned nth, unsigned times, int err)
{
    struct faulty *f = fs_of(st);
    pthread_mutex_lock(&f->lock);
    struct fault *ft = &f->faults[op];
    ft->from = nth ? f->calls[op] + nth : 0;
    ft->to = nth && times ? ft->from + times - 1 : 0;
    ft->err = err;
    pthread_mutex_unlock(&f->lock);
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
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
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
