/* The network floor of the commit benchmark: signed PUTs of given bytes
 * through the project's own S3 client (s3/, store interface), all on one
 * store whose libcurl handle pool keeps the connection alive between PUTs.
 * Compiled by scripts/bench against the build's static libraries.
 *
 *   rawput ENDPOINT BUCKET      (credentials and region from the environment)
 *
 * Runs as a co-process: reads lines "BODYFILE KEY" on stdin, PUTs the file's
 * bytes to BUCKET/KEY (path-style) and answers "NS ETAG" (the PUT's wall time
 * in nanoseconds, file reading excluded) or "ERR errno". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "s3/store_s3.h"
#include "store/store.h"

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(n > 0 ? (size_t)n : 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: rawput ENDPOINT BUCKET\n");
        return 2;
    }
    struct store_s3_options o = {.endpoint = argv[1], .path_style = 1};
    char err[512];
    struct store *st = NULL;
    if (store_s3_new(&o, &st, err, sizeof err) < 0) {
        fprintf(stderr, "rawput: %s\n", err);
        return 1;
    }
    char line[4096];
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        char file[2048], key[2048];
        if (sscanf(line, "%2047s %2047s", file, key) != 2)
            continue;
        size_t len = 0;
        char *body = slurp(file, &len);
        if (!body) {
            printf("ERR %d\n", errno);
            continue;
        }
        struct store_put_result res = {0};
        long long t0 = now_ns();
        int rc = store_put(st, argv[2], key, body, len, &res, NULL);
        long long t1 = now_ns();
        free(body);
        if (rc < 0)
            printf("ERR %d\n", -rc);
        else
            printf("%lld %s\n", t1 - t0, res.etag);
    }
    store_destroy(st);
    return 0;
}
