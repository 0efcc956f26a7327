/* Unit tests of the core (fs/jobs.c with the journal, the listing index and
 * the state), driven in-process over the directory store wrapped in the
 * fault-injecting store (store/faulty.h): get_or_create's choice among
 * decoys and ties (README, "Jobs" and "History at any scale"), an upload
 * and the journal's compaction after it, replay after a crash at every
 * journal write, an upload the store refuses, and writers racing uploads
 * (README, "The local journal"); and through the filesystem core
 * (fs/entries.c), a control file's upload the store refuses, keys closed
 * during an upload, leases between two mounts of one store, and a failed
 * upload's S3 error logged once and shown whole in .status. Works in a fresh directory under the
 * current one (meson runs tests in the build directory) and removes it
 * afterwards. */
#include "fs/entries.h"
#include "fs/jobs.h"
#include "fs/metrics.h"
#include "store/faulty.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/unit/check.h"
#include "tests/unit/entries_io.h"

#define LZ "lz-bucket"
#define DLZ "dlz-bucket"
#define IDENTITY "dir store, lz-bucket, dlz-bucket, dom/ds, u, json"

static char top[64];

/* One mount's core: the faulty store over a dir store, the journal, the
 * job table. */
struct env {
    char store_dir[128], cache_dir[128];
    struct store *st; /* the faulty store */
    struct journal *jn;
    struct jobs *j;
    struct layout layout;
};

/* A mount of the store <store>-store with its journal in <cache>-cache. */
static void env_open_at(struct env *e, const char *store, const char *cache,
                        int resume_running)
{
    memset(e, 0, sizeof *e);
    snprintf(e->store_dir, sizeof e->store_dir, "%s/%s-store", top, store);
    snprintf(e->cache_dir, sizeof e->cache_dir, "%s/%s-cache", top, cache);
    char err[512] = "";
    struct store *dir = NULL;
    if (store_dir_new(e->store_dir, &dir, err, sizeof err) < 0)
        fprintf(stderr, "store_dir_new: %s\n", err);
    REQUIRE(dir != NULL);
    dir->list_no_etags = 1; /* as the daemon sets it */
    REQUIRE(faulty_new(dir, &e->st) == 0);
    /* the buckets, as at mount */
    REQUIRE(store_check_bucket(e->st, LZ, err, sizeof err) == 0);
    REQUIRE(store_check_bucket(e->st, DLZ, err, sizeof err) == 0);
    e->jn = NULL;
    if (journal_open(e->cache_dir, IDENTITY, &e->jn, err, sizeof err) < 0)
        fprintf(stderr, "journal_open: %s\n", err);
    REQUIRE(e->jn != NULL);
    e->layout = (struct layout){.domain = "dom", .dataset = "ds", .user = "u",
                                .file_type = "json", .resume_running = resume_running};
    REQUIRE(jobs_new(e->st, &e->layout, LZ, DLZ, &e->j) == 0);
    jobs_set_journal(e->j, e->jn);
}

static void env_open(struct env *e, const char *name, int resume_running)
{
    env_open_at(e, name, name, resume_running);
}

/* Drops everything the process holds: what stays is the journal file and
 * the store, as after kill -9 (every record was written before the call
 * that made it returned). */
static void env_close(struct env *e)
{
    jobs_free(e->j);
    journal_close(e->jn);
    store_destroy(e->st);
    e->j = NULL;
    e->jn = NULL;
    e->st = NULL;
}

static struct store *inner(struct env *e) { return faulty_inner(e->st); }

/* An object written straight into the directory store's tree (README,
 * "local directory store": PATH/<bucket>/<key>; no fsync, no call
 * counted), with its LastModified set to mtime_ms. */
static void put_object(struct env *e, const char *bucket, const char *key,
                       const char *body, int64_t mtime_ms)
{
    char path[512];
    int n = snprintf(path, sizeof path, "%s/%s/%s", e->store_dir, bucket, key);
    REQUIRE(n > 0 && (size_t)n < sizeof path);
    for (char *p = path + strlen(e->store_dir) + 1; (p = strchr(p, '/')); p++) {
        *p = '\0';
        REQUIRE(mkdir(path, 0700) == 0 || errno == EEXIST);
        *p = '/';
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    REQUIRE(fd >= 0);
    size_t len = strlen(body);
    REQUIRE(write(fd, body, len) == (ssize_t)len);
    struct timespec t[2] = {{.tv_sec = mtime_ms / 1000, .tv_nsec = mtime_ms % 1000 * 1000000},
                            {.tv_sec = mtime_ms / 1000, .tv_nsec = mtime_ms % 1000 * 1000000}};
    REQUIRE(futimens(fd, t) == 0);
    REQUIRE(close(fd) == 0);
}

static char *upload_key(const char *user, const char *date, const char *job,
                        const char *kind)
{
    char *k = NULL;
    REQUIRE(asprintf(&k, "dom/ds/upload_date=%s/%s/json/%s_%s.json", date, user, job,
                     kind) > 0);
    return k;
}

static void put_upload(struct env *e, const char *bucket, const char *user,
                       const char *date, const char *job, const char *kind,
                       const char *body, int64_t mtime_ms)
{
    char *k = upload_key(user, date, job, kind);
    put_object(e, bucket, k, body, mtime_ms);
    free(k);
}

/* The job's state as its bytes (malloc'd). */
static char *state_text(struct job *job)
{
    size_t len = 0;
    char *t = NULL;
    REQUIRE(state_to_bytes(job->state, &t, &len) == 0);
    REQUIRE(t != NULL);
    return t;
}

static int text_is(const char *got, const char *want)
{
    if (strcmp(got, want) == 0)
        return 1;
    fprintf(stderr, "  got:  %s\n  want: %s\n", got, want);
    return 0;
}

static void set(struct env *e, struct job *job, const char *key, const char *value)
{
    json_t *v = json_loads(value, JSON_DECODE_ANY, NULL);
    REQUIRE(v != NULL);
    REQUIRE(jobs_set_key(e->j, job, key, v) == 0);
}

/* Every object under the dataset in bucket: a JSON object key -> body. */
static int collect_object(const struct store_object *o, void *arg)
{
    json_object_set_new(arg, o->key, json_null());
    return 0;
}

static json_t *objects(struct env *e, const char *bucket)
{
    json_t *keys = json_object();
    REQUIRE(keys != NULL);
    REQUIRE(store_list_all(inner(e), bucket, "dom/ds/", collect_object, keys, NULL) == 0);
    const char *k;
    json_t *v;
    json_object_foreach(keys, k, v) {
        char *body = NULL;
        size_t len = 0;
        REQUIRE(store_get(inner(e), bucket, k, &body, &len, NULL) == 0);
        json_object_set_new(keys, k, json_stringn(body, len));
        free(body);
    }
    return keys;
}

/* The journal's records of a job, each as a JSON object. */
static int collect_record(const struct journal_record *rec, void *arg)
{
    static const char *const ops[] = {"set", "remove", "rename", "replace", "base"};
    json_t *o = json_pack("{s:s}", "op", ops[rec->op]);
    REQUIRE(o != NULL);
    if (rec->key)
        json_object_set_new(o, "key", json_string(rec->key));
    if (rec->to)
        json_object_set_new(o, "to", json_string(rec->to));
    if (rec->value)
        json_object_set(o, "value", rec->value);
    if (rec->text)
        json_object_set_new(o, "text", json_stringn(rec->text, rec->text_len));
    if (rec->bucket)
        json_object_set_new(o, "bucket", json_string(rec->bucket));
    json_array_append_new(arg, o);
    return 0;
}

static json_t *records(struct env *e, const char *job)
{
    json_t *a = json_array();
    REQUIRE(a != NULL);
    REQUIRE(journal_each(e->jn, job, collect_record, a) == 0);
    return a;
}

static void rm_tree(const char *path);

/* ---- get_or_create's choice */

/* A job's state after jobs_get over a fresh table; "" when it fails, with
 * the error in *rc. */
static char *load(struct env *e, const char *name, int *rc)
{
    struct job *job = NULL;
    *rc = jobs_get(e->j, name, 0, &job);
    char *t = *rc == 0 ? state_text(job) : strdup("");
    REQUIRE(t != NULL);
    jobs_unref(e->j, job);
    return t;
}

static const char *loaded_key(struct env *e, const char *name)
{
    struct job *job = jobs_find_loaded(e->j, name);
    REQUIRE(job != NULL);
    const char *k = json_string_value(json_object_get(job->loaded, "key"));
    jobs_unref(e->j, job);
    return k ? k : "";
}

/* Decoys beside job j's objects: other jobs, other datasets, names that
 * only look like an upload, upload_dates that are not a number. All newer
 * than anything else (date 9999, the latest LastModified). */
static void put_decoys(struct env *e, int64_t t)
{
    static const char *const keys[] = {
        "dom/ds/upload_date=9999/u/json/xj_completed.json",  /* another job */
        "dom/ds/upload_date=9999/u/json/j_completed.json.bak", /* not the name */
        "dom/ds/upload_date=9999/u/json/j_completed.jsonx",
        "dom/ds/upload_date=9999/u/json/j_done.json",
        "dom/dsx/upload_date=9999/u/json/j_completed.json", /* another dataset */
        "dom2/ds/upload_date=9999/u/json/j_completed.json", /* another domain */
        "dom/ds/upload_date=99x9/u/json/j_completed.json",  /* not a number */
        "dom/ds/upload_date=/u/json/j_completed.json",      /* no digits */
        "dom/ds/u/json/j_completed.json",                   /* no upload_date */
        "dom/ds/upload_date=9999/j_completed.json/x",       /* not the last segment */
    };
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        put_object(e, LZ, keys[i], "{\"decoy\":1}", t);
        put_object(e, DLZ, keys[i], "{\"decoy\":2}", t);
    }
}

struct pick_case {
    const char *what;
    int resume_running;
    struct {
        const char *bucket, *user, *date, *kind, *body;
        int64_t mtime_ms;
    } objs[4];
    const char *want; /* the body of the object that must be loaded */
};

static void test_selection(void)
{
    const int64_t T = 1700000000000LL;
    static const struct pick_case cases[] = {
        {"greatest upload_date across the buckets", 0,
         {{LZ, "u", "100", "completed", "{\"v\":\"lz100\"}", T + 5000},
          {DLZ, "u", "200", "completed", "{\"v\":\"dlz200\"}", T},
          {LZ, "u", "150", "completed", "{\"v\":\"lz150\"}", T + 9000}},
         "{\"v\":\"dlz200\"}"},
        {"upload_date as a number, not as text", 0,
         {{LZ, "u", "99", "completed", "{\"v\":\"99\"}", T},
          {DLZ, "u", "100", "completed", "{\"v\":\"100\"}", T},
          {LZ, "u", "0098", "completed", "{\"v\":\"0098\"}", T}},
         "{\"v\":\"100\"}"},
        {"running objects left out by --resume-from=completed", 0,
         {{LZ, "u", "300", "running", "{\"v\":\"r300\"}", T},
          {DLZ, "u", "200", "completed", "{\"v\":\"c200\"}", T}},
         "{\"v\":\"c200\"}"},
        {"running objects taken by --resume-from=running", 1,
         {{LZ, "u", "300", "running", "{\"v\":\"r300\"}", T},
          {DLZ, "u", "200", "completed", "{\"v\":\"c200\"}", T}},
         "{\"v\":\"r300\"}"},
        {"equal upload_date: the greater LastModified", 0,
         /* the older one has the greater key and bucket */
         {{LZ, "u9", "400", "completed", "{\"v\":\"old\"}", T},
          {DLZ, "u1", "400", "completed", "{\"v\":\"new\"}", T + 1},
          {LZ, "u3", "399", "completed", "{\"v\":\"older date\"}", T + 9000}},
         "{\"v\":\"new\"}"},
        {"equal upload_date and LastModified: completed before running", 1,
         {{LZ, "u", "400", "running", "{\"v\":\"running\"}", T},
          {LZ, "u", "400", "completed", "{\"v\":\"completed\"}", T}},
         "{\"v\":\"completed\"}"},
        {"equal upload_date, LastModified and kind: the greater key", 0,
         {{DLZ, "u1", "400", "completed", "{\"v\":\"u1\"}", T},
          {LZ, "u2", "400", "completed", "{\"v\":\"u2\"}", T},
          {DLZ, "u10", "400", "completed", "{\"v\":\"u10\"}", T}},
         "{\"v\":\"u2\"}"},
        {"the same key in both buckets: the greater bucket", 0,
         {{DLZ, "u", "400", "completed", "{\"v\":\"dlz\"}", T},
          {LZ, "u", "400", "completed", "{\"v\":\"lz\"}", T}},
         /* "lz-bucket" > "dlz-bucket" in byte order */
         "{\"v\":\"lz\"}"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const struct pick_case *pc = &cases[c];
        char name[32];
        snprintf(name, sizeof name, "pick%zu", c);
        struct env e;
        env_open(&e, name, pc->resume_running);
        put_decoys(&e, T + 100000);
        for (size_t i = 0; i < 4 && pc->objs[i].bucket; i++)
            put_upload(&e, pc->objs[i].bucket, pc->objs[i].user, pc->objs[i].date, "j",
                       pc->objs[i].kind, pc->objs[i].body, pc->objs[i].mtime_ms);
        int rc = 0;
        char *got = load(&e, "j", &rc);
        if (rc != 0 || !text_is(got, pc->want)) {
            fprintf(stderr, "selection: %s: rc %d\n", pc->what, rc);
            failures++;
        }
        /* one GET: the newest object, found by the listing alone */
        CHECK(faulty_calls(e.st, FAULTY_GET) == 1);
        CHECK(faulty_calls(e.st, FAULTY_PUT) == 0);
        free(got);
        env_close(&e);
    }
}

/* get_or_create where there is nothing to choose, nothing valid, or the
 * store fails. */
static void test_selection_edges(void)
{
    const int64_t T = 1700000000000LL;
    /* A job with only running objects under --resume-from=completed is
     * there and starts empty; a job with no objects is not, unless made. */
    struct env e;
    env_open(&e, "pick-running-only", 0);
    put_decoys(&e, T);
    put_upload(&e, LZ, "u", "500", "r", "running", "{\"v\":1}", T);
    struct job *job = NULL;
    CHECK(jobs_get(e.j, "r", 0, &job) == 0);
    if (job) {
        char *t = state_text(job);
        CHECK(text_is(t, "{}"));
        free(t);
    }
    jobs_unref(e.j, job);
    job = NULL;
    CHECK(jobs_get(e.j, "r", 1, &job) == -EEXIST);
    jobs_unref(e.j, job);
    job = NULL;
    CHECK(jobs_get(e.j, "none", 0, &job) == -ENOENT && job == NULL);
    CHECK(jobs_get(e.j, "none", 1, &job) == 0 && job != NULL);
    jobs_unref(e.j, job);
    env_close(&e);

    /* A newest object that is not a JSON object: EIO, not an empty job;
     * the older valid one is not taken instead. */
    env_open(&e, "pick-bad", 0);
    put_upload(&e, LZ, "u", "600", "j", "completed", "[1,2]", T);
    put_upload(&e, LZ, "u", "599", "j", "completed", "{\"v\":1}", T);
    job = NULL;
    CHECK(jobs_get(e.j, "j", 0, &job) == -EIO && job == NULL);
    CHECK(jobs_get(e.j, "j", 1, &job) == -EIO && job == NULL);
    CHECK(jobs_find_loaded(e.j, "j") == NULL);
    env_close(&e);

    /* A listing that fails on a later page: an error, not the newest
     * candidate of the pages read (page 1 has an older one). */
    env_open(&e, "pick-page2", 0);
    put_upload(&e, LZ, "u", "100", "j", "completed", "{\"v\":\"page 1\"}", T);
    put_upload(&e, DLZ, "u", "100", "j", "completed", "{\"v\":\"page 1\"}", T);
    /* the dir store's pages hold 1000; the first listing is the DLZ's */
    for (int i = 0; i < 1100; i++) {
        char other[16];
        snprintf(other, sizeof other, "other%04d", i);
        put_upload(&e, DLZ, "u", "500", other, "completed", "{}", T);
    }
    put_upload(&e, DLZ, "u", "999", "j", "completed", "{\"v\":\"page 2\"}", T);
    faulty_fail(e.st, FAULTY_LIST, 2, 1, -EIO);
    job = NULL;
    CHECK(jobs_get(e.j, "j", 0, &job) == -EIO && job == NULL);
    CHECK(faulty_calls(e.st, FAULTY_LIST) == 2);
    CHECK(faulty_calls(e.st, FAULTY_GET) == 0);
    int rc = 0;
    char *got = load(&e, "j", &rc);
    CHECK(rc == 0 && text_is(got, "{\"v\":\"page 2\"}"));
    free(got);
    env_close(&e);

    /* A listing or GET the store fails: the error, and no job cached in
     * its place; the next access loads the job. */
    env_open(&e, "pick-fail", 0);
    put_upload(&e, DLZ, "u", "700", "j", "completed", "{\"v\":700}", T);
    put_upload(&e, LZ, "u", "699", "j", "completed", "{\"v\":699}", T);
    faulty_fail(e.st, FAULTY_LIST, 1, 1, -EIO);
    job = NULL;
    CHECK(jobs_get(e.j, "j", 1, &job) == -EIO && job == NULL);
    faulty_fail(e.st, FAULTY_GET, 1, 1, -EACCES);
    CHECK(jobs_get(e.j, "j", 0, &job) == -EACCES && job == NULL);
    faulty_fail(e.st, FAULTY_GET, 1, 1, -ETIMEDOUT);
    CHECK(jobs_get(e.j, "j", 1, &job) == -ETIMEDOUT && job == NULL);
    CHECK(jobs_find_loaded(e.j, "j") == NULL);
    got = load(&e, "j", &rc);
    CHECK(rc == 0 && text_is(got, "{\"v\":700}"));
    free(got);
    char *want = upload_key("u", "700", "j", "completed");
    CHECK(strcmp(loaded_key(&e, "j"), want) == 0);
    free(want);
    env_close(&e);
}

/* Two threads opening one job while its object is being read: one GET,
 * one job, both get it (README, "Jobs": the first access loads it). */
struct load_arg {
    struct env *e;
    struct job *job;
    int rc;
};

static void *load_thread(void *p)
{
    struct load_arg *a = p;
    a->rc = jobs_get(a->e->j, "j", 0, &a->job);
    return NULL;
}

static void test_concurrent_loads(void)
{
    struct env e;
    env_open(&e, "loads", 0);
    put_upload(&e, LZ, "u", "100", "j", "completed", "{\"v\":1}", 1000000);
    faulty_hold(e.st, FAULTY_GET, 1, 0);
    struct load_arg la[2] = {{.e = &e}, {.e = &e}};
    pthread_t th[2];
    REQUIRE(pthread_create(&th[0], NULL, load_thread, &la[0]) == 0);
    REQUIRE(faulty_wait_held(e.st, 30000) == 0);
    REQUIRE(pthread_create(&th[1], NULL, load_thread, &la[1]) == 0);
    /* the second waits for the first's load; the pause gives it the time to
     * get there (were it too short, the test would test less, never fail) */
    struct timespec pause = {0, 50000000};
    nanosleep(&pause, NULL);
    CHECK(jobs_find_loaded(e.j, "j") == NULL);
    faulty_release(e.st);
    for (int i = 0; i < 2; i++)
        REQUIRE(pthread_join(th[i], NULL) == 0);
    CHECK(la[0].rc == 0 && la[1].rc == 0);
    CHECK(la[0].job != NULL && la[0].job == la[1].job);
    CHECK(faulty_calls(e.st, FAULTY_GET) == 1);
    if (la[0].job) {
        char *t = state_text(la[0].job);
        CHECK(text_is(t, "{\"v\":1}"));
        free(t);
    }
    jobs_unref(e.j, la[0].job);
    jobs_unref(e.j, la[1].job);
    env_close(&e);
}

/* ---- an upload and the journal's compaction */

struct upload_arg {
    struct env *e;
    struct job *job;
    enum upload_kind kind;
    int rc;
};

static void *upload_thread(void *p)
{
    struct upload_arg *a = p;
    a->rc = jobs_upload(a->e->j, a->job, a->kind);
    return NULL;
}

/* The key of the job's last upload of kind, as the read-out tells it. */
static const char *last_key(struct job *job, enum upload_kind kind)
{
    const char *k = json_string_value(json_object_get(job->last_upload[kind], "key"));
    return k ? k : "";
}

/* The journal's records of job "j" are exactly `want` (a JSON array). */
static int records_are(struct env *e, json_t *want)
{
    json_t *recs = records(e, "j");
    int same = json_equal(recs, want);
    if (!same) {
        char *g = json_dumps(recs, JSON_COMPACT), *w = json_dumps(want, JSON_COMPACT);
        fprintf(stderr, "  journal: %s\n  want:    %s\n", g, w);
        free(g);
        free(w);
    }
    json_decref(recs);
    json_decref(want);
    return same;
}

static void test_upload_compacts(void)
{
    struct env e;
    env_open(&e, "commit", 0);
    put_upload(&e, LZ, "u", "1000", "j", "completed", "{\"old\":0}", 1000000);
    char *old_key = upload_key("u", "1000", "j", "completed");
    struct job *job = NULL;
    REQUIRE(jobs_get(e.j, "j", 0, &job) == 0);
    set(&e, job, "a", "1");
    set(&e, job, "b", "2");
    CHECK(jobs_rename_key(e.j, job, "b", "c") == 0);
    CHECK(jobs_remove_key(e.j, job, "a") == 0);
    CHECK(jobs_remove_key(e.j, job, "old") == 0);
    set(&e, job, "d", "{\"x\":[3]}");
    const char *want = "{\"c\":2,\"d\":{\"x\":[3]}}";
    char *t = state_text(job);
    CHECK(text_is(t, want));
    free(t);
    /* the base (the object loaded) and the six changes */
    CHECK(records_are(&e, json_pack(
        "[{s:s, s:s, s:s}, {s:s, s:s, s:i}, {s:s, s:s, s:i}, {s:s, s:s, s:s},"
        " {s:s, s:s}, {s:s, s:s}, {s:s, s:s, s:{s:[i]}}]",
        "op", "base", "bucket", LZ, "key", old_key, "op", "set", "key", "a", "value", 1,
        "op", "set", "key", "b", "value", 2, "op", "rename", "key", "b", "to", "c",
        "op", "remove", "key", "a", "op", "remove", "key", "old",
        "op", "set", "key", "d", "value", "x", 3)));

    /* An upload, with a change made while it is on its way to the store:
     * the changes the snapshot holds give way to a base naming the
     * uploaded object; the change made meanwhile stays on top of it. */
    faulty_hold(e.st, FAULTY_PUT, 1, 0);
    struct upload_arg ua = {.e = &e, .job = job, .kind = UPLOAD_RUNNING};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, upload_thread, &ua) == 0);
    REQUIRE(faulty_wait_held(e.st, 30000) == 0);
    set(&e, job, "e", "\"during\"");
    faulty_release(e.st);
    REQUIRE(pthread_join(th, NULL) == 0);
    CHECK(ua.rc == 0);
    CHECK(faulty_calls(e.st, FAULTY_PUT) == 1);
    char *key1 = strdup(last_key(job, UPLOAD_RUNNING));
    REQUIRE(key1 != NULL);
    json_t *objs = objects(&e, LZ);
    CHECK(json_object_size(objs) == 2); /* the loaded object and the upload */
    const char *body = json_string_value(json_object_get(objs, key1));
    CHECK(body && text_is(body, want)); /* the snapshot: from before the change */
    json_decref(objs);
    CHECK(records_are(&e, json_pack("[{s:s, s:s, s:s}, {s:s, s:s, s:s}]", "op", "base",
                                    "bucket", LZ, "key", key1, "op", "set", "key", "e",
                                    "value", "during")));
    const char *want2 = "{\"c\":2,\"d\":{\"x\":[3]},\"e\":\"during\"}";
    t = state_text(job);
    CHECK(text_is(t, want2));
    free(t);
    jobs_unref(e.j, job);
    env_close(&e);

    /* The next mount, whose store cannot be read at first: the job stays
     * unloaded and its records stay, for the next access... */
    env_open(&e, "commit", 0);
    json_t *kept = records(&e, "j");
    faulty_fail(e.st, FAULTY_GET, 1, 1, -EIO);
    jobs_replay(e.j);
    CHECK(faulty_calls(e.st, FAULTY_GET) == 1);
    CHECK(jobs_find_loaded(e.j, "j") == NULL);
    CHECK(records_are(&e, kept));
    /* ...which has the uploaded object, with the change on top. */
    job = NULL;
    REQUIRE(jobs_get(e.j, "j", 0, &job) == 0);
    t = state_text(job);
    CHECK(text_is(t, want2));
    free(t);
    CHECK(strcmp(loaded_key(&e, "j"), key1) == 0);

    /* An upload with no change since its snapshot: the job's records go
     * (the next mount loads the upload back). */
    CHECK(jobs_upload(e.j, job, UPLOAD_COMPLETED) == 0);
    CHECK(faulty_calls(e.st, FAULTY_PUT) == 1);
    CHECK(journal_count(e.jn, "j") == 0);
    objs = objects(&e, LZ);
    body = json_string_value(json_object_get(objs, last_key(job, UPLOAD_COMPLETED)));
    CHECK(body && text_is(body, want2));
    json_decref(objs);
    jobs_unref(e.j, job);
    env_close(&e);

    env_open(&e, "commit", 0);
    int rc = 0;
    t = load(&e, "j", &rc);
    CHECK(rc == 0 && text_is(t, want2));
    free(t);
    env_close(&e);
    free(key1);
    free(old_key);
}

/* ---- replay after a crash */

/* The changes a crashed process makes, in order; after step i (1-based)
 * the state is want[i]; uploads change nothing in it. The mounts use
 * --resume-from=running, so that every state, uploaded or not, is what the
 * next mount starts from (with completed, a job whose last upload is a
 * running one starts from its last completed one: README, "The local
 * journal"). */
enum step_op { S_SET, S_REMOVE, S_RENAME, S_REPLACE, S_CREATE, S_UPLOAD_RUNNING,
               S_UPLOAD_COMPLETED };
struct step {
    enum step_op op;
    const char *key, *arg;
    const char *want;
};

static const struct step steps[] = {
    {S_SET, "a", "1", "{\"a\":1}"},
    {S_SET, "b", "[true]", "{\"a\":1,\"b\":[true]}"},
    {S_CREATE, "n", NULL, "{\"a\":1,\"b\":[true],\"n\":null}"},
    {S_UPLOAD_RUNNING, NULL, NULL, "{\"a\":1,\"b\":[true],\"n\":null}"},
    {S_RENAME, "a", "z", "{\"b\":[true],\"n\":null,\"z\":1}"},
    {S_SET, "b", "\"two\"", "{\"b\":\"two\",\"n\":null,\"z\":1}"},
    {S_UPLOAD_RUNNING, NULL, NULL, "{\"b\":\"two\",\"n\":null,\"z\":1}"},
    {S_RENAME, "z", "y", "{\"b\":\"two\",\"n\":null,\"y\":1}"},
    {S_REMOVE, "n", NULL, "{\"b\":\"two\",\"y\":1}"},
    {S_UPLOAD_COMPLETED, NULL, NULL, "{\"b\":\"two\",\"y\":1}"},
    {S_REPLACE, NULL, "{\"r\": {\"s\": 1}, \"b\": 3}", "{\"r\":{\"s\":1},\"b\":3}"},
    {S_SET, "c", "0.5", "{\"r\":{\"s\":1},\"b\":3,\"c\":0.5}"},
    {S_UPLOAD_COMPLETED, NULL, NULL, "{\"r\":{\"s\":1},\"b\":3,\"c\":0.5}"},
    {S_RENAME, "r", "b", "{\"b\":{\"s\":1},\"c\":0.5}"},
};
#define NSTEPS (sizeof steps / sizeof *steps)

static int run_step(struct env *e, struct job *job, const struct step *s)
{
    struct timespec made;
    switch (s->op) {
    case S_SET: {
        json_t *v = json_loads(s->arg, JSON_DECODE_ANY, NULL);
        return v ? jobs_set_key(e->j, job, s->key, v) : -ENOMEM;
    }
    case S_REMOVE:
        return jobs_remove_key(e->j, job, s->key);
    case S_RENAME:
        return jobs_rename_key(e->j, job, s->key, s->arg);
    case S_REPLACE:
        return jobs_replace_state(e->j, job, s->arg, strlen(s->arg), NULL, 0);
    case S_CREATE:
        return jobs_create_key(e->j, job, s->key, &made);
    case S_UPLOAD_RUNNING:
        return jobs_upload(e->j, job, UPLOAD_RUNNING);
    case S_UPLOAD_COMPLETED:
        return jobs_upload(e->j, job, UPLOAD_COMPLETED);
    }
    return -EINVAL;
}

/* The crashing process: runs the steps, telling the parent on fd after
 * each one that returned; exits as kill -9 would leave it (no cleanup)
 * after `stop` steps, or where the journal's crash hook stops it. */
static void crash_child(const char *name, int fd, size_t stop)
{
    struct env e;
    env_open(&e, name, 1);
    struct job *job = NULL;
    if (jobs_get(e.j, "j", 1, &job) != 0)
        _exit(2);
    for (size_t i = 0; i < stop; i++) {
        if (run_step(&e, job, &steps[i]) != 0)
            _exit(3);
        unsigned char n = (unsigned char)(i + 1);
        if (write(fd, &n, 1) != 1)
            _exit(4);
    }
    _exit(0);
}

/* Forks the child with BOOKMARKFS_CRASH_AT=at (0: none) and returns how
 * many steps it acknowledged; *status its exit status. */
static size_t crash_run(const char *name, unsigned at, size_t stop, int *status)
{
    int p[2];
    REQUIRE(pipe(p) == 0);
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        char v[16];
        snprintf(v, sizeof v, "%u", at);
        if (at ? setenv("BOOKMARKFS_CRASH_AT", v, 1) : unsetenv("BOOKMARKFS_CRASH_AT"))
            _exit(5);
        crash_child(name, p[1], stop);
    }
    close(p[1]);
    size_t acked = 0;
    unsigned char n;
    while (read(p[0], &n, 1) == 1)
        acked = n;
    close(p[0]);
    int ws = 0;
    REQUIRE(waitpid(pid, &ws, 0) == pid);
    *status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    return acked;
}

/* After a crash with `acked` steps acknowledged: a new table over the same
 * journal and store gives the state after the last acknowledged step, or
 * (a crash inside the next step) after that one. Returns 1 when so. */
static int check_after_crash(const char *name, size_t acked, const char *what)
{
    struct env e;
    env_open(&e, name, 1);
    jobs_replay(e.j);
    struct job *job = NULL;
    int rc = jobs_get(e.j, "j", 0, &job);
    char *got = rc == 0 ? state_text(job) : strdup("(no job)");
    REQUIRE(got != NULL);
    const char *before = acked ? steps[acked - 1].want : "{}";
    const char *after = acked < NSTEPS ? steps[acked].want : before;
    /* before any record, a new job is only in memory: it may be gone */
    int ok = (rc == 0 && (strcmp(got, before) == 0 || strcmp(got, after) == 0)) ||
             (rc == -ENOENT && acked == 0);
    if (!ok)
        fprintf(stderr, "replay after %s (%zu steps acknowledged): rc %d, state %s\n"
                        "  want: %s or %s\n", what, acked, rc, got, before, after);
    free(got);
    jobs_unref(e.j, job);
    env_close(&e);
    return ok;
}

static void test_replay_after_crash(void)
{
    char name[64];
    /* Killed between steps: each prefix of the steps comes back whole. */
    for (size_t stop = 0; stop <= NSTEPS; stop++) {
        snprintf(name, sizeof name, "kill%zu", stop);
        int status = 0;
        size_t acked = crash_run(name, 0, stop, &status);
        CHECK(status == 0 && acked == stop);
        CHECK(check_after_crash(name, acked, "an exit between steps"));
        /* and the next mount over it again: replay changed nothing */
        CHECK(check_after_crash(name, acked, "a second replay"));
    }
#ifdef BOOKMARKFS_TEST_HOOKS
    /* Stopped at every journal write, fsync, rename, truncation or punch
     * (the crash hook of fs/journal.c), the uploads' compactions included,
     * until the run gets through. */
    unsigned points = 0;
    for (unsigned at = 1;; at++) {
        snprintf(name, sizeof name, "crash%u", at);
        int status = 0;
        size_t acked = crash_run(name, at, NSTEPS, &status);
        if (status == 0) {
            CHECK(acked == NSTEPS);
            CHECK(check_after_crash(name, acked, "a run to the end"));
            break;
        }
        CHECK(status == 86); /* the hook's exit */
        char what[64];
        snprintf(what, sizeof what, "a crash at journal point %u", at);
        CHECK(check_after_crash(name, acked, what));
        points++;
        REQUIRE(at < 1000);
    }
    /* the steps write, and the uploads compact: many points */
    CHECK(points >= NSTEPS);
    printf("replay: %u crash points\n", points);
#else
    printf("replay: no crash hook in this build (meson -Dtest_hooks=true)\n");
#endif
}

/* ---- an upload the store refuses */

static void test_upload_failure(void)
{
    struct env e;
    env_open(&e, "fail", 0);
    struct job *job = NULL;
    REQUIRE(jobs_get(e.j, "j", 1, &job) == 0);
    set(&e, job, "a", "1");
    set(&e, job, "b", "{\"c\":[1,2]}");
    CHECK(jobs_rename_key(e.j, job, "a", "x") == 0);
    char *want = state_text(job);
    json_t *recs = records(&e, "j");
    CHECK(json_array_size(recs) == 4);

    static const struct {
        int err, rc; /* what the store says, what the caller gets */
    } faults[] = {{-EIO, -EIO}, {-ENXIO, -EIO}, {-EACCES, -EACCES},
                  {-ETIMEDOUT, -ETIMEDOUT}, {-ENOSPC, -EIO}};
    uint64_t puts = 0;
    for (size_t i = 0; i < sizeof faults / sizeof *faults; i++) {
        faulty_fail(e.st, FAULTY_PUT, 1, 0, faults[i].err);
        CHECK(jobs_upload(e.j, job, i % 2 ? UPLOAD_COMPLETED : UPLOAD_RUNNING) ==
              faults[i].rc);
        puts++;
        CHECK(faulty_calls(e.st, FAULTY_PUT) == puts);
        /* the state and the journal stay, nothing is in the store */
        char *t = state_text(job);
        CHECK(text_is(t, want));
        free(t);
        json_t *now = records(&e, "j");
        CHECK(json_equal(now, recs));
        json_decref(now);
        json_t *objs = objects(&e, LZ);
        CHECK(json_object_size(objs) == 0);
        json_decref(objs);
    }
    pthread_mutex_lock(&e.j->lock);
    CHECK(e.j->stats.uploads_failed == puts);
    CHECK(e.j->stats.uploads_ok == 0);
    CHECK(strstr(e.j->stats.last_error, "upload of job 'j' failed") != NULL);
    pthread_mutex_unlock(&e.j->lock);

    /* A put whose answer is lost after its write landed (a time-out): a
     * failed upload all the same; the journal keeps the changes, as the
     * mount cannot know the object holds them. */
    faulty_lose(e.st, 1, 1, -ETIMEDOUT);
    CHECK(jobs_upload(e.j, job, UPLOAD_COMPLETED) == -ETIMEDOUT);
    json_t *objs = objects(&e, LZ);
    CHECK(json_object_size(objs) == 1); /* it landed */
    json_decref(objs);
    json_t *now = records(&e, "j");
    CHECK(json_equal(now, recs));
    json_decref(now);
    char *kept = state_text(job);
    CHECK(text_is(kept, want));
    free(kept);

    /* A change after the failures is kept as well. */
    set(&e, job, "after", "true");
    free(want);
    want = state_text(job);
    jobs_unref(e.j, job);
    env_close(&e);

    /* The next mount has it all back from the journal... */
    env_open(&e, "fail", 0);
    jobs_replay(e.j);
    job = jobs_find_loaded(e.j, "j");
    REQUIRE(job != NULL);
    char *t = state_text(job);
    CHECK(text_is(t, want));
    free(t);
    /* ...and a retry the store takes uploads it and compacts the journal. */
    CHECK(jobs_upload(e.j, job, UPLOAD_COMPLETED) == 0);
    objs = objects(&e, LZ);
    CHECK(json_object_size(objs) >= 1); /* with the one whose answer was lost */
    const char *body = json_string_value(json_object_get(objs, last_key(job, UPLOAD_COMPLETED)));
    CHECK(body && text_is(body, want));
    json_decref(objs);
    CHECK(journal_count(e.jn, "j") == 0);
    pthread_mutex_lock(&e.j->lock);
    CHECK(e.j->stats.uploads_ok == 1);
    pthread_mutex_unlock(&e.j->lock);
    jobs_unref(e.j, job);
    env_close(&e);

    /* The next mount loads the upload back, with no journal left. */
    env_open(&e, "fail", 0);
    int rc = 0;
    char *got = load(&e, "j", &rc);
    CHECK(rc == 0 && text_is(got, want));
    free(got);
    env_close(&e);
    free(want);
    json_decref(recs);
}

/* ---- writers racing uploads */

#define WRITERS 4
#define WRITES 200 /* writes of each writer, in batches: */
#define BATCH 20   /* after each, a writer waits for an upload begun since */
#define IMAGES 8   /* crash images checked after an upload, while writers go on */

struct race {
    pthread_mutex_t lock;
    pthread_cond_t uploaded;
    int uploads, failed; /* the committer's */
    int stop;
    /* what the store was sent: */
    int puts, bad, backwards;
    int last[WRITERS];
};

struct writer {
    struct env *e;
    struct job *job;
    struct race *race;
    int id;
    atomic_int acked; /* writes that returned 0 */
};

/* Writer i's step n: sets k<i>_<n> = n, then w<i> = n. A state that
 * existed has, for each writer, keys k<i>_0..k<i>_m-1 and no other k<i>_
 * key, and w<i> = m-1 or m-2 (its k was set, its w not yet), or none. */
static void *writer_thread(void *p)
{
    struct writer *w = p;
    int seen = 0;
    for (int n = 0; n < WRITES; n++) {
        if (n % BATCH == 0) {
            /* uploads race the writes: at least one ends within each batch */
            pthread_mutex_lock(&w->race->lock);
            while (n > 0 && w->race->uploads + w->race->failed < seen + 2)
                pthread_cond_wait(&w->race->uploaded, &w->race->lock);
            seen = w->race->uploads + w->race->failed;
            pthread_mutex_unlock(&w->race->lock);
        }
        char key[32];
        snprintf(key, sizeof key, "k%d_%d", w->id, n);
        if (jobs_set_key(w->e->j, w->job, key, json_integer(n)) != 0)
            break;
        snprintf(key, sizeof key, "w%d", w->id);
        if (jobs_set_key(w->e->j, w->job, key, json_integer(n)) != 0)
            break;
        atomic_store(&w->acked, n + 1);
    }
    return NULL;
}

/* The number of writer i's k keys a state holds, or -1 when they are not
 * k<i>_0..k<i>_m-1. */
static int writer_prefix_k(json_t *doc, int i)
{
    char key[32];
    int m = 0;
    for (;; m++) {
        snprintf(key, sizeof key, "k%d_%d", i, m);
        json_t *v = json_object_get(doc, key);
        if (!v)
            break;
        if (json_integer_value(v) != m)
            return -1;
    }
    char prefix[16];
    int plen = snprintf(prefix, sizeof prefix, "k%d_", i);
    int all = 0;
    const char *k;
    json_t *v;
    json_object_foreach(doc, k, v) all += strncmp(k, prefix, (size_t)plen) == 0;
    return all == m ? m : -1; /* else a gap */
}

/* The number of writer i's k keys a snapshot holds, or -1 when the
 * snapshot is not a state that existed. */
static int writer_prefix(json_t *doc, int i)
{
    int m = writer_prefix_k(doc, i);
    if (m < 0)
        return -1;
    char key[32];
    snprintf(key, sizeof key, "w%d", i);
    json_t *w = json_object_get(doc, key);
    if (m == 0)
        return w ? -1 : 0;
    if (m == 1 && !w)
        return m;
    if (!json_is_integer(w))
        return -1;
    json_int_t wv = json_integer_value(w);
    return wv == m - 1 || wv == m - 2 ? m : -1;
}

static void watch_put(const char *bucket, const char *key, const void *body, size_t len,
                      void *arg)
{
    (void)bucket;
    (void)key;
    struct race *r = arg;
    json_t *doc = json_loadb(body, len, 0, NULL);
    pthread_mutex_lock(&r->lock);
    r->puts++;
    for (int i = 0; i < WRITERS; i++) {
        int m = doc ? writer_prefix(doc, i) : -1;
        if (m < 0)
            r->bad++;
        else if (m < r->last[i])
            r->backwards++; /* an older state after a newer one */
        else
            r->last[i] = m;
    }
    pthread_mutex_unlock(&r->lock);
    json_decref(doc);
}

struct committer {
    struct env *e;
    struct job *job;
    struct race *race;
    struct writer *writers;
    int images, image_bad;
};

/* A copy of the journal file as it is now, in a new cache dir `dir`. */
static void copy_journal(struct env *e, const char *dir)
{
    char hex[65], path[256];
    journal_identity_hash(IDENTITY, hex);
    REQUIRE(mkdir(dir, 0700) == 0);
    snprintf(path, sizeof path, "%s/%s", dir, hex);
    REQUIRE(mkdir(path, 0700) == 0);
    snprintf(path, sizeof path, "%s/%s/journal", dir, hex);
    int in = open(journal_path(e->jn), O_RDONLY);
    int out = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    REQUIRE(in >= 0 && out >= 0);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        REQUIRE(write(out, buf, (size_t)n) == n);
    REQUIRE(n == 0);
    close(in);
    REQUIRE(close(out) == 0);
}

/* What a crash right now would leave (the journal file as it is, the
 * store, which only this thread changes): a new table over it has every
 * write acknowledged before. The writers go on meanwhile; a record they
 * are writing may be cut off as a torn tail. */
static void check_image(struct committer *c)
{
    int acked[WRITERS];
    for (int i = 0; i < WRITERS; i++)
        acked[i] = atomic_load(&c->writers[i].acked);
    char name[32];
    snprintf(name, sizeof name, "race-image%d", c->images++);
    struct env img;
    memset(&img, 0, sizeof img);
    snprintf(img.cache_dir, sizeof img.cache_dir, "%s/%s-cache", top, name);
    copy_journal(c->e, img.cache_dir);
    char err[512] = "";
    struct store *dir = NULL;
    REQUIRE(store_dir_new(c->e->store_dir, &dir, err, sizeof err) == 0 && dir != NULL);
    REQUIRE(faulty_new(dir, &img.st) == 0);
    REQUIRE(journal_open(img.cache_dir, IDENTITY, &img.jn, err, sizeof err) == 0);
    REQUIRE(img.jn != NULL);
    img.layout = c->e->layout;
    REQUIRE(jobs_new(img.st, &img.layout, LZ, DLZ, &img.j) == 0);
    jobs_set_journal(img.j, img.jn);
    struct job *job = NULL;
    int rc = jobs_get(img.j, "j", 0, &job);
    json_t *doc = NULL;
    if (rc == 0) {
        char *t = state_text(job);
        doc = json_loads(t, 0, NULL);
        free(t);
    }
    for (int i = 0; i < WRITERS; i++) {
        /* the k keys: a prefix of each writer's, with every acknowledged one */
        int m = doc ? writer_prefix_k(doc, i) : -1;
        if (m < acked[i]) {
            fprintf(stderr, "image %d: writer %d: %d of %d acknowledged writes (rc %d)\n",
                    c->images - 1, i, m, acked[i], rc);
            c->image_bad++;
        }
    }
    json_decref(doc);
    jobs_unref(img.j, job);
    env_close(&img);
}

static void *committer_thread(void *p)
{
    struct committer *c = p;
    for (;;) {
        pthread_mutex_lock(&c->race->lock);
        int stop = c->race->stop;
        pthread_mutex_unlock(&c->race->lock);
        if (stop)
            break;
        int rc = jobs_upload(c->e->j, c->job, UPLOAD_RUNNING);
        if (rc == 0 && c->images < IMAGES)
            check_image(c);
        pthread_mutex_lock(&c->race->lock);
        if (rc == 0)
            c->race->uploads++;
        else
            c->race->failed++;
        pthread_cond_broadcast(&c->race->uploaded);
        pthread_mutex_unlock(&c->race->lock);
    }
    return NULL;
}

static void test_concurrent_writers(void)
{
    struct env e;
    env_open(&e, "race", 1);
    struct race race = {.lock = PTHREAD_MUTEX_INITIALIZER,
                        .uploaded = PTHREAD_COND_INITIALIZER};
    faulty_watch_puts(e.st, watch_put, &race);
    struct job *job = NULL;
    REQUIRE(jobs_get(e.j, "j", 1, &job) == 0);
    struct writer w[WRITERS];
    pthread_t wt[WRITERS], ct;
    struct committer c = {.e = &e, .job = job, .race = &race, .writers = w};
    for (int i = 0; i < WRITERS; i++)
        w[i] = (struct writer){.e = &e, .job = job, .race = &race, .id = i};
    REQUIRE(pthread_create(&ct, NULL, committer_thread, &c) == 0);
    for (int i = 0; i < WRITERS; i++)
        REQUIRE(pthread_create(&wt[i], NULL, writer_thread, &w[i]) == 0);
    for (int i = 0; i < WRITERS; i++)
        REQUIRE(pthread_join(wt[i], NULL) == 0);
    pthread_mutex_lock(&race.lock);
    race.stop = 1;
    pthread_mutex_unlock(&race.lock);
    REQUIRE(pthread_join(ct, NULL) == 0);
    faulty_watch_puts(e.st, NULL, NULL);
    int writes = 0;
    for (int i = 0; i < WRITERS; i++) {
        CHECK(w[i].acked == WRITES);
        writes += 2 * w[i].acked;
    }
    CHECK(race.failed == 0);
    CHECK(race.uploads >= WRITES / BATCH);
    CHECK(race.puts == race.uploads);
    CHECK(race.bad == 0);
    CHECK(race.backwards == 0);
    CHECK(c.images >= 1 && c.image_bad == 0);
    printf("race: %d uploads during %d writes, %d crash images\n", race.uploads, writes,
           c.images);
    /* The state has every acknowledged write. */
    char *want = state_text(job);
    json_t *doc = json_loads(want, 0, NULL);
    REQUIRE(doc != NULL);
    for (int i = 0; i < WRITERS; i++)
        CHECK(writer_prefix(doc, i) == w[i].acked);
    json_decref(doc);
    jobs_unref(e.j, job);
    env_close(&e);

    /* Nothing acknowledged is lost: the next mount, from the last upload
     * and the journal compacted around the writes, has every write (with
     * --resume-from=running, where a running upload is what it starts
     * from). */
    env_open(&e, "race", 1);
    jobs_replay(e.j);
    job = NULL;
    REQUIRE(jobs_get(e.j, "j", 0, &job) == 0);
    char *t = state_text(job);
    CHECK(text_is(t, want));
    free(t);
    CHECK(jobs_upload(e.j, job, UPLOAD_COMPLETED) == 0);
    CHECK(journal_count(e.jn, "j") == 0);
    jobs_unref(e.j, job);
    env_close(&e);
    env_open(&e, "race", 1);
    int rc = 0;
    char *got = load(&e, "j", &rc);
    CHECK(rc == 0 && text_is(got, want));
    free(got);
    env_close(&e);
    free(want);
}

/* ---- the filesystem core (fs/entries.c) over the faulty store */

static int fs_put(struct entries *fs, const char *path, int create, const char *text)
{
    return entries_io_put(fs, getuid(), path, create, text);
}

/* What a read of path gives (malloc'd), "" on an error. */
static char *fs_get(struct entries *fs, const char *path)
{
    char buf[4096];
    entries_io_get(fs, getuid(), path, buf, sizeof buf);
    char *t = strdup(buf);
    REQUIRE(t != NULL);
    return t;
}

/* `echo 1 > MNT/job/running` while the store refuses every put: the
 * write fails (EIO), the keys and the journal stay, .status tells the
 * failure; once the store takes puts again, the same write uploads. */
static void test_entries_upload_failure(void)
{
    struct env e;
    env_open(&e, "fs-fail", 0);
    struct entries *fs = NULL;
    REQUIRE(entries_new(e.j, getuid(), getgid(), NULL, &fs) == 0);
    CHECK(entries_mkdir(fs, getuid(), "/job") == 0);
    CHECK(fs_put(fs, "/job/a", 1, "{\"x\": 1}\n") == 0);
    CHECK(fs_put(fs, "/job/b", 1, "[2]") == 0);
    faulty_fail(e.st, FAULTY_PUT, 1, 0, -EIO);
    CHECK(fs_put(fs, "/job/running", 0, "1\n") == -EIO);
    CHECK(fs_put(fs, "/job/completed", 0, "1\n") == -EIO);
    CHECK(faulty_calls(e.st, FAULTY_PUT) == 2);
    char *t = fs_get(fs, "/job/a");
    CHECK(text_is(t, "{\"x\":1}\n"));
    free(t);
    t = fs_get(fs, "/job/.state.json");
    CHECK(text_is(t, "{\"a\":{\"x\":1},\"b\":[2]}\n"));
    free(t);
    t = fs_get(fs, "/.status");
    CHECK(strstr(t, "upload of job 'job' failed") != NULL);
    free(t);
    json_t *objs = objects(&e, LZ);
    CHECK(json_object_size(objs) == 0);
    json_decref(objs);
    CHECK(journal_changes(e.jn, "job") == 2);

    faulty_fail(e.st, FAULTY_PUT, 0, 0, 0);
    CHECK(fs_put(fs, "/job/completed", 0, "1\n") == 0);
    objs = objects(&e, LZ);
    CHECK(json_object_size(objs) == 1);
    const char *k;
    json_t *v;
    json_object_foreach(objs, k, v) CHECK(text_is(json_string_value(v),
                                                  "{\"a\":{\"x\":1},\"b\":[2]}"));
    json_decref(objs);
    CHECK(journal_count(e.jn, "job") == 0);
    entries_free(fs);
    env_close(&e);
}

struct fs_upload_arg {
    struct entries *fs;
    int rc;
};

static void *fs_upload_thread(void *p)
{
    struct fs_upload_arg *a = p;
    a->rc = fs_put(a->fs, "/job/running", 0, "1");
    return NULL;
}

/* A key closed while an upload is on its way to the store is not in it,
 * and a key open (written, not closed) is in neither: the journal holds
 * the closed one on top of the uploaded object, and the next mount has it. */
static void test_entries_close_during_upload(void)
{
    struct env e;
    env_open(&e, "fs-race", 1);
    struct entries *fs = NULL;
    REQUIRE(entries_new(e.j, getuid(), getgid(), NULL, &fs) == 0);
    CHECK(entries_mkdir(fs, getuid(), "/job") == 0);
    CHECK(fs_put(fs, "/job/a", 1, "1") == 0);
    struct entries_handle *open_h = NULL;
    int noflush = 0;
    REQUIRE(entries_create(fs, getuid(), "/job/open", O_WRONLY | O_CREAT, &open_h,
                           &noflush) == 0);
    CHECK(entries_write(open_h, "\"unclosed\"", 10, 0) == 10);

    faulty_hold(e.st, FAULTY_PUT, 1, 0);
    struct fs_upload_arg ua = {.fs = fs};
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, fs_upload_thread, &ua) == 0);
    REQUIRE(faulty_wait_held(e.st, 30000) == 0);
    CHECK(fs_put(fs, "/job/b", 1, "2") == 0);
    CHECK(fs_put(fs, "/job/a", 0, "3") == 0);
    faulty_release(e.st);
    REQUIRE(pthread_join(th, NULL) == 0);
    CHECK(ua.rc == 0);
    json_t *objs = objects(&e, LZ);
    CHECK(json_object_size(objs) == 1);
    const char *k;
    json_t *v;
    json_object_foreach(objs, k, v) CHECK(text_is(json_string_value(v), "{\"a\":1}"));
    json_decref(objs);
    CHECK(journal_changes(e.jn, "job") == 2);
    CHECK(entries_commit(open_h) == 0);
    entries_close(open_h);
    entries_free(fs);
    env_close(&e);

    env_open(&e, "fs-race", 1);
    jobs_replay(e.j);
    REQUIRE(entries_new(e.j, getuid(), getgid(), NULL, &fs) == 0);
    char *t = fs_get(fs, "/job/.state.json");
    /* a new key takes its place at its close */
    CHECK(text_is(t, "{\"a\":3,\"b\":2,\"open\":\"unclosed\"}\n"));
    free(t);
    entries_free(fs);
    env_close(&e);
}

/* ---- leases between two mounts of one store */

/* Job leases for mount e, named mount (README, "Leases"); remembered
 * beside its journal. */
static struct leases *leases_on(struct env *e, const char *mount)
{
    char dir[256];
    snprintf(dir, sizeof dir, "%s", journal_path(e->jn));
    *strrchr(dir, '/') = '\0';
    struct lease_config lc = {.store = e->st, .bucket = LZ,
                              .prefix = "dom/ds/_bookmarkfs_leases/", .ttl_ms = 60000,
                              .idle_ms = 300000, .mount = mount, .state_dir = dir};
    struct leases *ls = NULL;
    REQUIRE(leases_new(&lc, &ls) == 0);
    e->j->leases = ls;
    e->j->lease_mode = "on";
    return ls;
}

static int status_names(struct entries *fs, const char *what)
{
    char *t = fs_get(fs, "/.status");
    int found = strstr(t, what) != NULL;
    if (!found)
        fprintf(stderr, "  .status without '%s': %s\n", what, t);
    free(t);
    return found;
}

/* Mount a changes the job: mount b's changes get EBUSY naming a, until a
 * writes completed; b then takes the lease and starts from a's upload. A
 * lease claim the store fails changes nothing; once it works, a reloads
 * b's newer state before its change. */
static void test_leases_two_mounts(void)
{
    struct env a, b;
    env_open_at(&a, "lease", "lease-a", 0);
    env_open_at(&b, "lease", "lease-b", 0);
    struct leases *la = leases_on(&a, "/mnt/a"), *lb = leases_on(&b, "/mnt/b");
    struct entries *fa = NULL, *fb = NULL;
    REQUIRE(entries_new(a.j, getuid(), getgid(), NULL, &fa) == 0);
    REQUIRE(entries_new(b.j, getuid(), getgid(), NULL, &fb) == 0);

    CHECK(entries_mkdir(fa, getuid(), "/job") == 0);
    CHECK(fs_put(fa, "/job/k", 1, "1") == 0);
    CHECK(entries_mkdir(fb, getuid(), "/job") == -EBUSY);
    CHECK(status_names(fb, "/mnt/a"));
    CHECK(journal_count(b.jn, "job") == 0);

    CHECK(fs_put(fa, "/job/completed", 0, "1") == 0); /* uploads, releases */
    CHECK(fs_put(fb, "/job/k", 0, "2") == 0);
    char *t = fs_get(fb, "/job/.state.json");
    CHECK(text_is(t, "{\"k\":2}\n"));
    free(t);
    CHECK(fs_put(fa, "/job/k", 0, "3") == -EBUSY);
    CHECK(status_names(fa, "/mnt/b"));
    t = fs_get(fa, "/job/k");
    CHECK(text_is(t, "1\n"));
    free(t);
    CHECK(fs_put(fb, "/job/completed", 0, "1") == 0);

    /* a's claim: the store fails the lease's conditional write */
    uint64_t puts = faulty_calls(a.st, FAULTY_PUT);
    faulty_fail(a.st, FAULTY_PUT, 1, 0, -EIO);
    int rc = fs_put(fa, "/job/k", 0, "4");
    CHECK(rc == -EIO);
    if (rc != -EIO)
        fprintf(stderr, "  the failed claim: %d\n", rc);
    CHECK(faulty_calls(a.st, FAULTY_PUT) > puts);
    t = fs_get(fa, "/job/k");
    CHECK(text_is(t, "1\n"));
    free(t);
    CHECK(journal_changes(a.jn, "job") == 0);
    /* a's claim again: the lease's write lands and its answer is lost;
     * read back, the lease is a's, and the change goes on */
    faulty_lose(a.st, 1, 1, -ETIMEDOUT);
    CHECK(fs_put(fa, "/job/new", 1, "5") == 0);
    t = fs_get(fa, "/job/.state.json");
    CHECK(text_is(t, "{\"k\":2,\"new\":5}\n")); /* b's upload, and the change */
    free(t);
    CHECK(entries_mkdir(fb, getuid(), "/job2") == 0); /* b: another job is free */
    CHECK(fs_put(fb, "/job/k", 0, "6") == -EBUSY);
    CHECK(status_names(fb, "/mnt/a"));

    entries_free(fa);
    entries_free(fb);
    leases_free(la);
    leases_free(lb);
    env_close(&a);
    env_close(&b);
}

/* ---- a failed upload's error: logged once, shown whole */

/* The lines of a file that contain `what` (malloc'd text, "" when none);
 * *n their count. */
static char *lines_with(const char *path, const char *what, int *n)
{
    FILE *f = fopen(path, "r");
    REQUIRE(f != NULL);
    char line[4096];
    json_t *all = json_string("");
    REQUIRE(all != NULL);
    *n = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, what))
            continue;
        (*n)++;
        char *cat = NULL;
        REQUIRE(asprintf(&cat, "%s%s", json_string_value(all), line) > 0);
        json_string_set(all, cat);
        free(cat);
    }
    fclose(f);
    char *t = strdup(json_string_value(all));
    REQUIRE(t != NULL);
    json_decref(all);
    return t;
}

/* In a child process, whose log goes to a file: an upload the store
 * refuses with an S3 error (503 SlowDown, through every retry) gives one
 * error line naming the code and request id, and the root's .status shows
 * the error whole (README, "Observability"). */
static void one_error_line_child(const char *log_path)
{
    failures = 0; /* the child's own */
    REQUIRE(log_use_file(log_path) == 0);
    struct env e;
    env_open(&e, "one-line", 0);
    struct entries *fs = NULL;
    REQUIRE(entries_new(e.j, getuid(), getgid(), NULL, &fs) == 0);
    CHECK(entries_mkdir(fs, getuid(), "/job") == 0);
    CHECK(fs_put(fs, "/job/k", 1, "1") == 0);
    struct store_error slow = {.err = -EIO, .code = "SlowDown",
                               .request_id = "TX4B2D0C1E9F7A",
                               .message = "HTTP 503: Please reduce your request rate."};
    faulty_fail_as(e.st, FAULTY_PUT, 1, 0, &slow);
    CHECK(fs_put(fs, "/job/running", 0, "1") == -EIO);
    char *status = fs_get(fs, "/.status");
    json_t *doc = json_loads(status, 0, NULL);
    json_t *le = json_object_get(doc, "last_error");
    CHECK(json_is_object(le));
    const char *code = json_string_value(json_object_get(le, "code"));
    const char *rid = json_string_value(json_object_get(le, "request_id"));
    const char *smsg = json_string_value(json_object_get(le, "store_message"));
    const char *msg = json_string_value(json_object_get(le, "message"));
    CHECK(code && strcmp(code, "SlowDown") == 0);
    CHECK(rid && strcmp(rid, "TX4B2D0C1E9F7A") == 0);
    CHECK(smsg && strcmp(smsg, slow.message) == 0);
    CHECK(msg && strstr(msg, "job 'job'") && strstr(msg, "SlowDown"));
    json_decref(doc);
    free(status);
    entries_free(fs);
    env_close(&e);
    metrics_clear();
    exit(failures != 0);
}

static void test_one_error_line(void)
{
    char log_path[128];
    snprintf(log_path, sizeof log_path, "%s/one-line.log", top);
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0)
        one_error_line_child(log_path);
    int ws = 0;
    REQUIRE(waitpid(pid, &ws, 0) == pid);
    CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    int n = 0;
    char *errors = lines_with(log_path, ": error: ", &n);
    if (n != 1 || !strstr(errors, "job 'job'") || !strstr(errors, "SlowDown") ||
        !strstr(errors, "TX4B2D0C1E9F7A")) {
        fprintf(stderr, "want one error line naming the job, SlowDown and the request "
                        "id; got %d:\n%s", n, errors);
        failures++;
    }
    free(errors);
    int m = 0;
    char *all = lines_with(log_path, "SlowDown", &m);
    CHECK(m == 1); /* no warning repeats it either */
    free(all);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void rm_tree(const char *path) { nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

int main(void)
{
    log_set_level(LOG_LEVEL_WARN);
    snprintf(top, sizeof top, "test_jobs.XXXXXX");
    REQUIRE(mkdtemp(top) != NULL);
    struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
        {"selection", test_selection},
        {"selection_edges", test_selection_edges},
        {"concurrent_loads", test_concurrent_loads},
        {"upload_compacts", test_upload_compacts},
        {"replay_after_crash", test_replay_after_crash},
        {"upload_failure", test_upload_failure},
        {"concurrent_writers", test_concurrent_writers},
        {"entries_upload_failure", test_entries_upload_failure},
        {"entries_close_during_upload", test_entries_close_during_upload},
        {"leases_two_mounts", test_leases_two_mounts},
        {"one_error_line", test_one_error_line},
    };
    for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int before = failures;
        tests[i].fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        printf("%s: %s (%.2f s)\n", tests[i].name, failures == before ? "ok" : "FAILED",
               (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    }
    metrics_clear();
    rm_tree(top);
    return failures != 0;
}
