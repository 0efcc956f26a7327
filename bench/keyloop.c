/* The hot loop of the key write/read benchmark, the same for every target
 * (bookmarkfs, tmpfs, passthrough_ll, s3fs), compiled by scripts/bench.
 *
 *   keyloop write|read DIR NKEYS ITERS [START_AT_NS]
 *
 * write: ITERS times open(DIR/k<i % NKEYS>, O_WRONLY|O_CREAT|O_TRUNC),
 *        write one small JSON value, close (close errors count: a FUSE
 *        filesystem may refuse the bytes at flush).
 * read:  ITERS times open(O_RDONLY), read until end of file, close.
 * START_AT_NS: CLOCK_MONOTONIC time to start at, so that parallel writers
 * start together. Prints one JSON line: ops, start_ns, end_ns, ns_per_op.
 * Exit status 1 on the first failed call. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int fail(const char *what, const char *path)
{
    fprintf(stderr, "keyloop: %s %s: %s\n", what, path, strerror(errno));
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 5 || (strcmp(argv[1], "write") && strcmp(argv[1], "read"))) {
        fprintf(stderr, "usage: keyloop write|read DIR NKEYS ITERS [START_AT_NS]\n");
        return 2;
    }
    int writing = strcmp(argv[1], "write") == 0;
    const char *dir = argv[2];
    long nkeys = atol(argv[3]), iters = atol(argv[4]);
    long long start_at = argc > 5 ? atoll(argv[5]) : 0;
    if (nkeys < 1 || iters < 1)
        return 2;
    /* Paths built before the clock starts. */
    char **paths = calloc((size_t)nkeys, sizeof *paths);
    if (!paths)
        return 1;
    for (long k = 0; k < nkeys; k++)
        if (asprintf(&paths[k], "%s/k%ld", dir, k) < 0)
            return 1;
    while (start_at && now_ns() < start_at)
        ;
    char buf[4096], value[96];
    long long t0 = now_ns();
    for (long i = 0; i < iters; i++) {
        const char *p = paths[i % nkeys];
        if (writing) {
            int n = snprintf(value, sizeof value,
                             "{\"epoch_time\": %ld, \"file\": \"part-%05ld.parquet\"}\n",
                             156234987L + i, i % 100000);
            int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0)
                return fail("open", p);
            if (write(fd, value, (size_t)n) != n)
                return fail("write", p);
            if (close(fd) != 0)
                return fail("close", p);
        } else {
            int fd = open(p, O_RDONLY);
            if (fd < 0)
                return fail("open", p);
            ssize_t r;
            while ((r = read(fd, buf, sizeof buf)) > 0)
                ;
            if (r < 0)
                return fail("read", p);
            if (close(fd) != 0)
                return fail("close", p);
        }
    }
    long long t1 = now_ns();
    printf("{\"ops\": %ld, \"start_ns\": %lld, \"end_ns\": %lld, \"ns_per_op\": %.1f}\n",
           iters, t0, t1, (double)(t1 - t0) / (double)iters);
    return 0;
}
