/* A tiny command line over the store interface, for the tests:
 *
 *   store_cli [--endpoint URL] [--path-style] [--region R] [--ca-file F]
 *             [--timeout-ms N] [--connect-timeout-ms N] [--max-attempts N]
 *             [--max-retry-ms N] [--debug]
 *             [--dir ROOT]
 *             (list BUCKET PREFIX [START_AFTER] | get BUCKET KEY | put BUCKET KEY < body |
 *              check BUCKET | threads BUCKET PREFIX N |
 *              putif BUCKET KEY IFMATCH < body | getinfo BUCKET KEY |
 *              del BUCKET KEY)
 *
 * --dir: the directory store at ROOT instead of S3.
 * putif: a conditional put (IFMATCH "*": create only; else the ETag); prints
 * {rc, etag, attempts, ambiguous, server_ms} whatever the outcome.
 * getinfo prints {etag, last_modified_ms, server_ms, body}.
 *
 * threads: N threads share one store; each puts PREFIX<i>.json and reads it
 * back, to exercise the store from many threads at once (prints "ok").
 * list prints one JSON object per line: {key, last_modified_ms, size, etag};
 * get writes the object to stdout; put prints {etag, attempts}; check prints
 * "ok" or the store's one-line message on stderr. Exit status: 0 success,
 * 1 failure (stderr says which errno), 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "s3/store_s3.h"
#include "store/store.h"
#include "util/log.h"

static void usage(void)
{
    fprintf(stderr,
            "usage: store_cli [--endpoint URL --path-style --region R --ca-file F "
            "--timeout-ms N --connect-timeout-ms N --max-attempts N --max-retry-ms N "
            "--debug] (list BUCKET PREFIX [START_AFTER] | get BUCKET KEY | put BUCKET KEY < body | "
            "check BUCKET | threads BUCKET PREFIX N | putif BUCKET KEY IFMATCH < body | "
            "getinfo BUCKET KEY | del BUCKET KEY) [--dir ROOT]\n");
}

static int parse_long(const char *s, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || !end || *end || end == s || v < 0)
        return -1;
    *out = v;
    return 0;
}

/* The last failed store call's error (main's thread). */
static struct store_error last;

static int fail(const char *op, int rc)
{
    char why[1024] = "";
    if (last.err == rc)
        store_error_text(&last, why, sizeof why);
    fprintf(stderr, "store_cli: %s: %s (errno %d)%s%s\n", op, strerror(-rc), -rc,
            why[0] ? ": " : "", why);
    return 1;
}

static int print_object(const struct store_object *o, void *arg)
{
    (void)arg;
    json_t *j = json_pack("{s:s, s:I, s:I, s:s}", "key", o->key, "last_modified_ms",
                          (json_int_t)o->last_modified_ms, "size", (json_int_t)o->size,
                          "etag", o->etag);
    if (!j)
        return -ENOMEM;
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII);
    json_decref(j);
    if (!s)
        return -ENOMEM;
    int rc = puts(s) < 0 ? -EIO : 0;
    free(s);
    return rc;
}

static int read_all(FILE *f, char **data, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        if (n == cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                return -ENOMEM;
            }
            buf = b;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                free(buf);
                return -EIO;
            }
            break;
        }
    }
    *data = buf;
    *len = n;
    return 0;
}

struct worker {
    struct store *st;
    const char *bucket, *prefix;
    int index;
    int rc;
    pthread_t tid;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    char key[1200], body[64];
    snprintf(key, sizeof key, "%s%d.json", w->prefix, w->index);
    int n = snprintf(body, sizeof body, "{\"thread\": %d}", w->index);
    for (int round = 0; round < 3 && w->rc == 0; round++) {
        struct store_put_result res;
        w->rc = store_put(w->st, w->bucket, key, body, (size_t)n, &res, NULL);
        if (w->rc < 0)
            break;
        char *data = NULL;
        size_t len = 0;
        w->rc = store_get(w->st, w->bucket, key, &data, &len, NULL);
        if (w->rc == 0 && (len != (size_t)n || memcmp(data, body, len) != 0))
            w->rc = -EILSEQ;
        free(data);
    }
    return NULL;
}

static int run_threads(struct store *st, const char *bucket, const char *prefix,
                       const char *count)
{
    long n;
    if (parse_long(count, &n) < 0 || n < 1 || n > 256) {
        usage();
        return 2;
    }
    struct worker *w = calloc((size_t)n, sizeof *w);
    if (!w)
        return fail("threads", -ENOMEM);
    long started = 0;
    int status = 0;
    for (; started < n; started++) {
        w[started] = (struct worker){st, bucket, prefix, (int)started, 0, 0};
        if (pthread_create(&w[started].tid, NULL, work, &w[started]) != 0) {
            status = fail("threads", -EAGAIN);
            break;
        }
    }
    for (long i = 0; i < started; i++) {
        pthread_join(w[i].tid, NULL);
        if (w[i].rc < 0 && status == 0)
            status = fail("threads", w[i].rc);
    }
    free(w);
    if (status == 0)
        printf("ok\n");
    return status;
}

int main(int argc, char **argv)
{
    enum { O_ENDPOINT = 256, O_PATH_STYLE, O_REGION, O_CA, O_TIMEOUT, O_CTIMEOUT,
           O_ATTEMPTS, O_RETRY_MS, O_DEBUG, O_DIR };
    static const struct option longopts[] = {
        {"endpoint", required_argument, NULL, O_ENDPOINT},
        {"path-style", no_argument, NULL, O_PATH_STYLE},
        {"region", required_argument, NULL, O_REGION},
        {"ca-file", required_argument, NULL, O_CA},
        {"timeout-ms", required_argument, NULL, O_TIMEOUT},
        {"connect-timeout-ms", required_argument, NULL, O_CTIMEOUT},
        {"max-attempts", required_argument, NULL, O_ATTEMPTS},
        {"max-retry-ms", required_argument, NULL, O_RETRY_MS},
        {"debug", no_argument, NULL, O_DEBUG},
        {"dir", required_argument, NULL, O_DIR},
        {NULL, 0, NULL, 0},
    };
    struct store_s3_options o = {0};
    const char *dir_root = NULL;
    int c;
    long v;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case O_ENDPOINT: o.endpoint = optarg; break;
        case O_PATH_STYLE: o.path_style = 1; break;
        case O_REGION: o.region = optarg; break;
        case O_CA: o.ca_file = optarg; break;
        case O_DEBUG: log_set_level(LOG_LEVEL_DEBUG); break;
        case O_DIR: dir_root = optarg; break;
        case O_TIMEOUT: case O_CTIMEOUT: case O_ATTEMPTS: case O_RETRY_MS:
            if (parse_long(optarg, &v) < 0 || v > 1000000000L) {
                usage();
                return 2;
            }
            if (c == O_TIMEOUT)
                o.timeout_ms = v;
            else if (c == O_CTIMEOUT)
                o.connect_timeout_ms = v;
            else if (c == O_ATTEMPTS)
                o.max_attempts = (int)v;
            else
                o.max_retry_ms = v;
            break;
        default:
            usage();
            return 2;
        }
    }
    int nargs = argc - optind;
    if (nargs < 2) {
        usage();
        return 2;
    }
    const char *cmd = argv[optind], *bucket = argv[optind + 1];
    const char *arg = nargs > 2 ? argv[optind + 2] : NULL;
    int want = strcmp(cmd, "check") == 0 ? 2
               : strcmp(cmd, "threads") == 0 || strcmp(cmd, "putif") == 0 ? 4 : 3;
    if (strcmp(cmd, "list") == 0 && nargs == 4)
        want = 4; /* with StartAfter */
    if (nargs != want || (want == 3 && strcmp(cmd, "list") && strcmp(cmd, "get") &&
                          strcmp(cmd, "put") && strcmp(cmd, "getinfo") &&
                          strcmp(cmd, "del"))) {
        usage();
        return 2;
    }

    char err[512];
    struct store *st = NULL;
    if ((dir_root ? store_dir_new(dir_root, &st, err, sizeof err)
                  : store_s3_new(&o, &st, err, sizeof err)) < 0) {
        fprintf(stderr, "store_cli: %s\n", err);
        return 1;
    }
    int status = 0, rc;
    if (strcmp(cmd, "threads") == 0) {
        status = run_threads(st, bucket, arg, argv[optind + 3]);
    } else if (strcmp(cmd, "putif") == 0) {
        char *data = NULL;
        size_t len = 0;
        rc = read_all(stdin, &data, &len);
        if (rc < 0) {
            status = fail("reading stdin", rc);
        } else {
            struct store_put_result res;
            rc = store_put_if(st, bucket, arg, data, len, argv[optind + 3], &res, &last);
            if (rc < 0) {
                char why[1024];
                store_error_text(&last, why, sizeof why);
                fprintf(stderr, "store_cli: putif: %s\n", why);
            }
            json_t *j = json_pack("{s:i, s:s, s:i, s:b, s:I}", "rc", rc, "etag", res.etag,
                                  "attempts", res.attempts, "ambiguous", res.ambiguous,
                                  "server_ms", (json_int_t)res.server_ms);
            char *out = j ? json_dumps(j, JSON_COMPACT) : NULL;
            if (!out || puts(out) < 0)
                status = fail("putif", -ENOMEM);
            else if (rc < 0)
                status = 1;
            free(out);
            json_decref(j);
        }
        free(data);
    } else if (strcmp(cmd, "getinfo") == 0) {
        char *data = NULL;
        size_t len = 0;
        struct store_get_info info;
        rc = store_get_info(st, bucket, arg, &data, &len, &info, &last);
        if (rc < 0) {
            status = fail("getinfo", rc);
        } else {
            json_t *j = json_pack("{s:s, s:I, s:I, s:s%}", "etag", info.etag,
                                  "last_modified_ms", (json_int_t)info.last_modified_ms,
                                  "server_ms", (json_int_t)info.server_ms, "body",
                                  data, len);
            char *out = j ? json_dumps(j, JSON_COMPACT) : NULL;
            if (!out || puts(out) < 0)
                status = fail("getinfo", -ENOMEM);
            free(out);
            json_decref(j);
        }
        free(data);
    } else if (strcmp(cmd, "del") == 0) {
        rc = store_del(st, bucket, arg, &last);
        if (rc < 0)
            status = fail("del", rc);
        else
            printf("ok\n");
    } else if (strcmp(cmd, "list") == 0) {
        rc = store_list_from(st, bucket, arg, nargs == 4 ? argv[optind + 3] : NULL,
                             print_object, NULL, &last);
        if (rc < 0)
            status = fail("list", rc);
    } else if (strcmp(cmd, "get") == 0) {
        char *data = NULL;
        size_t len = 0;
        rc = store_get(st, bucket, arg, &data, &len, &last);
        if (rc < 0)
            status = fail("get", rc);
        else if (fwrite(data, 1, len, stdout) != len)
            status = fail("get", -EIO);
        free(data);
    } else if (strcmp(cmd, "put") == 0) {
        char *data = NULL;
        size_t len = 0;
        rc = read_all(stdin, &data, &len);
        if (rc < 0) {
            status = fail("reading stdin", rc);
        } else {
            struct store_put_result res;
            rc = store_put(st, bucket, arg, data, len, &res, &last);
            if (rc < 0) {
                fprintf(stderr, "store_cli: put: attempts %d\n", res.attempts);
                status = fail("put", rc);
            } else {
                json_t *j = json_pack("{s:s, s:i}", "etag", res.etag, "attempts",
                                      res.attempts);
                char *out = j ? json_dumps(j, JSON_COMPACT) : NULL;
                if (!out || puts(out) < 0)
                    status = fail("put", -ENOMEM);
                free(out);
                json_decref(j);
            }
        }
        free(data);
    } else {
        char msg[512];
        rc = store_check_bucket(st, bucket, msg, sizeof msg);
        if (rc < 0) {
            fprintf(stderr, "%s\n", msg);
            status = 1;
        } else {
            printf("ok\n");
        }
    }
    store_destroy(st);
    if (fflush(stdout) != 0)
        status = 1;
    return status;
}
