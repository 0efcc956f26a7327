/* Job leases on conditional writes (fs/lease.h; README, "Leases"). */
#include "fs/lease.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#ifdef BOOKMARKFS_TEST_HOOKS
#include <stdatomic.h>
#endif

#include "util/clock.h"
#include "util/log.h"
#include "util/strmap.h"
#include "util/vec.h"

#define TOKEN_LEN 32
#define WHO_MAX 512
#define STATE_FILE "leases.json"

enum lstate {
    L_NONE,   /* never held here */
    L_HELD,   /* held by this mount */
    L_PREV,   /* held here before (released, or by the mount before a crash) */
    L_LOST,   /* taken over while held here */
};

struct lentry {
    char *job;
    char *key;
    pthread_mutex_t op; /* one store operation at a time for this lease */
    /* The rest under ls->lock. */
    enum lstate state;
    char token[TOKEN_LEN + 1];     /* HELD/PREV: ours */
    char try_token[TOKEN_LEN + 1]; /* a write whose outcome is unknown */
    char etag[STORE_ETAG_MAX];     /* HELD: of our last write */
    long long epoch;               /* HELD/PREV: ours */
    int64_t renewed_mono;          /* HELD: when the acknowledged write was sent */
    int64_t last_use_mono;
    int64_t since_server_ms;
    int64_t expires_server_ms;
    char who[WHO_MAX];             /* LOST, or the last other holder seen */
    json_t *seen;                  /* the last body of another holder seen */
};

struct leases {
    struct store *store;
    char *bucket, *prefix, *mount, *state_path, *host;
    long ttl_ms, idle_ms;
    long pid;
    pthread_mutex_t lock; /* the map, every entry's fields, the clock offset */
    pthread_cond_t wake;
    struct strmap *map;   /* job -> struct lentry */
    int64_t offset_ms;    /* the store's clock minus our monotonic clock */
    int have_offset;
    int stop, started;
    pthread_t thread;
};

/* ---- small helpers */

static void iso_ms(int64_t ms, char out[40])
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    if (ms <= 0 || !gmtime_r(&s, &tm)) {
        snprintf(out, 40, "unknown");
        return;
    }
    snprintf(out, 40, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static void new_token(char out[TOKEN_LEN + 1])
{
    unsigned char b[TOKEN_LEN / 2];
    if (RAND_bytes(b, sizeof b) != 1) {
        /* Unique enough when the CSPRNG fails: time, pid and a counter. */
        static unsigned counter;
        int64_t t = clock_mono_ms();
        unsigned c = __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
        memset(b, 0, sizeof b);
        memcpy(b, &t, sizeof t);
        pid_t pid = getpid();
        memcpy(b + 8, &pid, sizeof pid);
        memcpy(b + 12, &c, sizeof c);
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof b; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[TOKEN_LEN] = '\0';
}

/* The store's clock now, as estimated from its last answer. */
static int64_t server_now(struct leases *ls)
{
    pthread_mutex_lock(&ls->lock);
    int64_t v = ls->have_offset ? clock_mono_ms() + ls->offset_ms : clock_wall_ms();
    pthread_mutex_unlock(&ls->lock);
    return v;
}

static void note_server_time(struct leases *ls, int64_t server_ms, int64_t mono)
{
    if (server_ms <= 0)
        return;
    pthread_mutex_lock(&ls->lock);
    ls->offset_ms = server_ms - mono;
    ls->have_offset = 1;
    pthread_mutex_unlock(&ls->lock);
}

/* ---- the lease object */

struct body {
    json_t *doc; /* owned */
    const char *token;
    long long epoch;
    long long ttl_s;
    int released;
};

static int parse_body(const char *data, size_t len, struct body *b)
{
    memset(b, 0, sizeof *b);
    b->doc = json_loadb(data, len, 0, NULL);
    if (!json_is_object(b->doc)) {
        json_decref(b->doc);
        b->doc = NULL;
        return -EINVAL;
    }
    b->token = json_string_value(json_object_get(b->doc, "token"));
    b->epoch = (long long)json_integer_value(json_object_get(b->doc, "epoch"));
    b->ttl_s = (long long)json_integer_value(json_object_get(b->doc, "ttl_seconds"));
    b->released = json_is_true(json_object_get(b->doc, "released"));
    if (!b->token)
        b->token = "";
    return 0;
}

static void describe(const json_t *doc, char *who, size_t wholen)
{
    if (!who || !wholen)
        return;
    const char *host = json_string_value(json_object_get(doc, "host"));
    const char *mount = json_string_value(json_object_get(doc, "mount"));
    const char *since = json_string_value(json_object_get(doc, "since"));
    const char *exp = json_string_value(json_object_get(doc, "expires"));
    long long pid = (long long)json_integer_value(json_object_get(doc, "pid"));
    snprintf(who, wholen, "host %s, pid %lld, mount %s, since %s, expires %s%s",
             host ? host : "?", pid, mount ? mount : "?", since ? since : "?",
             exp ? exp : "?",
             json_is_true(json_object_get(doc, "released")) ? " (released)" : "");
}

static char *make_body(struct leases *ls, struct lentry *e, const char *token,
                       long long epoch, int64_t since, int released, size_t *len)
{
    char s_since[40], s_exp[40];
    iso_ms(since, s_since);
    iso_ms(released ? server_now(ls) : server_now(ls) + ls->ttl_ms, s_exp);
    json_t *doc = json_pack("{s:i, s:s, s:s, s:I, s:s, s:s, s:I, s:I, s:s, s:s, s:b}",
                            "bookmarkfs_lease", 1, "job", e->job, "host", ls->host,
                            "pid", (json_int_t)ls->pid, "mount", ls->mount, "token",
                            token, "epoch", (json_int_t)epoch, "ttl_seconds",
                            (json_int_t)(ls->ttl_ms / 1000), "since", s_since,
                            "expires", s_exp, "released", released);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (text)
        *len = strlen(text);
    return text;
}

/* Expired by the store's clock: its Date is more than the holder's TTL
 * after the object's LastModified (the holder's last write). One second
 * more for the whole seconds of HTTP dates. */
static int expired(const struct body *b, const struct store_get_info *info)
{
    if (b->released)
        return 1;
    if (info->server_ms <= 0 || info->last_modified_ms <= 0)
        return 0; /* cannot judge: never taken over on our own clock */
    long long ttl_ms = (b->ttl_s > 0 ? b->ttl_s : 1) * 1000;
    return info->server_ms - info->last_modified_ms > ttl_ms + 1000;
}

/* ---- remembered leases (across a crash of the mount) */

static int save_state_locked(struct leases *ls);

static int remember(struct leases *ls)
{
    pthread_mutex_lock(&ls->lock);
    int rc = save_state_locked(ls);
    pthread_mutex_unlock(&ls->lock);
    return rc;
}

static int add_record(const char *job, void *value, void *arg)
{
    struct lentry *e = value;
    int held = e->state != L_NONE && e->token[0];
    if (!held && !e->try_token[0])
        return 0;
    json_t *rec = held ? json_pack("{s:s, s:I}", "token", e->token, "epoch",
                                   (json_int_t)e->epoch)
                       : json_object();
    /* A write whose outcome is unknown (a take in flight at a crash). */
    if (rec && e->try_token[0] &&
        json_object_set_new(rec, "trying", json_string(e->try_token)) < 0) {
        json_decref(rec);
        rec = NULL;
    }
    return rec && json_object_set_new(arg, job, rec) == 0 ? 0 : -ENOMEM;
}

/* Written whole (temp file, fsync, rename) before a lease is taken (with
 * the token being tried) and each time one is taken, so a mount that
 * crashed knows at its next start which leases it had, also one whose
 * write landed just before the crash. */
static int save_state_locked(struct leases *ls)
{
    if (!ls->state_path)
        return 0;
    json_t *doc = json_object();
    if (!doc || strmap_each(ls->map, add_record, doc) != 0) {
        json_decref(doc);
        return -ENOMEM;
    }
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    char *tmp = NULL;
    if (!text || asprintf(&tmp, "%s.tmp", ls->state_path) < 0) {
        free(text);
        return -ENOMEM;
    }
    int rc = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    size_t n = strlen(text), off = 0;
    if (fd < 0)
        rc = -errno;
    while (rc == 0 && off < n) {
        ssize_t w = write(fd, text + off, n - off);
        if (w < 0 && errno != EINTR)
            rc = -errno;
        else if (w > 0)
            off += (size_t)w;
    }
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (fd >= 0 && close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, ls->state_path) != 0)
        rc = -errno;
    if (rc < 0) {
        log_warn("cannot write %s: %s", ls->state_path, strerror(-rc));
        unlink(tmp);
    }
    free(tmp);
    free(text);
    return rc;
}

static struct lentry *entry_get_locked(struct leases *ls, const char *job);

static void load_state(struct leases *ls)
{
    if (!ls->state_path)
        return;
    json_error_t err;
    json_t *doc = json_load_file(ls->state_path, 0, &err);
    if (!doc)
        return; /* none yet */
    const char *job;
    json_t *rec;
    pthread_mutex_lock(&ls->lock);
    json_object_foreach(doc, job, rec) {
        const char *token = json_string_value(json_object_get(rec, "token"));
        const char *trying = json_string_value(json_object_get(rec, "trying"));
        int have = token && strlen(token) == TOKEN_LEN;
        int tried = trying && strlen(trying) == TOKEN_LEN;
        if (!have && !tried)
            continue;
        struct lentry *e = entry_get_locked(ls, job);
        if (!e)
            break;
        if (have) {
            e->state = L_PREV;
            snprintf(e->token, sizeof e->token, "%s", token);
            e->epoch = (long long)json_integer_value(json_object_get(rec, "epoch"));
        }
        if (tried) /* found in the store, it is ours (take) */
            snprintf(e->try_token, sizeof e->try_token, "%s", trying);
    }
    pthread_mutex_unlock(&ls->lock);
    json_decref(doc);
}

/* ---- entries */

static void entry_free(void *p)
{
    struct lentry *e = p;
    if (!e)
        return;
    pthread_mutex_destroy(&e->op);
    json_decref(e->seen);
    free(e->job);
    free(e->key);
    free(e);
}

static struct lentry *entry_get_locked(struct leases *ls, const char *job)
{
    struct lentry *e = strmap_get(ls->map, job);
    if (e)
        return e;
    e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->job = strdup(job);
    if (e->job && asprintf(&e->key, "%s%s.lease", ls->prefix, job) < 0)
        e->key = NULL;
    if (!e->job || !e->key || pthread_mutex_init(&e->op, NULL) != 0) {
        free(e->job);
        free(e->key);
        free(e);
        return NULL;
    }
    if (strmap_put(ls->map, job, e, NULL) < 0) {
        entry_free(e);
        return NULL;
    }
    return e;
}

static struct lentry *entry_get(struct leases *ls, const char *job)
{
    pthread_mutex_lock(&ls->lock);
    struct lentry *e = entry_get_locked(ls, job);
    pthread_mutex_unlock(&ls->lock);
    return e;
}

static int64_t margin_ms(const struct leases *ls)
{
    long m = ls->ttl_ms / 10;
    return m < 100 ? 100 : m > 1000 ? 1000 : m;
}

/* HELD and within its validity (caller holds ls->lock). */
static int valid_locked(struct leases *ls, const struct lentry *e, int64_t mono)
{
    return e->state == L_HELD && mono < e->renewed_mono + ls->ttl_ms - margin_ms(ls);
}

static void set_held(struct leases *ls, struct lentry *e, const char *token,
                     long long epoch, const char *etag, int64_t sent, int64_t since)
{
    pthread_mutex_lock(&ls->lock);
    e->state = L_HELD;
    snprintf(e->token, sizeof e->token, "%s", token);
    e->try_token[0] = '\0';
    snprintf(e->etag, sizeof e->etag, "%s", etag);
    e->epoch = epoch;
    e->renewed_mono = sent;
    e->last_use_mono = clock_mono_ms();
    e->since_server_ms = since;
    e->expires_server_ms = since + ls->ttl_ms;
    e->who[0] = '\0';
    pthread_mutex_unlock(&ls->lock);
}

static void set_seen(struct leases *ls, struct lentry *e, const struct body *b)
{
    pthread_mutex_lock(&ls->lock);
    json_decref(e->seen);
    e->seen = json_incref(b->doc);
    describe(b->doc, e->who, sizeof e->who);
    pthread_mutex_unlock(&ls->lock);
}

/* Where the lease object `key` is, in the store's words. */
static const char *where(const struct leases *ls, const char *key,
                         char buf[STORE_LOCATION_MAX])
{
    store_locate(ls->store, ls->bucket, key, buf, STORE_LOCATION_MAX);
    return buf;
}

/* A store error's text, for the one line or message that tells it. */
#define WHY_MAX 1024
static const char *why_text(const struct store_error *err, char buf[WHY_MAX])
{
    store_error_text(err, buf, WHY_MAX);
    return buf;
}

/* Reads the lease object. 0 with *b filled, -ENOENT, or a store error
 * (told in err). */
static int read_lease(struct leases *ls, struct lentry *e, struct body *b,
                      struct store_get_info *info, struct store_error *err)
{
    char *data = NULL;
    size_t len = 0;
    int64_t mono = clock_mono_ms();
    int rc = store_get_info(ls->store, ls->bucket, e->key, &data, &len, info, err);
    note_server_time(ls, info->server_ms, mono);
    if (rc == 0) {
        if (parse_body(data, len, b) < 0) {
            /* Not a lease of ours: nobody's, and never silently taken. */
            char w[STORE_LOCATION_MAX];
            log_error("the lease object %s is not a bookmarkfs lease; remove "
                      "it to use the job", where(ls, e->key, w));
            rc = store_fail(err, -EIO, "the lease object is not a bookmarkfs lease");
        }
    }
    free(data);
    return rc;
}

/* A conditional write of our body. On an unknown outcome the lease is read
 * back and the token compared: never guessed, never cleaned up. Returns 0
 * (ours, *etag set), -EEXIST (another's write won), -ENOENT (If-Match on
 * a lease that is gone), or a store error (outcome still unknown). */
static int write_lease(struct leases *ls, struct lentry *e, const char *if_match,
                       const char *token, long long epoch, int64_t since, int released,
                       char *etag, int64_t *sent, int *direct, struct store_error *err)
{
    *direct = 0;
    size_t len = 0;
    char *body = make_body(ls, e, token, epoch, since, released, &len);
    if (!body)
        return store_fail(err, -ENOMEM, "%s", strerror(ENOMEM));
    struct store_put_result res;
    *sent = clock_mono_ms();
    int rc = store_put_if(ls->store, ls->bucket, e->key, body, len, if_match, &res, err);
    note_server_time(ls, res.server_ms, *sent);
    free(body);
    if (rc == 0) {
        snprintf(etag, STORE_ETAG_MAX, "%s", res.etag);
        *direct = 1;
        return 0;
    }
    if (!res.ambiguous)
        return rc;
    /* Unknown outcome: did our write land? */
    pthread_mutex_lock(&ls->lock);
    snprintf(e->try_token, sizeof e->try_token, "%s", token);
    pthread_mutex_unlock(&ls->lock);
    struct body b;
    struct store_get_info info;
    struct store_error re;
    char w[STORE_LOCATION_MAX];
    int r = read_lease(ls, e, &b, &info, &re);
    if (r < 0) {
        char why[WHY_MAX], rwhy[WHY_MAX];
        log_warn("lease %s: the outcome of a write is unknown (%s), and reading "
                 "the lease back failed (%s)", where(ls, e->key, w), why_text(err, why),
                 why_text(&re, rwhy));
        if (r == -ENOENT)
            *err = re;
        return r == -ENOENT ? -ENOENT : rc;
    }
    int ours = strcmp(b.token, token) == 0 && b.released == released && b.epoch == epoch;
    if (ours) {
        snprintf(etag, STORE_ETAG_MAX, "%s", info.etag);
        char why[WHY_MAX];
        log_info("lease %s: a write answered %s after %d attempt%s; read back, "
                 "it is ours", where(ls, e->key, w), why_text(err, why), res.attempts,
                 res.attempts == 1 ? "" : "s");
        pthread_mutex_lock(&ls->lock);
        e->try_token[0] = '\0';
        pthread_mutex_unlock(&ls->lock);
    } else {
        set_seen(ls, e, &b);
        rc = strcmp(b.token, token) == 0 ? rc : -EEXIST;
    }
    json_decref(b.doc);
    return ours ? 0 : rc;
}

/* Renews a held lease (caller holds e->op). 0, -EBUSY (lost: who), or a
 * store error (still held until its validity runs out). */
static int renew(struct leases *ls, struct lentry *e, char *who, size_t wholen)
{
    pthread_mutex_lock(&ls->lock);
    if (e->state != L_HELD) {
        pthread_mutex_unlock(&ls->lock);
        return -EBUSY;
    }
    char token[TOKEN_LEN + 1], etag[STORE_ETAG_MAX];
    snprintf(token, sizeof token, "%s", e->token);
    snprintf(etag, sizeof etag, "%s", e->etag);
    long long epoch = e->epoch;
    int64_t since = e->since_server_ms;
    pthread_mutex_unlock(&ls->lock);

    char new_etag[STORE_ETAG_MAX];
    int64_t sent;
    int direct;
    struct store_error err;
    int rc = write_lease(ls, e, etag, token, epoch, since, 0, new_etag, &sent, &direct,
                         &err);
    if (rc == 0) {
        int64_t expires = server_now(ls) + ls->ttl_ms;
        pthread_mutex_lock(&ls->lock);
        /* Read back after an unknown outcome: renewed only if it changed. */
        if (direct || strcmp(new_etag, etag) != 0) {
            e->renewed_mono = sent;
            e->expires_server_ms = expires;
        }
        snprintf(e->etag, sizeof e->etag, "%s", new_etag);
        pthread_mutex_unlock(&ls->lock);
        return 0;
    }
    if (rc == -EEXIST || rc == -ENOENT) {
        struct body b;
        struct store_get_info info;
        char seen[WHO_MAX] = "nobody (the lease object is gone)";
        if (read_lease(ls, e, &b, &info, &err) == 0) {
            set_seen(ls, e, &b);
            describe(b.doc, seen, sizeof seen);
            json_decref(b.doc);
        }
        pthread_mutex_lock(&ls->lock);
        e->state = L_LOST;
        snprintf(e->who, sizeof e->who, "%s", seen);
        pthread_mutex_unlock(&ls->lock);
        log_error("job '%s': the lease was taken over by %s; this mount uploads nothing "
                  "more for the job", e->job, seen);
        if (who && wholen)
            snprintf(who, wholen, "%s", seen);
        return -EBUSY;
    }
    char why[WHY_MAX];
    if (who && wholen)
        snprintf(who, wholen, "renewing the lease failed: %s", why_text(&err, why));
    else /* the renewals: tried again at the next one */
        log_warn("job '%s': renewing the lease failed: %s", e->job, why_text(&err, why));
    return rc;
}

/* Takes the lease (caller holds e->op). See lease_acquire. */
static int take(struct leases *ls, struct lentry *e, int local_changes, int *taken,
                char *who, size_t wholen)
{
    for (int round = 0; round < 4; round++) {
        pthread_mutex_lock(&ls->lock);
        enum lstate state = e->state;
        char mine[TOKEN_LEN + 1], trying[TOKEN_LEN + 1];
        snprintf(mine, sizeof mine, "%s", e->token);
        snprintf(trying, sizeof trying, "%s", e->try_token);
        long long my_epoch = e->epoch;
        pthread_mutex_unlock(&ls->lock);

        struct body b = {0};
        struct store_get_info info;
        struct store_error err;
        char why[WHY_MAX];
        int rc = read_lease(ls, e, &b, &info, &err);
        if (rc < 0 && rc != -ENOENT) {
            snprintf(who, wholen, "reading the lease failed: %s", why_text(&err, why));
            return rc;
        }
        char token[TOKEN_LEN + 1];
        new_token(token);
        const char *if_match = STORE_IF_ABSENT;
        long long epoch = 1;
        if (rc == 0) {
            int ours = (mine[0] && strcmp(b.token, mine) == 0) ||
                       (trying[0] && strcmp(b.token, trying) == 0);
            if (ours && state != L_LOST && !b.released) {
                /* Ours already (our write of unknown outcome landed, or the
                 * mount before a crash held it): carry on with it. */
                snprintf(token, sizeof token, "%s", b.token);
                epoch = b.epoch;
            } else {
                int other_since = state == L_LOST ||
                                  (state == L_PREV && strcmp(b.token, mine) != 0) ||
                                  (state == L_HELD && strcmp(b.token, mine) != 0);
                if (other_since && local_changes) {
                    set_seen(ls, e, &b);
                    pthread_mutex_lock(&ls->lock);
                    e->state = L_LOST;
                    snprintf(who, wholen, "%s", e->who);
                    pthread_mutex_unlock(&ls->lock);
                    json_decref(b.doc);
                    return -ESTALE;
                }
                if (!ours && !expired(&b, &info)) {
                    set_seen(ls, e, &b);
                    pthread_mutex_lock(&ls->lock);
                    snprintf(who, wholen, "%s", e->who);
                    if (e->state == L_HELD)
                        e->state = L_LOST;
                    pthread_mutex_unlock(&ls->lock);
                    json_decref(b.doc);
                    return -EBUSY;
                }
                epoch = (b.epoch > my_epoch ? b.epoch : my_epoch) + 1;
            }
            if_match = info.etag;
        } else if (my_epoch > 0) {
            epoch = my_epoch + 1;
        }
        char etag[STORE_ETAG_MAX];
        int64_t sent;
        int direct;
        int64_t since = server_now(ls);
        /* A new token is saved before it is written: should the daemon die
         * once the write landed, its next start knows the lease as its own.
         * Without that (a full disk) no lease is taken, as the journal takes
         * no change then: a lease this mount would not know after a crash
         * would leave its journaled changes refused for good. */
        if (strcmp(token, mine) != 0 && strcmp(token, trying) != 0) {
            pthread_mutex_lock(&ls->lock);
            snprintf(e->try_token, sizeof e->try_token, "%s", token);
            rc = save_state_locked(ls);
            if (rc < 0)
                e->try_token[0] = '\0';
            pthread_mutex_unlock(&ls->lock);
            if (rc < 0) {
                json_decref(b.doc);
                snprintf(who, wholen, "cannot save %s: %s", ls->state_path, strerror(-rc));
                return rc == -ENOSPC ? rc : -EIO; /* as a change the journal refuses */
            }
        }
        rc = write_lease(ls, e, if_match, token, epoch, since, 0, etag, &sent, &direct,
                         &err);
        json_decref(b.doc);
#ifdef BOOKMARKFS_TEST_HOOKS
        /* BOOKMARKFS_CRASH_LEASE=N: exit, as kill -9 would, right after the
         * Nth lease this daemon takes is in the store. */
        static atomic_ulong takes;
        const char *at = getenv("BOOKMARKFS_CRASH_LEASE");
        if (rc == 0 && at && atomic_fetch_add(&takes, 1) + 1 == strtoul(at, NULL, 10)) {
            static const char msg[] = "bookmarkfs: test hook: exit after a lease take\n";
            if (write(2, msg, sizeof msg - 1) < 0)
                _exit(86);
            _exit(86);
        }
#endif
        if (rc == 0) {
            set_held(ls, e, token, epoch, etag, sent, since);
            remember(ls);
            char w[STORE_LOCATION_MAX];
            log_info("job '%s': lease taken (epoch %lld, %s)", e->job, epoch,
                     where(ls, e->key, w));
            *taken = 1;
            return 0;
        }
        if (rc != -EEXIST && rc != -ENOENT) {
            snprintf(who, wholen, "taking the lease failed: %s", why_text(&err, why));
            return rc;
        }
        /* Another mount's write came first: look again. */
    }
    snprintf(who, wholen, "the lease changed hands while it was taken");
    return -EBUSY;
}

/* ---- the interface */

int lease_acquire(struct leases *ls, const char *job, int local_changes, int *taken,
                  char *who, size_t wholen)
{
    char dummy[1];
    if (!who || !wholen) {
        who = dummy;
        wholen = sizeof dummy;
    }
    who[0] = '\0';
    *taken = 0;
    struct lentry *e = entry_get(ls, job);
    if (!e)
        return -ENOMEM;
    pthread_mutex_lock(&ls->lock);
    int64_t mono = clock_mono_ms();
    int fast = valid_locked(ls, e, mono);
    if (e->state == L_HELD)
        e->last_use_mono = mono;
    pthread_mutex_unlock(&ls->lock);
    if (fast)
        return 0;
    pthread_mutex_lock(&e->op);
    pthread_mutex_lock(&ls->lock);
    mono = clock_mono_ms();
    int state = e->state;
    int valid = valid_locked(ls, e, mono);
    pthread_mutex_unlock(&ls->lock);
    int rc = 0;
    if (!valid && state == L_HELD)
        rc = renew(ls, e, who, wholen); /* ran short: renewed here, then */
    if (valid || (state == L_HELD && rc == 0)) {
        rc = 0;
    } else {
        pthread_mutex_lock(&ls->lock);
        if (e->state == L_LOST && !local_changes)
            e->state = L_PREV; /* nothing of ours is at stake any more */
        pthread_mutex_unlock(&ls->lock);
        rc = take(ls, e, local_changes, taken, who, wholen);
    }
    pthread_mutex_unlock(&e->op);
    if (rc == -EBUSY)
        log_warn("job '%s': a change is refused: the job is held by %s", job, who);
    return rc;
}

int lease_held(struct leases *ls, const char *job)
{
    pthread_mutex_lock(&ls->lock);
    struct lentry *e = strmap_get(ls->map, job);
    int held = e && valid_locked(ls, e, clock_mono_ms());
    pthread_mutex_unlock(&ls->lock);
    return held;
}

static void release_entry(struct leases *ls, struct lentry *e, const char *why)
{
    pthread_mutex_lock(&e->op);
    pthread_mutex_lock(&ls->lock);
    int held = e->state == L_HELD;
    char token[TOKEN_LEN + 1], etag[STORE_ETAG_MAX];
    snprintf(token, sizeof token, "%s", e->token);
    snprintf(etag, sizeof etag, "%s", e->etag);
    long long epoch = e->epoch;
    int64_t since = e->since_server_ms;
    if (held)
        e->state = L_PREV; /* remembered: a later holder shows in its token */
    pthread_mutex_unlock(&ls->lock);
    if (held) {
        char new_etag[STORE_ETAG_MAX];
        int64_t sent;
        int direct;
        struct store_error err;
        char text[WHY_MAX];
        int rc = write_lease(ls, e, etag, token, epoch, since, 1, new_etag, &sent, &direct,
                             &err);
        if (rc == 0)
            log_info("job '%s': lease released (%s)", e->job, why);
        else
            log_warn("job '%s': releasing the lease failed (%s): it lapses after %ld s",
                     e->job, why_text(&err, text), ls->ttl_ms / 1000);
    }
    pthread_mutex_unlock(&e->op);
}

void lease_release(struct leases *ls, const char *job)
{
    pthread_mutex_lock(&ls->lock);
    struct lentry *e = strmap_get(ls->map, job);
    pthread_mutex_unlock(&ls->lock);
    if (e)
        release_entry(ls, e, "completed or forgotten");
}

int lease_fenced(struct leases *ls, const char *job)
{
    pthread_mutex_lock(&ls->lock);
    struct lentry *e = strmap_get(ls->map, job);
    int fenced = e && e->state == L_LOST;
    pthread_mutex_unlock(&ls->lock);
    return fenced;
}

void lease_forget(struct leases *ls, const char *job)
{
    pthread_mutex_lock(&ls->lock);
    struct lentry *e = strmap_get(ls->map, job);
    if (e && e->state == L_LOST)
        e->state = L_PREV;
    pthread_mutex_unlock(&ls->lock);
}

json_t *lease_info(struct leases *ls, const char *job)
{
    pthread_mutex_lock(&ls->lock);
    struct lentry *e = strmap_get(ls->map, job);
    json_t *out = NULL;
    if (e && (e->state != L_NONE || e->seen)) {
        static const char *names[] = {"none", "held", "released", "lost"};
        const char *state = names[e->state];
        int64_t mono = clock_mono_ms();
        if (e->state == L_HELD && !valid_locked(ls, e, mono))
            state = "held, not renewed in time";
        else if ((e->state == L_NONE || e->state == L_PREV) && e->seen &&
                 !json_is_true(json_object_get(e->seen, "released")))
            state = "held by another mount";
        char since[40], exp[40];
        iso_ms(e->since_server_ms, since);
        iso_ms(e->expires_server_ms, exp);
        char w[STORE_LOCATION_MAX];
        out = json_pack("{s:s, s:s, s:I, s:s?}", "state", state, "object",
                        where(ls, e->key, w),
                        "epoch", (json_int_t)e->epoch, "holder",
                        e->who[0] && e->state != L_HELD ? e->who : NULL);
        if (out && e->state == L_HELD) {
            json_object_set_new(out, "since", json_string(since));
            json_object_set_new(out, "expires", json_string(exp));
            json_object_set_new(out, "host", json_string(ls->host));
            json_object_set_new(out, "pid", json_integer(ls->pid));
            json_object_set_new(out, "mount", json_string(ls->mount));
        }
        if (out && e->seen && e->state != L_HELD)
            json_object_set(out, "seen", e->seen);
    }
    pthread_mutex_unlock(&ls->lock);
    return out ? out : json_null();
}

static int add_held(const char *job, void *value, void *arg)
{
    struct lentry *e = value;
    if (e->state == L_HELD)
        json_array_append_new(arg, json_string(job));
    return 0;
}

json_t *leases_status(struct leases *ls)
{
    json_t *held = json_array();
    if (!held)
        return NULL;
    pthread_mutex_lock(&ls->lock);
    strmap_each(ls->map, add_held, held);
    pthread_mutex_unlock(&ls->lock);
    return json_pack("{s:s, s:I, s:I, s:s, s:o}", "prefix", ls->prefix, "ttl_seconds",
                     (json_int_t)(ls->ttl_ms / 1000), "idle_seconds",
                     (json_int_t)(ls->idle_ms / 1000), "bucket", ls->bucket, "held", held);
}

/* ---- background renewal and idle lapse */

struct due {
    struct lentry **v;
    size_t n, cap;
    int64_t mono;
    struct leases *ls;
    enum { DUE_RENEW, DUE_LAPSE, DUE_HELD } what; /* held leases: due for a
                                  renewal, idle, or all of them */
};

/* strmap_each: appends the held leases d asks for to d's list. 0 or
 * -ENOMEM. */
static int collect(const char *job, void *value, void *arg)
{
    (void)job;
    struct lentry *e = value;
    struct due *d = arg;
    if (e->state != L_HELD)
        return 0;
    int want = d->what == DUE_HELD ||
               (d->what == DUE_LAPSE ? d->mono - e->last_use_mono > d->ls->idle_ms
                                     : d->mono - e->renewed_mono >= d->ls->ttl_ms / 3);
    if (!want)
        return 0;
    int rc = vec_reserve(&d->v, &d->cap, d->n + 1, sizeof *d->v, 8);
    if (rc == 0)
        d->v[d->n++] = e;
    return rc;
}

static void *renewer(void *arg)
{
    struct leases *ls = arg;
    long tick = ls->ttl_ms / 6;
    if (tick < 50)
        tick = 50;
    if (tick > 1000)
        tick = 1000;
    pthread_mutex_lock(&ls->lock);
    while (!ls->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += tick / 1000;
        ts.tv_nsec += (tick % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&ls->wake, &ls->lock, &ts);
        if (ls->stop)
            break;
        for (int lapse = 1; lapse >= 0; lapse--) {
            struct due d = {.mono = clock_mono_ms(), .ls = ls,
                            .what = lapse ? DUE_LAPSE : DUE_RENEW};
            strmap_each(ls->map, collect, &d);
            pthread_mutex_unlock(&ls->lock);
            for (size_t i = 0; i < d.n; i++) {
                if (lapse) {
                    log_info("job '%s': no change for %ld s: the run's lease lapses",
                             d.v[i]->job, ls->idle_ms / 1000);
                    release_entry(ls, d.v[i], "idle");
                } else {
                    pthread_mutex_lock(&d.v[i]->op);
                    renew(ls, d.v[i], NULL, 0);
                    pthread_mutex_unlock(&d.v[i]->op);
                }
            }
            free(d.v);
            pthread_mutex_lock(&ls->lock);
        }
    }
    pthread_mutex_unlock(&ls->lock);
    return NULL;
}

int leases_start(struct leases *ls)
{
    int rc = pthread_create(&ls->thread, NULL, renewer, ls);
    if (rc != 0)
        return -rc;
    ls->started = 1;
    return 0;
}

/* ---- the probe */

struct racer {
    struct leases *ls;
    const char *key;
    pthread_barrier_t *start;
    char body[64];
    int rc, ambiguous;
    struct store_error err;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct store_put_result res;
    pthread_barrier_wait(r->start);
    r->rc = store_put_if(r->ls->store, r->ls->bucket, r->key, r->body, strlen(r->body),
                         STORE_IF_ABSENT, &res, &r->err);
    r->ambiguous = res.ambiguous;
    return NULL;
}

int leases_probe(struct leases *ls, int *honoured, char *msg, size_t msglen)
{
    *honoured = 0;
    char token[TOKEN_LEN + 1], *key = NULL;
    new_token(token);
    if (asprintf(&key, "%s.probe-%s", ls->prefix, token) < 0)
        return -ENOMEM;
    pthread_barrier_t start;
    if (pthread_barrier_init(&start, NULL, 2) != 0) {
        free(key);
        return -ENOMEM;
    }
    struct racer r[2];
    pthread_t t[2];
    int started = 0;
    for (int i = 0; i < 2; i++) {
        r[i] = (struct racer){.ls = ls, .key = key, .start = &start};
        snprintf(r[i].body, sizeof r[i].body, "{\"probe\":%d}", i);
    }
    int rc = 0;
    for (; started < 2; started++) {
        if (pthread_create(&t[started], NULL, race, &r[started]) != 0) {
            rc = -EAGAIN;
            break;
        }
    }
    if (started < 2) {
        /* The barrier would never open: run the missing racer here. */
        for (int i = started; i < 2; i++)
            race(&r[i]);
    }
    for (int i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    (void)rc;
    int wins = (r[0].rc == 0) + (r[1].rc == 0);
    int result = 1;
    char w[STORE_LOCATION_MAX], why[WHY_MAX];
    struct store_error err;
    where(ls, key, w);
    for (int i = 0; i < 2; i++) {
        if (r[i].rc < 0 && r[i].rc != -EEXIST && !r[i].ambiguous) {
            snprintf(msg, msglen, "probing conditional writes at %s failed: %s", w,
                     why_text(&r[i].err, why));
            result = r[i].rc;
        }
    }
    if (result == 1 && wins == 2) {
        snprintf(msg, msglen, "the store does not honour If-None-Match: two "
                 "conditional creates of one object both succeeded");
        result = 0;
    }
    if (result == 1) {
        /* Read back: the stored body must be the one winner's. A racer
         * whose answer was lost (RGW answers 500 to a create that lost the
         * race; a retry then answers 412) may be that winner. */
        char *data = NULL;
        size_t len = 0;
        struct store_get_info info;
        int g = store_get_info(ls->store, ls->bucket, key, &data, &len, &info, &err);
        int owner = -1;
        for (int i = 0; g == 0 && i < 2; i++)
            if (len == strlen(r[i].body) && memcmp(data, r[i].body, len) == 0)
                owner = i;
        free(data);
        int winner = r[0].rc == 0 ? 0 : r[1].rc == 0 ? 1 : -1;
        if (g < 0) {
            snprintf(msg, msglen, "reading the probe object %s back failed: %s", w,
                     why_text(&err, why));
            result = g == -ENOENT ? -EIO : g;
        } else if (winner >= 0 && owner != winner) {
            snprintf(msg, msglen, "the store does not honour If-None-Match: a conditional "
                     "create that failed replaced the one that succeeded");
            result = 0;
        } else if (owner < 0) {
            snprintf(msg, msglen, "probing conditional writes: the probe object holds "
                     "neither racer's body");
            result = -EIO;
        }
    }
    if (result == 1) {
        struct store_put_result res;
        const char *wrong = "00000000000000000000000000000000";
        int pw = store_put_if(ls->store, ls->bucket, key, "{}", 2, wrong, &res, &err);
        if (pw == 0) {
            snprintf(msg, msglen, "the store does not honour If-Match: a write with a "
                     "wrong ETag succeeded");
            result = 0;
        } else if (pw != -EEXIST && pw != -ENOENT) {
            snprintf(msg, msglen, "probing If-Match at %s failed: %s", w,
                     why_text(&err, why));
            result = pw;
        }
    }
    int d = store_del(ls->store, ls->bucket, key, &err);
    if (d < 0)
        log_warn("could not remove the probe object %s: %s", w, why_text(&err, why));
    free(key);
    if (result < 0)
        return result;
    *honoured = result == 1;
    return 0;
}

/* ---- life cycle */

/* Frees what leases_new made; its lock and condition only when made. */
static void destroy(struct leases *ls, int locks, int cond)
{
    strmap_free(ls->map, entry_free);
    if (cond)
        pthread_cond_destroy(&ls->wake);
    if (locks)
        pthread_mutex_destroy(&ls->lock);
    free(ls->bucket);
    free(ls->prefix);
    free(ls->mount);
    free(ls->host);
    free(ls->state_path);
    free(ls);
}

int leases_new(const struct lease_config *cfg, struct leases **out)
{
    *out = NULL;
    struct leases *ls = calloc(1, sizeof *ls);
    if (!ls)
        return -ENOMEM;
    ls->store = cfg->store;
    ls->ttl_ms = cfg->ttl_ms > 0 ? cfg->ttl_ms : 30000;
    ls->idle_ms = cfg->idle_ms > 0 ? cfg->idle_ms : 600000;
    ls->pid = (long)getpid();
    char host[HOST_NAME_MAX + 1] = "";
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "unknown");
    host[HOST_NAME_MAX] = '\0';
    ls->bucket = strdup(cfg->bucket);
    ls->prefix = strdup(cfg->prefix ? cfg->prefix : "");
    ls->mount = strdup(cfg->mount ? cfg->mount : "");
    ls->host = strdup(host);
    if (cfg->state_dir && asprintf(&ls->state_path, "%s/%s", cfg->state_dir, STATE_FILE) < 0)
        ls->state_path = NULL;
    int made = strmap_new(&ls->map);
    int locks = pthread_mutex_init(&ls->lock, NULL) == 0;
    int cond = locks && pthread_cond_init(&ls->wake, NULL) == 0;
    if (made < 0 || !ls->bucket || !ls->prefix || !ls->mount || !ls->host ||
        (cfg->state_dir && !ls->state_path) || !cond) {
        destroy(ls, locks, cond);
        return -ENOMEM;
    }
    load_state(ls);
    *out = ls;
    return 0;
}

void leases_free(struct leases *ls)
{
    if (!ls)
        return;
    if (ls->started) {
        pthread_mutex_lock(&ls->lock);
        ls->stop = 1;
        pthread_cond_broadcast(&ls->wake);
        pthread_mutex_unlock(&ls->lock);
        pthread_join(ls->thread, NULL);
    }
    struct due d = {.ls = ls, .what = DUE_HELD};
    pthread_mutex_lock(&ls->lock);
    strmap_each(ls->map, collect, &d);
    pthread_mutex_unlock(&ls->lock);
    for (size_t i = 0; i < d.n; i++)
        release_entry(ls, d.v[i], "unmount");
    free(d.v);
    destroy(ls, 1, 1);
}
