/* Unit tests of the filesystem core (fs/entries.c) driven in-process, with
 * no FUSE and no mount, over the directory store in a fresh directory under
 * the current one (removed afterwards): who may change what, a new key
 * pending until its close, a refused value keeping the old one, a scratch
 * file renamed onto a key, an open scratch file outliving its unlink, the
 * control files' removal, .history/ refusing changes, an upload landing in
 * the store, an open key truncated, a state replaced by a rename, and the
 * files still open at the end committed as their close would have. */
#include "fs/entries.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/unit/check.h"
#include "tests/unit/entries_io.h"

static const uid_t OWNER = 4242, OTHER = 4343;

static struct entries *fs;
static struct jobs *jobs;

/* entries_io.h's put and get, as the job's owner. */
static int put(const char *path, int create, const char *text)
{
    return entries_io_put(fs, OWNER, path, create, text);
}

static int get(const char *path, char *buf, size_t size)
{
    return entries_io_get(fs, OWNER, path, buf, size);
}

static int listed(const char *dir, const char *name)
{
    struct strlist names = {0};
    REQUIRE(entries_list(fs, dir, &names) == 0);
    int found = 0;
    for (size_t i = 0; i < names.n; i++)
        found |= strcmp(names.v[i], name) == 0;
    strlist_clear(&names);
    return found;
}

static off_t size_of(const char *path)
{
    struct stat st;
    int rc = entries_getattr(fs, path, NULL, &st);
    return rc < 0 ? rc : st.st_size;
}

static void test_owner_only(void)
{
    CHECK(entries_mkdir(fs, OTHER, "/job") == -EACCES);
    CHECK(entries_mkdir(fs, OWNER, "/job") == 0);
    CHECK(entries_mkdir(fs, OWNER, "/job") == -EEXIST);
    CHECK(entries_mkdir(fs, OWNER, "/.git") == -EPERM);
    struct stat st;
    REQUIRE(entries_getattr(fs, "/job", NULL, &st) == 0);
    CHECK(S_ISDIR(st.st_mode) && st.st_uid == OWNER);
    struct entries_handle *h = NULL;
    int noflush = 0;
    CHECK(entries_create(fs, OTHER, "/job/k", O_WRONLY | O_CREAT, &h, &noflush) ==
          -EACCES);
    CHECK(entries_unlink(fs, OTHER, "/job/running") == -EACCES);
}

static void test_new_key(void)
{
    struct entries_handle *h = NULL;
    int noflush = 1;
    REQUIRE(entries_create(fs, OWNER, "/job/k", O_WRONLY | O_CREAT, &h, &noflush) == 0);
    CHECK(noflush == 0); /* its close commits */
    /* Created, not yet closed: listed, reads as null. */
    CHECK(listed("/job", "k"));
    CHECK(size_of("/job/k") == 5);
    CHECK(entries_unlink(fs, OWNER, "/job/k") == -EBUSY);
    CHECK(entries_write(h, "42", 2, 0) == 2);
    CHECK(entries_commit(h) == 0);
    entries_close(h);
    char buf[64];
    CHECK(get("/job/k", buf, sizeof buf) == 3 && strcmp(buf, "42\n") == 0);
    /* In the state itself, not only in what the file showed. */
    struct job *job = jobs_find_loaded(jobs, "job");
    REQUIRE(job != NULL);
    CHECK(state_has(job->state, "k"));
    jobs_unref(jobs, job);
}

static void test_refused_value(void)
{
    char buf[64];
    CHECK(put("/job/k", 0, "{bad") == -EINVAL);
    CHECK(get("/job/k", buf, sizeof buf) == 3 && strcmp(buf, "42\n") == 0);
    /* A new key whose first value is refused does not exist. */
    CHECK(put("/job/fresh", 1, "[1,") == -EINVAL);
    CHECK(size_of("/job/fresh") == -ENOENT);
    CHECK(!listed("/job", "fresh"));
}

static void test_scratch(void)
{
    char buf[64];
    CHECK(put("/job/.tmp", 1, "{\"a\": 7}") == 0);
    CHECK(listed("/job", ".tmp"));
    CHECK(entries_rename(fs, OWNER, "/job/.tmp", "/job/k2", 0) == 0);
    CHECK(size_of("/job/.tmp") == -ENOENT);
    CHECK(get("/job/k2", buf, sizeof buf) > 0 && strcmp(buf, "{\"a\":7}\n") == 0);

    /* An open scratch file outlives its unlink. */
    struct entries_handle *h = NULL;
    int noflush = 0;
    REQUIRE(entries_create(fs, OWNER, "/job/.s", O_RDWR | O_CREAT, &h, &noflush) == 0);
    CHECK(noflush == 1);
    CHECK(entries_write(h, "ab", 2, 0) == 2);
    CHECK(entries_unlink(fs, OWNER, "/job/.s") == 0);
    CHECK(size_of("/job/.s") == -ENOENT);
    CHECK(entries_read(h, buf, sizeof buf, 0) == 2 && memcmp(buf, "ab", 2) == 0);
    entries_close(h);
}

static void test_control_files(void)
{
    CHECK(listed("/job", "running"));
    CHECK(entries_unlink(fs, OWNER, "/job/running") == 0);
    CHECK(entries_unlink(fs, OWNER, "/job/running") == -ENOENT);
    CHECK(!listed("/job", "running"));
    CHECK(size_of("/job/running") == -ENOENT);
    /* A create brings it back; the state stayed. */
    struct entries_handle *h = NULL;
    int noflush = 0;
    REQUIRE(entries_create(fs, OWNER, "/job/running", O_WRONLY | O_CREAT, &h,
                           &noflush) == 0);
    entries_close(h);
    CHECK(listed("/job", "running") && listed("/job", "k"));
    CHECK(entries_unlink(fs, OWNER, "/job/.status") == -EPERM);
    CHECK(entries_unlink(fs, OWNER, "/.status") == -EPERM);
}

static void test_history_refuses(void)
{
    CHECK(entries_mkdir(fs, OWNER, "/job/.history") == -EEXIST);
    CHECK(entries_unlink(fs, OWNER, "/job/.history/x.json") == -EROFS);
    CHECK(entries_rmdir(fs, OWNER, "/job/.history") == -EROFS);
    CHECK(entries_mknod(fs, "/job/.history/n") == -EROFS);
    CHECK(entries_mknod(fs, "/job/n") == -EPERM);
    CHECK(!listed("/job", ".history"));
}

/* Counts the regular files below dir. */
static int files;
static int count_file(const char *p, const struct stat *st, int type, struct FTW *f)
{
    (void)p;
    (void)st;
    (void)f;
    files += type == FTW_F;
    return 0;
}

static void test_upload(const char *root)
{
    char lz[256];
    snprintf(lz, sizeof lz, "%s/lz", root);
    files = 0;
    nftw(lz, count_file, 16, FTW_PHYS);
    CHECK(files == 0);
    /* update(): a write to running uploads a snapshot. */
    CHECK(put("/job/running", 0, "x") == 0);
    files = 0;
    REQUIRE(nftw(lz, count_file, 16, FTW_PHYS) == 0);
    CHECK(files == 1);
}

static void test_truncate_open_key(void)
{
    struct entries_handle *h = NULL;
    int noflush = 0;
    REQUIRE(entries_open(fs, OWNER, "/job/k", O_RDWR, &h, &noflush) == 0);
    CHECK(entries_truncate(fs, OWNER, "/job/k", h, 0) == 0);
    CHECK(entries_write(h, "5", 1, 0) == 1);
    /* Its size is what this open file holds; the key's is its value's. */
    struct stat st;
    CHECK(entries_getattr(fs, "/job/k", h, &st) == 0 && st.st_size == 1);
    CHECK(size_of("/job/k") == 3);
    CHECK(entries_fsync(fs, h) == 0);
    entries_close(h);
    char buf[64];
    CHECK(get("/job/k", buf, sizeof buf) == 2 && strcmp(buf, "5\n") == 0);
}

static void test_replace_state(void)
{
    CHECK(entries_rename(fs, OWNER, "/job/k", "/job/k3", RENAME_EXCHANGE) == -EINVAL);
    CHECK(entries_mkdir(fs, OWNER, "/other") == 0);
    CHECK(entries_rename(fs, OWNER, "/job/k", "/other/k", 0) == -EXDEV);
    CHECK(entries_rename(fs, OTHER, "/job/k", "/job/k3", 0) == -EACCES);
    /* A whole state written beside .state.json and renamed onto it. */
    CHECK(put("/job/.new", 1, "{\"x\": [1, 2]}") == 0);
    CHECK(entries_rename(fs, OWNER, "/job/.new", "/job/.state.json", 0) == 0);
    CHECK(listed("/job", "x") && !listed("/job", "k") && !listed("/job", ".new"));
    char buf[64];
    CHECK(get("/job/x", buf, sizeof buf) > 0 && strcmp(buf, "[1,2]\n") == 0);
    /* Not an object: refused, the state kept. */
    CHECK(put("/job/.state.json", 0, "[]") == -EINVAL);
    CHECK(listed("/job", "x"));
}

static void test_close_all(void)
{
    struct entries_handle *h = NULL;
    int noflush = 0;
    struct entries_handle *more[3] = {NULL};
    REQUIRE(entries_create(fs, OWNER, "/job/open", O_WRONLY | O_CREAT, &h, &noflush) ==
            0);
    REQUIRE(entries_create(fs, OWNER, "/job/open2", O_WRONLY | O_CREAT, &more[0],
                           &noflush) == 0);
    REQUIRE(entries_open(fs, OWNER, "/job/x", O_RDONLY, &more[1], &noflush) == 0);
    REQUIRE(entries_create(fs, OWNER, "/job/open3", O_WRONLY | O_CREAT, &more[2],
                           &noflush) == 0);
    entries_close(more[1]); /* one in the middle goes first */
    /* The loop ends before the others' release: each closed as its close
     * would be (a new key holds null). */
    entries_close_all(fs);
    char buf[64];
    CHECK(get("/job/open", buf, sizeof buf) == 5 && strcmp(buf, "null\n") == 0);
    CHECK(get("/job/open2", buf, sizeof buf) == 5 && strcmp(buf, "null\n") == 0);
    CHECK(get("/job/open3", buf, sizeof buf) == 5 && strcmp(buf, "null\n") == 0);
    struct job *job = jobs_find_loaded(jobs, "job");
    REQUIRE(job != NULL);
    CHECK(state_has(job->state, "open") && state_has(job->state, "open3"));
    jobs_unref(jobs, job);
}

static int rm_one(const char *p, const struct stat *st, int type, struct FTW *f)
{
    (void)st;
    (void)type;
    (void)f;
    return remove(p);
}

int main(void)
{
    char root[64];
    snprintf(root, sizeof root, "entries-test-%ld", (long)getpid());
    REQUIRE(mkdir(root, 0700) == 0);
    char err[512] = "";
    struct store *st = NULL;
    if (store_dir_new(root, &st, err, sizeof err) < 0)
        fprintf(stderr, "store_dir_new: %s\n", err);
    REQUIRE(st != NULL);
    REQUIRE(store_check_bucket(st, "lz", err, sizeof err) == 0);
    REQUIRE(store_check_bucket(st, "dlz", err, sizeof err) == 0);
    struct layout layout = {.domain = "d", .dataset = "ds", .user = "u",
                            .file_type = "others"};
    REQUIRE(jobs_new(st, &layout, "lz", "dlz", &jobs) == 0);
    REQUIRE(entries_new(jobs, OWNER, 77, "*.swp/*~", &fs) == 0);

    test_owner_only();
    test_new_key();
    test_refused_value();
    test_scratch();
    test_control_files();
    test_history_refuses();
    test_upload(root);
    test_truncate_open_key();
    test_replace_state();
    test_close_all();

    entries_free(fs);
    jobs_free(jobs);
    store_destroy(st);
    nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return failures != 0;
}
