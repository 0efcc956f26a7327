/* Unit tests of the Amorphic object layout (fs/layout.c; README, "The tree" and "Semantics"). */
#include "fs/layout.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/check.h"

static const struct layout L = {
    .domain = "dom",
    .dataset = "ds",
    .user = "alice",
    .file_type = "others",
    .resume_running = 0,
};

static void test_keys(void)
{
    char *p = layout_dataset_prefix(&L);
    REQUIRE(p);
    CHECK(strcmp(p, "dom/ds/") == 0);
    free(p);

    char *k = layout_upload_key(&L, "myjob", UPLOAD_RUNNING, 1700000000);
    REQUIRE(k);
    CHECK(strcmp(k, "dom/ds/upload_date=1700000000/alice/others/"
                    "myjob_running.json") == 0);
    free(k);
    /* The job name goes in raw: encoding is the S3 client's job. */
    k = layout_upload_key(&L, "a b+c%d=\xc3\xa9", UPLOAD_COMPLETED, 5);
    REQUIRE(k);
    CHECK(strcmp(k, "dom/ds/upload_date=5/alice/others/"
                    "a b+c%d=\xc3\xa9_completed.json") == 0);
    free(k);
}

/* Runs layout_match and checks the outcome; expect_job NULL = no match. */
static void check_match(const struct layout *l, const char *key, int any,
                        const char *expect_job, enum upload_kind expect_kind,
                        const char *expect_date, int line)
{
    char *job = NULL;
    enum upload_kind kind = UPLOAD_RUNNING;
    const char *ds = NULL;
    size_t dl = 0;
    int rc = layout_match(l, key, any, &job, &kind, &ds, &dl);
    if (!expect_job) {
        if (rc != 0) {
            fprintf(stderr, "line %d: %s matched (job %s), expected not\n",
                    line, key, job ? job : "?");
            failures++;
        }
        free(job);
        return;
    }
    if (rc != 1) {
        fprintf(stderr, "line %d: %s did not match (rc %d)\n", line, key, rc);
        failures++;
        return;
    }
    CHECK(strcmp(job, expect_job) == 0);
    CHECK(kind == expect_kind);
    /* The digits point into the key itself. */
    CHECK(ds >= key && ds + dl <= key + strlen(key));
    CHECK(dl == strlen(expect_date) && memcmp(ds, expect_date, dl) == 0);
    free(job);
}
#define MATCH(l, key, any, job, kind, date)                                  \
    check_match(l, key, any, job, kind, date, __LINE__)
#define NO_MATCH(l, key, any) check_match(l, key, any, NULL, 0, NULL, __LINE__)

static void test_match(void)
{
    struct layout run = L;
    run.resume_running = 1;
    const enum upload_kind C = UPLOAD_COMPLETED, R = UPLOAD_RUNNING;

    /* What we upload is what we match. */
    char *k = layout_upload_key(&L, "myjob", C, 1700000000);
    REQUIRE(k);
    MATCH(&L, k, 0, "myjob", C, "1700000000");
    free(k);

    MATCH(&L, "dom/ds/upload_date=12/alice/others/myjob_completed.json", 0,
          "myjob", C, "12");
    MATCH(&L, "dom/ds/upload_date=12/myjob_completed.json", 0, "myjob", C,
          "12");
    MATCH(&L, "dom/ds/x/upload_date=0012/y/z/myjob_completed.json", 0,
          "myjob", C, "0012");
    /* The first upload_date segment counts. */
    MATCH(&L, "dom/ds/upload_date=3/upload_date=4/myjob_completed.json", 0,
          "myjob", C, "3");
    /* Invalid upload_date segments are skipped, a later valid one counts. */
    MATCH(&L, "dom/ds/upload_date=1x/upload_date=7/j_completed.json", 0, "j",
          C, "7");
    /* A different job name is a different job, reported as such. */
    MATCH(&L, "dom/ds/upload_date=1/u/t/xmyjob_completed.json", 0, "xmyjob",
          C, "1");
    /* Names with odd bytes. */
    MATCH(&L, "dom/ds/upload_date=1/a b_completed.json_completed.json", 0,
          "a b_completed.json", C, "1");

    /* Near misses. */
    NO_MATCH(&L, "dom/ds/upload_date=1/u/t/myjob_completed.json.bak", 0);
    NO_MATCH(&L, "dom/ds/upload_date=1/u/t/myjob_completed.jsonx", 0);
    NO_MATCH(&L, "dom/ds/upload_date=1/u/t/myjob-completed.json", 0);
    NO_MATCH(&L, "dom/ds/upload_date=1/u/t/_completed.json", 0);
    NO_MATCH(&L, "dom/ds/upload_date=1/u/t/_running.json", 1);
    NO_MATCH(&L, "dom/ds/upload_date=1/u/t/", 0);
    NO_MATCH(&L, "dom/ds/upload_date=/u/t/myjob_completed.json", 0);
    NO_MATCH(&L, "dom/ds/upload_date=12a/u/t/myjob_completed.json", 0);
    NO_MATCH(&L, "dom/ds/upload_date=-1/u/t/myjob_completed.json", 0);
    NO_MATCH(&L, "dom/ds/upload_date=+1/u/t/myjob_completed.json", 0);
    NO_MATCH(&L, "dom/ds/upload_date=\xd9\xa1/u/t/myjob_completed.json", 0);
    NO_MATCH(&L, "dom/ds/xupload_date=1/u/t/myjob_completed.json", 0);
    NO_MATCH(&L, "dom/ds/u/t/myjob_completed.json", 0);
    /* The date only in the last segment is no directory. */
    NO_MATCH(&L, "dom/ds/upload_date=1", 0);
    NO_MATCH(&L, "dom/ds/upload_date=1_completed.json", 0);
    NO_MATCH(&L, "dom/ds/myjob_completed.json", 0);
    /* Other dataset or domain. */
    NO_MATCH(&L, "dom/ds2/upload_date=1/u/t/myjob_completed.json", 0);
    NO_MATCH(&L, "dom/d/upload_date=1/u/t/myjob_completed.json", 0);
    NO_MATCH(&L, "dom2/ds/upload_date=1/u/t/myjob_completed.json", 0);
    NO_MATCH(&L, "x/dom/ds/upload_date=1/u/t/myjob_completed.json", 0);
    NO_MATCH(&L, "domds/upload_date=1/u/t/myjob_completed.json", 0);
    NO_MATCH(&L, "dom/ds", 0);
    NO_MATCH(&L, "", 0);
    /* "." and ".." cannot be job directories. */
    NO_MATCH(&L, "dom/ds/upload_date=1/._completed.json", 0);
    NO_MATCH(&L, "dom/ds/upload_date=1/.._completed.json", 0);
    MATCH(&L, "dom/ds/upload_date=1/..._completed.json", 0, "...", C, "1");

    /* Running objects: only with resume_running or match_any_kind. */
    const char *rk = "dom/ds/upload_date=9/alice/others/myjob_running.json";
    NO_MATCH(&L, rk, 0);
    MATCH(&run, rk, 0, "myjob", R, "9");
    MATCH(&L, rk, 1, "myjob", R, "9");
    MATCH(&run, "dom/ds/upload_date=9/a/b/myjob_completed.json", 0, "myjob",
          C, "9");
    MATCH(&L, "dom/ds/upload_date=9/a/b/myjob_completed.json", 1, "myjob", C,
          "9");
}

static struct candidate cand(const char *bucket, const char *key,
                             const char *date, int64_t lm, enum upload_kind k)
{
    struct candidate c = {0};
    c.bucket = strdup(bucket);
    c.key = strdup(key);
    c.upload_date = strdup(date);
    REQUIRE(c.bucket && c.key && c.upload_date);
    c.last_modified_ms = lm;
    c.kind = k;
    return c;
}

/* a > b, a < b both checked, so the order is antisymmetric. */
static void check_newer(struct candidate a, struct candidate b, int line)
{
    if (!(layout_candidate_cmp(&a, &b) > 0 && layout_candidate_cmp(&b, &a) < 0)) {
        fprintf(stderr, "line %d: %s/%s should be newer than %s/%s\n", line,
                a.upload_date, a.key, b.upload_date, b.key);
        failures++;
    }
    layout_candidate_clear(&a);
    layout_candidate_clear(&b);
}
#define NEWER(a, b) check_newer(a, b, __LINE__)

static void test_cmp(void)
{
    const enum upload_kind C = UPLOAD_COMPLETED, R = UPLOAD_RUNNING;
    NEWER(cand("b", "k", "10", 0, C), cand("b", "k", "9", 0, C));
    NEWER(cand("b", "k", "10", 0, R), cand("b", "k", "9", 999, C));
    NEWER(cand("b", "k", "10", 0, C), cand("b", "k", "0009", 0, C));
    NEWER(cand("b", "k", "0010", 0, C), cand("b", "k", "9", 0, C));
    NEWER(cand("b", "k", "1", 0, C), cand("b", "k", "0", 0, C));
    NEWER(cand("b", "k", "1", 0, C), cand("b", "k", "000", 0, C));
    NEWER(cand("b", "k", "100000000000000000000000000001", 0, C),
          cand("b", "k", "100000000000000000000000000000", 0, C));
    NEWER(cand("b", "k", "100000000000000000000000000000", 0, C),
          cand("b", "k", "99999999999999999999999999999", 5, C));
    /* Equal dates (numerically): LastModified decides. */
    NEWER(cand("b", "k", "07", 2, C), cand("b", "k", "7", 1, C));
    NEWER(cand("b", "k", "7", -1, C), cand("b", "k", "7", INT64_MIN, C));
    /* Then completed over running. */
    NEWER(cand("b", "k", "7", 1, C), cand("b", "k", "7", 1, R));
    /* Then key, then bucket, in byte order. */
    NEWER(cand("b", "kb", "7", 1, C), cand("b", "ka", "7", 1, C));
    NEWER(cand("b", "k\xc3\xa9", "7", 1, C), cand("b", "kz", "7", 1, C));
    NEWER(cand("lz", "k", "7", 1, C), cand("dlz", "k", "7", 1, C));

    /* Numerically equal dates, all else equal: equal. */
    struct candidate a = cand("b", "k", "007", 3, C), b = cand("b", "k", "7", 3, C);
    CHECK(layout_candidate_cmp(&a, &b) == 0);
    layout_candidate_clear(&a);
    layout_candidate_clear(&b);
    a = cand("b", "k", "7", 3, C);
    b = cand("b", "k", "7", 3, C);
    CHECK(layout_candidate_cmp(&a, &b) == 0);
    layout_candidate_clear(&a);
    layout_candidate_clear(&b);
    CHECK(a.key == NULL && a.bucket == NULL && a.upload_date == NULL);
    layout_candidate_clear(NULL);
}

/* ---- selection over a shuffled listing, against brute force ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rnd(void)
{
    /* xorshift64*: deterministic, so a failure reproduces. */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717u;
}

struct obj {
    char bucket[8];
    char key[200];
    /* What the generator built, to judge independently of layout.c. */
    int is_candidate;      /* right prefix, right job, acceptable kind */
    uint64_t date;         /* numeric upload_date */
    int64_t lm;
    int completed;
};

/* The definition, on the generator's own numbers: is a newer than b? */
static int defn_newer(const struct obj *a, const struct obj *b)
{
    if (a->date != b->date)
        return a->date > b->date;
    if (a->lm != b->lm)
        return a->lm > b->lm;
    if (a->completed != b->completed)
        return a->completed;
    int c = strcmp(a->key, b->key);
    if (c)
        return c > 0;
    return strcmp(a->bucket, b->bucket) > 0;
}

static void selection_round(int resume_running)
{
    enum { N = 60 };
    struct obj objs[N];
    static const char *const jobs[] = {"myjob", "xmyjob", "myjob2", "myjo"};
    static const char *const prefixes[] = {"dom/ds/", "dom/ds2/", "dom/"};
    for (int i = 0; i < N; i++) {
        struct obj *o = &objs[i];
        snprintf(o->bucket, sizeof o->bucket, "%s", rnd() % 2 ? "lz" : "dlz");
        const char *job = jobs[rnd() % 4 == 0 ? 1 + rnd() % 3 : 0];
        const char *prefix = prefixes[rnd() % 8 == 0 ? 1 + rnd() % 2 : 0];
        o->date = rnd() % 12;
        o->lm = (int64_t)(rnd() % 3);
        o->completed = (int)(rnd() % 2);
        int zeros = (int)(rnd() % 3);
        snprintf(o->key, sizeof o->key, "%supload_date=%.*s%" PRIu64
                 "/u%d/others/%s_%s.json", prefix, zeros, "00", o->date, i,
                 job, o->completed ? "completed" : "running");
        o->is_candidate = strcmp(prefix, "dom/ds/") == 0 &&
                          strcmp(job, "myjob") == 0 &&
                          (o->completed || resume_running);
    }
    /* Fisher-Yates shuffle. */
    for (int i = N - 1; i > 0; i--) {
        int j = (int)(rnd() % (uint64_t)(i + 1));
        struct obj t = objs[i];
        objs[i] = objs[j];
        objs[j] = t;
    }

    /* Expected: the candidate that is newer than every other candidate. */
    int expect = -1;
    for (int i = 0; i < N; i++) {
        if (!objs[i].is_candidate)
            continue;
        int best = 1;
        for (int j = 0; j < N && best; j++)
            if (j != i && objs[j].is_candidate && !defn_newer(&objs[i], &objs[j]))
                best = 0;
        if (best)
            expect = i;
    }

    /* Actual: what a loader does with layout_match and layout_candidate_cmp. */
    struct layout l = L;
    l.resume_running = resume_running;
    struct candidate best = {0};
    int got = -1, matched = 0, want_matched = 0;
    for (int i = 0; i < N; i++) {
        want_matched += objs[i].is_candidate;
        char *job;
        enum upload_kind kind;
        const char *ds;
        size_t dl;
        int rc = layout_match(&l, objs[i].key, 0, &job, &kind, &ds, &dl);
        REQUIRE(rc >= 0);
        if (rc == 0)
            continue;
        int mine = strcmp(job, "myjob") == 0;
        free(job);
        if (!mine)
            continue;
        matched++;
        struct candidate c = {0};
        c.bucket = strdup(objs[i].bucket);
        c.key = strdup(objs[i].key);
        c.upload_date = strndup(ds, dl);
        REQUIRE(c.bucket && c.key && c.upload_date);
        c.last_modified_ms = objs[i].lm;
        c.kind = kind;
        CHECK((kind == UPLOAD_COMPLETED) == objs[i].completed);
        if (got < 0 || layout_candidate_cmp(&c, &best) > 0) {
            layout_candidate_clear(&best);
            best = c;
            got = i;
        } else {
            layout_candidate_clear(&c);
        }
    }
    layout_candidate_clear(&best);
    CHECK(matched == want_matched);
    if (got != expect) {
        fprintf(stderr, "selection (resume_running=%d): got %s, expected %s\n",
                resume_running, got >= 0 ? objs[got].key : "none",
                expect >= 0 ? objs[expect].key : "none");
        failures++;
    }
}

static void test_selection(void)
{
    for (int round = 0; round < 200; round++)
        selection_round(round % 2);
}

int main(void)
{
    test_keys();
    test_match();
    test_cmp();
    test_selection();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    puts("test_layout: ok");
    return 0;
}
