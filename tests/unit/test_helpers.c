/* The small helpers of util/: FNV-1a (its published test vectors), hex,
 * env_nonempty, mkdir -p, the read and write loops, and vec_reserve. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/unit/check.h"
#include "util/env.h"
#include "util/clock.h"
#include "util/files.h"
#include "util/hash.h"
#include "util/hex.h"
#include "util/vec.h"

static void test_hash(void)
{
    /* The 64-bit FNV-1a vectors of the FNV authors' test suite. */
    CHECK(hash_fnv1a("", 0) == 0xcbf29ce484222325ULL);
    CHECK(hash_fnv1a("a", 1) == 0xaf63dc4c8601ec8cULL);
    CHECK(hash_fnv1a("foobar", 6) == 0x85944171f73967e8ULL);
    CHECK(hash_fnv1a("a\0b", 3) != hash_fnv1a("a", 1)); /* lengths, not strings */
    CHECK(hash_mix(0) == 0);
    CHECK(hash_mix(1) != 1 && hash_mix(1) != hash_mix(2));
}

static void test_hex(void)
{
    char out[2 * 4 + 1];
    memset(out, 'x', sizeof out);
    hex_encode("\x00\x9f\xff\x10", 4, out);
    CHECK(strcmp(out, "009fff10") == 0);
    hex_encode("", 0, out);
    CHECK(out[0] == '\0');
}

static void test_env(void)
{
    REQUIRE(setenv("BOOKMARKFS_TEST_ENV", "v", 1) == 0);
    const char *v = env_nonempty("BOOKMARKFS_TEST_ENV");
    CHECK(v && strcmp(v, "v") == 0);
    REQUIRE(setenv("BOOKMARKFS_TEST_ENV", "", 1) == 0);
    CHECK(env_nonempty("BOOKMARKFS_TEST_ENV") == NULL);
    REQUIRE(unsetenv("BOOKMARKFS_TEST_ENV") == 0);
    CHECK(env_nonempty("BOOKMARKFS_TEST_ENV") == NULL);
}

static void test_mkdir_p(void)
{
    char root[] = "/tmp/bookmarkfs-helpers-XXXXXX";
    REQUIRE(mkdtemp(root) != NULL);
    char path[512], file[256];
    snprintf(path, sizeof path, "%s/a/b//c", root);
    for (int durable = 0; durable <= 1; durable++) {
        CHECK(files_mkdir_p(path, 0700, durable) == 0);
        CHECK(files_mkdir_p(path, 0700, durable) == 0); /* already there */
    }
    struct stat sb;
    snprintf(file, sizeof file, "%s/a/b/c", root);
    CHECK(stat(file, &sb) == 0 && S_ISDIR(sb.st_mode) && (sb.st_mode & 0777) == 0700);
    snprintf(file, sizeof file, "%s/a/f", root);
    int fd = open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    close(fd);
    CHECK(files_mkdir_p(file, 0700, 1) == -ENOTDIR);          /* the end is a file */
    snprintf(path, sizeof path, "%s/x", file);
    CHECK(files_mkdir_p(path, 0700, 0) == -ENOTDIR);          /* a component is */
    CHECK(files_mkdir_p("", 0700, 0) == -ENOENT);
    CHECK(files_fsync_dir(root) == 0);
    CHECK(files_fsync_dir(file) == -ENOTDIR);
    snprintf(path, sizeof path, "%s/nothing", root);
    CHECK(files_fsync_dir(path) == -ENOENT);
    /* Clean up what the test made. */
    unlink(file);
    const char *dirs[] = {"a/b/c", "a/b", "a", ""};
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", root, dirs[i]);
        CHECK(rmdir(path) == 0);
    }
}

/* files_write_all and files_read_all, at an offset and at the position,
 * in pieces bigger than a pipe takes at once; the end of a file is -EIO. */
static void test_read_write_all(void)
{
    char path[] = "/tmp/bookmarkfs-rw-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    static char out[200000], in[200000];
    for (size_t i = 0; i < sizeof out; i++)
        out[i] = (char)(i * 31 + 7);
    CHECK(files_write_all(fd, out, 1000, -1) == 0);             /* at the position */
    CHECK(files_write_all(fd, out + 1000, sizeof out - 1000, 1000) == 0); /* at 1000 */
    CHECK(files_read_all(fd, in, sizeof in, 0) == 0 && memcmp(in, out, sizeof in) == 0);
    CHECK(files_read_all(fd, in, 10, (off_t)sizeof out - 5) == -EIO); /* past the end */
    /* The whole file, for each kind of buffer; a bound below its size. */
    for (int secret = 0; secret <= 1; secret++) {
        char *all;
        size_t len;
        CHECK(lseek(fd, 0, SEEK_SET) == 0);
        CHECK(files_read_fd(fd, sizeof out, secret, &all, &len) == 0);
        CHECK(len == sizeof out && memcmp(all, out, len) == 0 && all[len] == '\0');
        free(all);
        CHECK(lseek(fd, 0, SEEK_SET) == 0);
        CHECK(files_read_fd(fd, sizeof out - 1, secret, &all, &len) == -EFBIG);
        CHECK(all == NULL && len == 0);
    }
    /* With a deadline: a pipe read to its end in time, then one whose
     * writer never closes it. */
    int pp[2];
    REQUIRE(pipe(pp) == 0);
    CHECK(files_write_all(pp[1], out, 100, -1) == 0);
    close(pp[1]);
    char *got;
    size_t got_len;
    CHECK(files_read_fd_until(pp[0], 1000, 1, clock_mono_ms() + 5000, &got, &got_len) == 0);
    CHECK(got && got_len == 100 && memcmp(got, out, 100) == 0);
    free(got);
    close(pp[0]);
    REQUIRE(pipe(pp) == 0);
    CHECK(files_write_all(pp[1], out, 10, -1) == 0);
    int64_t t0 = clock_mono_ms();
    CHECK(files_read_fd_until(pp[0], 1000, 0, t0 + 200, &got, &got_len) == -ETIMEDOUT);
    CHECK(got == NULL && clock_mono_ms() - t0 >= 200);
    close(pp[0]);
    close(pp[1]);
    CHECK(lseek(fd, 500, SEEK_SET) == 500);
    CHECK(files_read_all(fd, in, 100, -1) == 0 && memcmp(in, out + 500, 100) == 0);
    close(fd);
    unlink(path);
    CHECK(files_write_all(fd, out, 1, 0) == -EBADF && errno == EBADF);
    /* Through a pipe: write(2) takes at most its buffer at once. */
    int p[2];
    REQUIRE(pipe(p) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        _exit(files_write_all(p[1], out, sizeof out, -1) == 0 ? 0 : 1);
    }
    close(p[1]);
    CHECK(files_read_all(p[0], in, sizeof in, -1) == 0 && memcmp(in, out, sizeof in) == 0);
    CHECK(files_read_all(p[0], in, 1, -1) == -EIO);
    close(p[0]);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_vec(void)
{
    uint32_t *v = NULL;
    size_t cap = 0;
    for (uint32_t i = 0; i < 10000; i++) {
        REQUIRE(vec_reserve(&v, &cap, i + 1, sizeof *v, 16) == 0);
        CHECK(cap >= i + 1 && (i > 0 || cap == 16));
        v[i] = i * 2654435761u;
    }
    for (uint32_t i = 0; i < 10000; i++)
        CHECK(v[i] == i * 2654435761u); /* moves keep the elements */
    size_t before = cap;
    uint32_t *p = v;
    CHECK(vec_reserve(&v, &cap, 5, sizeof *v, 16) == 0 && v == p && cap == before);
    /* A size nothing can hold: refused, array and capacity unchanged. */
    CHECK(vec_reserve(&v, &cap, SIZE_MAX / 2, sizeof *v, 16) == -ENOMEM);
    CHECK(v == p && cap == before && v[9999] == 9999u * 2654435761u);
    free(v);
}

int main(void)
{
    test_hash();
    test_hex();
    test_env();
    test_mkdir_p();
    test_read_write_all();
    test_vec();
    return failures != 0;
}
