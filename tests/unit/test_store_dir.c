/* Unit tests of the local directory store (store/dir.c), in a fresh
 * temporary directory. */
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/unit/check.h"

static char root[4096];

static char *pathf(const char *fmt, const char *a, const char *b)
{
    char *s;
    REQUIRE(asprintf(&s, fmt, root, a, b) >= 0);
    return s;
}

static int put(struct store *st, const char *bucket, const char *key,
               const char *body)
{
    struct store_put_result res = {0};
    int rc = store_put(st, bucket, key, body, strlen(body), &res, NULL);
    if (rc == 0) {
        /* The ETag is the hex MD5 of the body, computed here separately. */
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned n = 0;
        REQUIRE(EVP_Digest(body, strlen(body), md, &n, EVP_md5(), NULL));
        char hex[2 * EVP_MAX_MD_SIZE + 1];
        for (unsigned i = 0; i < n; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
        CHECK(strcmp(res.etag, hex) == 0);
        CHECK(res.attempts == 1);
    }
    return rc;
}

static void check_get(struct store *st, const char *bucket, const char *key,
                      const char *expect, int line)
{
    char *data = NULL;
    size_t len = 0;
    int rc = store_get(st, bucket, key, &data, &len, NULL);
    if (rc != 0 || len != strlen(expect) || memcmp(data, expect, len) != 0 ||
        data[len] != '\0') {
        fprintf(stderr, "line %d: get %s: rc %d, got \"%s\"\n", line, key, rc,
                rc == 0 ? data : "");
        failures++;
    }
    free(data);
}
#define CHECK_GET(st, b, k, e) check_get(st, b, k, e, __LINE__)

static int get_rc(struct store *st, const char *bucket, const char *key)
{
    char *data = NULL;
    size_t len = 0;
    int rc = store_get(st, bucket, key, &data, &len, NULL);
    free(data);
    return rc;
}

/* ---- listing helpers ---- */

struct keys {
    char **v;
    size_t n, cap;
};

static int collect(const struct store_object *o, void *arg)
{
    struct keys *k = arg;
    if (k->n == k->cap) {
        k->cap = k->cap ? 2 * k->cap : 64;
        k->v = realloc(k->v, k->cap * sizeof *k->v);
        REQUIRE(k->v);
    }
    k->v[k->n] = strdup(o->key);
    REQUIRE(k->v[k->n]);
    k->n++;
    return 0;
}

static void keys_free(struct keys *k)
{
    for (size_t i = 0; i < k->n; i++)
        free(k->v[i]);
    free(k->v);
    memset(k, 0, sizeof *k);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The listing equals exactly `expect` (any order given), sorted by strcmp. */
static void check_list(struct store *st, const char *bucket, const char *prefix,
                       const char *const *expect, size_t n, int line)
{
    struct keys got = {0};
    int rc = store_list_all(st, bucket, prefix, collect, &got, NULL);
    char **want = calloc(n + 1, sizeof *want);
    REQUIRE(want);
    memcpy(want, expect, n * sizeof *want);
    qsort(want, n, sizeof *want, cmp_str);
    int ok = rc == 0 && got.n == n;
    for (size_t i = 0; ok && i < n; i++)
        ok = strcmp(got.v[i], want[i]) == 0;
    if (!ok) {
        fprintf(stderr, "line %d: list \"%s\": rc %d, %zu keys (want %zu)\n",
                line, prefix, rc, got.n, n);
        for (size_t i = 0; i < got.n; i++)
            fprintf(stderr, "  got %s\n", got.v[i]);
        failures++;
    }
    free(want);
    keys_free(&got);
}
#define CHECK_LIST(st, b, p, ...)                                            \
    do {                                                                     \
        static const char *const w_[] = {__VA_ARGS__};                       \
        check_list(st, b, p, w_ + 1, sizeof w_ / sizeof w_[0] - 1, __LINE__); \
    } while (0)

/* Entries in ROOT/.tmp (temp files left behind), or -1 if unreadable. */
static int tmp_entries(void)
{
    char *p = pathf("%s/.tmp%s%s", "", "");
    DIR *d = opendir(p);
    free(p);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static const char *const odd_keys[] = {
    "dom/ds/upload_date=1/u/others/my job_completed.json",
    "a+b/c=d/e%20f",
    "unicode/\xc3\xa9t\xc3\xa9/\xe2\x82\xac\xf0\x9f\x98\x80",
    "top",
    "x/y/z/deep",
    ".hidden/.key",
    "sp ace/ /x",
};

static void test_roundtrip(struct store *st)
{
    for (size_t i = 0; i < sizeof odd_keys / sizeof odd_keys[0]; i++) {
        CHECK(put(st, "bkt", odd_keys[i], odd_keys[i]) == 0);
        CHECK_GET(st, "bkt", odd_keys[i], odd_keys[i]);
    }
    /* Overwrite, with shorter content. */
    CHECK(put(st, "bkt", "top", "{\"a\":1}") == 0);
    CHECK_GET(st, "bkt", "top", "{\"a\":1}");
    CHECK(put(st, "bkt", "top", "{}") == 0);
    CHECK_GET(st, "bkt", "top", "{}");
    /* Empty body. */
    CHECK(put(st, "bkt", "empty", "") == 0);
    CHECK_GET(st, "bkt", "empty", "");

    CHECK(tmp_entries() == 0);
    char *p = pathf("%s/%s/%s", "bkt", "top");
    struct stat sb;
    REQUIRE(stat(p, &sb) == 0);
    CHECK((sb.st_mode & 07777) == 0600);
    free(p);

    /* Missing keys, directories, buckets. */
    CHECK(get_rc(st, "bkt", "nope") == -ENOENT);
    CHECK(get_rc(st, "bkt", "x/y") == -ENOENT);       /* a directory */
    CHECK(get_rc(st, "bkt", "top/below") == -ENOENT); /* under a file */
    CHECK(get_rc(st, "nobucket", "top") == -ENXIO);
    struct store_page page;
    CHECK(st->ops->list_page(st, "nobucket", "", NULL, &page, NULL) == -ENXIO);
}

static void test_bad_keys(struct store *st)
{
    static const char *const bad[] = {
        "", "/abs", "a//b", "a/", "./a", "a/./b", "a/..", "../x", "..", ".",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(put(st, "bkt", bad[i], "x") == -EINVAL);
    char longseg[300];
    memset(longseg, 'a', 256);
    longseg[256] = '\0';
    CHECK(put(st, "bkt", longseg, "x") == -EINVAL);
    longseg[255] = '\0';
    CHECK(put(st, "bkt", longseg, "x") == 0); /* 255 bytes is a valid name */
    CHECK_GET(st, "bkt", longseg, "x");
    /* Bad bucket names. */
    CHECK(put(st, ".tmp", "k", "x") == -EINVAL);
    CHECK(put(st, "a/b", "k", "x") == -EINVAL);
    CHECK(put(st, "", "k", "x") == -EINVAL);
    /* A key can't be both an object and a "directory" here. */
    CHECK(put(st, "bkt", "top/under", "x") == -EINVAL);
    CHECK(put(st, "bkt", "x/y", "x") == -EINVAL);
    CHECK(tmp_entries() == 0);
}

static void test_list(struct store *st)
{
    static const char *const keys[] = {
        "p/a-b", "p/a/b", "p/a/c/d", "p/ab", "p/b", "p/A", "p/\xc3\xa9",
        "p/a b", "p/a+b", "p/a=1", "q/a", "pp/a",
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        REQUIRE(put(st, "lst", keys[i], "v") == 0);
    /* "": everything, in strcmp order (check_list sorts the expectation). */
    CHECK_LIST(st, "lst", "", "", "p/a-b", "p/a/b", "p/a/c/d", "p/ab",
               "p/b", "p/A", "p/\xc3\xa9", "p/a b", "p/a+b", "p/a=1", "q/a",
               "pp/a");
    CHECK_LIST(st, "lst", "p/", "", "p/a-b", "p/a/b", "p/a/c/d",
               "p/ab", "p/b", "p/A", "p/\xc3\xa9", "p/a b", "p/a+b", "p/a=1");
    /* Prefixes ending mid-segment. */
    CHECK_LIST(st, "lst", "p", "", "p/a-b", "p/a/b", "p/a/c/d", "p/ab",
               "p/b", "p/A", "p/\xc3\xa9", "p/a b", "p/a+b", "p/a=1", "pp/a");
    CHECK_LIST(st, "lst", "p/a", "", "p/a-b", "p/a/b", "p/a/c/d",
               "p/ab", "p/a b", "p/a+b", "p/a=1");
    CHECK_LIST(st, "lst", "p/a/", "", "p/a/b", "p/a/c/d");
    CHECK_LIST(st, "lst", "p/a/c", "", "p/a/c/d");
    CHECK_LIST(st, "lst", "p/a/c/d", "", "p/a/c/d");
    CHECK_LIST(st, "lst", "p/\xc3", "", "p/\xc3\xa9");
    /* Nothing there. */
    CHECK_LIST(st, "lst", "zz", "");
    CHECK_LIST(st, "lst", "p/zz/", "");
    CHECK_LIST(st, "lst", "p/../", "");
    CHECK_LIST(st, "lst", "p/a/c/d/", "");

    /* One page carries sizes, times and ETags. */
    struct store_page page;
    REQUIRE(st->ops->list_page(st, "lst", "q/", NULL, &page, NULL) == 0);
    CHECK(page.count == 1 && page.next_token == NULL);
    if (page.count == 1) {
        CHECK(strcmp(page.objects[0].key, "q/a") == 0);
        CHECK(page.objects[0].size == 1);
        CHECK(strcmp(page.objects[0].etag,
                     "9e3669d19b675bd57058fd4664205d2a") == 0); /* md5("v") */
        char *p = pathf("%s/%s/%s", "lst", "q/a");
        struct stat sb;
        REQUIRE(stat(p, &sb) == 0);
        CHECK(page.objects[0].last_modified_ms ==
              (int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000);
        free(p);
    }
    store_page_free(&page);
    /* A caller that never reads them spares the hashing. */
    st->list_no_etags = 1;
    REQUIRE(st->ops->list_page(st, "lst", "q/", NULL, &page, NULL) == 0);
    CHECK(page.count == 1 && page.objects[0].etag[0] == '\0' && page.objects[0].size == 1);
    store_page_free(&page);
    st->list_no_etags = 0;
}

static void test_pagination(struct store *st)
{
    enum { N = 2345 };
    char **keys = calloc(N, sizeof *keys);
    REQUIRE(keys);
    for (int i = 0; i < N; i++) {
        /* Spread over directories and flat names, so byte order crosses
         * directory boundaries ("d/1/..." vs "d/1-..."). */
        switch (i % 3) {
        case 0:
            REQUIRE(asprintf(&keys[i], "d/%d/k%d", i % 7, i) >= 0);
            break;
        case 1:
            REQUIRE(asprintf(&keys[i], "d/%d-k%d", i % 7, i) >= 0);
            break;
        default:
            REQUIRE(asprintf(&keys[i], "d/k%d", i) >= 0);
        }
        REQUIRE(put(st, "many", keys[i], keys[i]) == 0);
    }
    qsort(keys, N, sizeof *keys, cmp_str);

    struct keys got = {0};
    CHECK(store_list_all(st, "many", "d/", collect, &got, NULL) == 0);
    CHECK(got.n == N);
    for (size_t i = 0; i < got.n && i < N; i++)
        CHECK(strcmp(got.v[i], keys[i]) == 0);
    keys_free(&got);

    /* Pages hold at most 1000 keys, and the token resumes strictly after. */
    struct store_page page;
    REQUIRE(st->ops->list_page(st, "many", "d", NULL, &page, NULL) == 0);
    CHECK(page.count == 1000);
    CHECK(page.next_token && strcmp(page.next_token, keys[999]) == 0);
    store_page_free(&page);
    REQUIRE(st->ops->list_page(st, "many", "d", keys[999], &page, NULL) == 0);
    CHECK(page.count == 1000 && strcmp(page.objects[0].key, keys[1000]) == 0);
    store_page_free(&page);
    REQUIRE(st->ops->list_page(st, "many", "d", keys[1999], &page, NULL) == 0);
    CHECK(page.count == N - 2000 && page.next_token == NULL);
    store_page_free(&page);

    for (int i = 0; i < N; i++)
        free(keys[i]);
    free(keys);
    CHECK(tmp_entries() == 0);
}

/* The keys greater than start_after, page after page. */
static void check_from(struct store *st, const char *bucket, const char *prefix,
                       const char *after, char **sorted, size_t n, int line)
{
    struct keys got = {0};
    int rc = store_list_from(st, bucket, prefix, after, collect, &got, NULL);
    size_t first = 0;
    while (first < n && (strncmp(sorted[first], prefix, strlen(prefix)) != 0 ||
                         (after && strcmp(sorted[first], after) <= 0)))
        first++;
    size_t want = 0;
    for (size_t i = first; i < n; i++)
        if (strncmp(sorted[i], prefix, strlen(prefix)) == 0)
            want++;
    int ok = rc == 0 && got.n == want;
    for (size_t i = 0, j = first; ok && i < got.n; i++, j++) {
        while (strncmp(sorted[j], prefix, strlen(prefix)) != 0)
            j++;
        ok = strcmp(got.v[i], sorted[j]) == 0;
    }
    if (!ok) {
        fprintf(stderr, "line %d: list \"%s\" after \"%s\": rc %d, %zu keys (want %zu)\n",
                line, prefix, after ? after : "", rc, got.n, want);
        failures++;
    }
    keys_free(&got);
}

/* StartAfter: only keys strictly greater, in order, across directory
 * boundaries and pages, whether or not start_after is itself a key. */
static void test_start_after(struct store *st)
{
    enum { N = 1200 };
    char **keys = calloc(N, sizeof *keys);
    REQUIRE(keys);
    for (int i = 0; i < N; i++) {
        switch (i % 4) {
        case 0:
            REQUIRE(asprintf(&keys[i], "d/ds/upload_date=%d/u/o/j%d_completed.json",
                             1000 + i / 4, i % 5) >= 0);
            break;
        case 1:
            REQUIRE(asprintf(&keys[i], "d/ds/upload_date=%d-x", 1000 + i / 4) >= 0);
            break;
        case 2:
            REQUIRE(asprintf(&keys[i], "d/ds/upload_date=%d/u/o/j%d_running.json",
                             1000 + i / 4, i % 5) >= 0);
            break;
        default:
            REQUIRE(asprintf(&keys[i], "d/ds%d/k", i) >= 0);
        }
        REQUIRE(put(st, "sa", keys[i], "{}") == 0);
    }
    qsort(keys, N, sizeof *keys, cmp_str);
    static const char *const bounds[] = {
        NULL, "", "d/ds/", "d/ds/upload_date=1150", "d/ds/upload_date=1150/",
        "d/ds/upload_date=1150/u/o/j", "d/ds/upload_date=1150-x",
        "d/ds/upload_date=1299/u/o/j0_running.json", "d/ds/upload_date=9", "e",
        "d/ds/upload_date=1000/u/o/j0_completed.json",
    };
    for (size_t b = 0; b < sizeof bounds / sizeof bounds[0]; b++) {
        check_from(st, "sa", "d/ds/", bounds[b], keys, N, __LINE__);
        check_from(st, "sa", "d/ds/upload_date=", bounds[b], keys, N, __LINE__);
        check_from(st, "sa", "", bounds[b], keys, N, __LINE__);
    }
    for (int i = 0; i < N; i += 97) {
        check_from(st, "sa", "d/", keys[i], keys, N, __LINE__);
        check_from(st, "sa", "d/ds/upload_date=", keys[i], keys, N, __LINE__);
    }

    /* A listing reads each directory once, however many pages it has; and
     * a directory that has not changed since is not read again. Mtimes are
     * set back an hour first: a directory changed within the last moments
     * is read again (its mtime would not show a change in the same tick). */
    char *cmd;
    REQUIRE(asprintf(&cmd, "find '%s/sa' -type d -exec touch -d '-1 hour' {} +", root) >= 0);
    REQUIRE(system(cmd) == 0);
    free(cmd);
    struct keys got = {0};
    uint64_t before = store_dir_reads(st);
    CHECK(store_list_all(st, "sa", "d/", collect, &got, NULL) == 0 && got.n == N);
    keys_free(&got);
    uint64_t first = store_dir_reads(st) - before;
    /* d, d/ds, 300 upload_date dirs, each with u and u/o (d/ds<i> are files) */
    CHECK(first <= 2 + 300 + 3 * 300);
    before = store_dir_reads(st);
    CHECK(store_list_all(st, "sa", "d/", collect, &got, NULL) == 0 && got.n == N);
    keys_free(&got);
    CHECK(store_dir_reads(st) == before);
    /* After the newest key: only the directories on its way are visited,
     * none read again. */
    before = store_dir_reads(st);
    CHECK(store_list_from(st, "sa", "d/ds/upload_date=", keys[N - 1], collect, &got, NULL) == 0);
    CHECK(got.n == 0);
    keys_free(&got);
    CHECK(store_dir_reads(st) == before);

    /* A new object in a directory that was read is seen (its mtime moved),
     * so is one in a new directory; an object rewritten in place gets its
     * new ETag. */
    REQUIRE(put(st, "sa", "d/ds/upload_date=1100/u/o/new_completed.json", "{\"a\":1}") == 0);
    REQUIRE(put(st, "sa", "d/ds/upload_date=99999/u/o/new_completed.json", "{}") == 0);
    CHECK(store_list_from(st, "sa", "d/ds/upload_date=",
                          "d/ds/upload_date=1100/u/o/j", collect, &got, NULL) == 0);
    int saw_old = 0, saw_new = 0;
    for (size_t i = 0; i < got.n; i++) {
        saw_old |= strcmp(got.v[i], "d/ds/upload_date=1100/u/o/new_completed.json") == 0;
        saw_new |= strcmp(got.v[i], "d/ds/upload_date=99999/u/o/new_completed.json") == 0;
    }
    CHECK(saw_old && saw_new);
    keys_free(&got);
    struct store_page page;
    REQUIRE(put(st, "sa", "d/ds/upload_date=99999/u/o/new_completed.json", "v") == 0);
    REQUIRE(st->ops->list_from(st, "sa", "d/ds/upload_date=99999/", NULL, NULL, &page, NULL) == 0);
    CHECK(page.count == 1 && strcmp(page.objects[0].etag,
                                    "9e3669d19b675bd57058fd4664205d2a") == 0); /* md5("v") */
    store_page_free(&page);

    /* A change in the same clock tick as the listing before it leaves the
     * directory's mtime as it was (set back here to the nanosecond): a
     * directory read within moments of its last change is read again. */
    char *dir = pathf("%s/%s/%s", "sa", "d/ds/upload_date=1200/u/o");
    REQUIRE(dir && utimensat(AT_FDCWD, dir, NULL, 0) == 0);
    struct stat sb;
    REQUIRE(stat(dir, &sb) == 0);
    CHECK(store_list_from(st, "sa", "d/ds/upload_date=1200/", NULL, collect, &got, NULL) == 0);
    size_t had = got.n;
    keys_free(&got);
    REQUIRE(put(st, "sa", "d/ds/upload_date=1200/u/o/tick_completed.json", "{}") == 0);
    struct timespec was[2] = {sb.st_atim, sb.st_mtim};
    REQUIRE(utimensat(AT_FDCWD, dir, was, 0) == 0);
    CHECK(store_list_from(st, "sa", "d/ds/upload_date=1200/", NULL, collect, &got, NULL) == 0);
    CHECK(got.n == had + 1);
    keys_free(&got);
    free(dir);

    for (int i = 0; i < N; i++)
        free(keys[i]);
    free(keys);
}

static void test_buckets(struct store *st)
{
    char msg[300] = "";
    CHECK(store_check_bucket(st, "fresh", msg, sizeof msg) == 0);
    char *p = pathf("%s/%s%s", "fresh", "");
    struct stat sb;
    CHECK(stat(p, &sb) == 0 && S_ISDIR(sb.st_mode));
    free(p);
    /* An existing, empty bucket lists nothing; a missing key is ENOENT. */
    CHECK_LIST(st, "fresh", "", "");
    CHECK(get_rc(st, "fresh", "k") == -ENOENT);
    CHECK(store_check_bucket(st, "fresh", msg, sizeof msg) == 0);
    msg[0] = '\0';
    CHECK(store_check_bucket(st, ".bad", msg, sizeof msg) < 0);
    CHECK(msg[0] != '\0');
}

/* rm -r of the test directory, without following symlinks. */
static void remove_tree(const char *path)
{
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return;
    if (S_ISDIR(sb.st_mode)) {
        DIR *d = opendir(path);
        REQUIRE(d);
        struct dirent *de;
        while ((de = readdir(d))) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                continue;
            char *sub;
            REQUIRE(asprintf(&sub, "%s/%s", path, de->d_name) >= 0);
            remove_tree(sub);
            free(sub);
        }
        closedir(d);
        CHECK(rmdir(path) == 0);
    } else {
        CHECK(unlink(path) == 0);
    }
}

static int root_made;

/* Also after a REQUIRE failure: leave no test directory behind. */
static void cleanup(void)
{
    if (root_made)
        remove_tree(root);
    root_made = 0;
}

/* A failed call tells what failed in the dir store's own words: the file
 * and the system's reason; no S3 code or request id. The locations are the
 * store's files, never s3:// ones. */
static void test_errors(struct store *st)
{
    REQUIRE(put(st, "eb", "a/file", "{}") == 0);
    struct store_error e;
    memset(&e, 'x', sizeof e);
    struct store_put_result res;
    /* "a/file" is an object: no key can go under it */
    CHECK(store_put(st, "eb", "a/file/below", "1", 1, &res, &e) == -EINVAL);
    char *path = pathf("%s/%s/%s", "eb", "a/file/below");
    CHECK(e.err == -EINVAL && strstr(e.message, path) && strstr(e.message, strerror(ENOTDIR)));
    CHECK(e.code[0] == '\0' && e.request_id[0] == '\0');
    char text[1024];
    store_error_text(&e, text, sizeof text);
    CHECK(strcmp(text, e.message) == 0); /* nothing S3's to add */
    free(path);

    CHECK(store_get(st, "nosuchbucket", "k", &(char *){NULL}, &(size_t){0}, &e) == -ENXIO);
    CHECK(e.err == -ENXIO && e.message[0]);
    CHECK(store_put(st, "eb", "../escape", "1", 1, &res, &e) == -EINVAL);
    CHECK(strstr(e.message, "../escape") != NULL);
    /* a call that works clears what an earlier one told */
    CHECK(store_put(st, "eb", "ok", "1", 1, &res, &e) == 0);
    CHECK(e.err == 0 && e.message[0] == '\0');

    char where[STORE_LOCATION_MAX];
    store_locate(st, "eb", "a/file", where, sizeof where);
    path = pathf("%s/%s/%s", "eb", "a/file");
    CHECK(strcmp(where, path) == 0);
    free(path);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = P_tmpdir;
    REQUIRE((size_t)snprintf(root, sizeof root, "%s/test_store_dir.XXXXXX",
                             tmp) < sizeof root);
    REQUIRE(mkdtemp(root));
    root_made = 1;
    REQUIRE(atexit(cleanup) == 0);

    char err[300];
    struct store *st = NULL;
    REQUIRE(store_dir_new(NULL, &st, err, sizeof err) == -EINVAL && st == NULL);
    REQUIRE(store_dir_new(root, &st, err, sizeof err) == 0 && st);
    CHECK(strcmp(st->kind, "dir") == 0);
    /* Creating the store creates nothing. */
    CHECK(get_rc(st, "bkt", "k") == -ENXIO);

    test_roundtrip(st);
    test_bad_keys(st);
    test_list(st);
    test_pagination(st);
    test_start_after(st);
    test_buckets(st);
    test_errors(st);
    store_destroy(st);

    cleanup();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    puts("test_store_dir: ok");
    return 0;
}
