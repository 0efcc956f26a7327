/* creds_cli: resolves the AWS credential chain (s3/credentials.h) and prints
 * one JSON line per cred_provider_get call:
 *   {"source", "access_key", "has_secret", "secret_sha256",
 *    "session_token_sha256", "expiration"}
 * Never the secret or the token themselves: their SHA-256, so tests can
 * check the right ones were read.
 *
 *   creds_cli [--profile NAME] [--refresh-loop N] [--sleep-ms MS] [--force]
 *             [--threads T] [--timeout-ms MS] [--ca-file PATH] [--debug]
 *   creds_cli --config-region [--profile NAME]   prints {"region": ...}
 *
 * --refresh-loop N calls get N times (default 1), sleeping MS between calls;
 * --force passes force_refresh to every call; --threads T runs the loop in
 * T threads at once on one provider. Exit status: 0, 1 when a get failed
 * (the message on stderr), 2 for usage errors. */
#include "s3/cred.h"
#include "util/log.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

struct run {
    struct cred_provider *p;
    long loops;
    long sleep_ms;
    int force;
    int failed;
};

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static int sha256_hex(const char *s, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(s, strlen(s), md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
        return -1;
    for (unsigned i = 0; i < mdlen; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    return 0;
}

static int print_creds(const struct cred_keys *c)
{
    char sk[65], tok[65];
    if (sha256_hex(c->secret_key, sk) < 0 ||
        (c->session_token && sha256_hex(c->session_token, tok) < 0))
        return -1;
    json_t *o = json_pack("{s:s, s:s, s:b, s:s, s:o, s:I}",
                          "source", c->source,
                          "access_key", c->access_key,
                          "has_secret", c->secret_key && *c->secret_key,
                          "secret_sha256", sk,
                          "session_token_sha256",
                          c->session_token ? json_string(tok) : json_null(),
                          "expiration", (json_int_t)c->expiration);
    if (!o)
        return -1;
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return -1;
    pthread_mutex_lock(&out_lock);
    int rc = printf("%s\n", s) < 0 || fflush(stdout) != 0 ? -1 : 0;
    pthread_mutex_unlock(&out_lock);
    free(s);
    return rc;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void *run_loop(void *arg)
{
    struct run *r = arg;
    for (long i = 0; i < r->loops; i++) {
        if (i && r->sleep_ms > 0)
            sleep_ms(r->sleep_ms);
        struct cred_keys c;
        char msg[2048];
        int rc = cred_provider_get(r->p, &c, r->force, msg, sizeof msg);
        if (rc < 0) {
            fprintf(stderr, "creds_cli: %s (%s)\n", msg, strerror(-rc));
            r->failed = 1;
            return NULL;
        }
        if (print_creds(&c) < 0) {
            fprintf(stderr, "creds_cli: cannot print the result\n");
            r->failed = 1;
        }
        cred_keys_clear(&c);
        if (r->failed)
            return NULL;
    }
    return NULL;
}

static long parse_long(const char *s, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0) {
        fprintf(stderr, "creds_cli: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"profile", required_argument, NULL, 'p'},
        {"refresh-loop", required_argument, NULL, 'n'},
        {"sleep-ms", required_argument, NULL, 's'},
        {"force", no_argument, NULL, 'f'},
        {"threads", required_argument, NULL, 't'},
        {"timeout-ms", required_argument, NULL, 'T'},
        {"ca-file", required_argument, NULL, 'c'},
        {"debug", no_argument, NULL, 'd'},
        {"config-region", no_argument, NULL, 'r'},
        {NULL, 0, NULL, 0},
    };
    struct cred_options opts = {0};
    struct run run = {.loops = 1};
    long threads = 1;
    int config_region = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'p': opts.profile = optarg; break;
        case 'n': run.loops = parse_long(optarg, "--refresh-loop"); break;
        case 's': run.sleep_ms = parse_long(optarg, "--sleep-ms"); break;
        case 'f': run.force = 1; break;
        case 't': threads = parse_long(optarg, "--threads"); break;
        case 'T': opts.timeout_ms = parse_long(optarg, "--timeout-ms"); break;
        case 'c': opts.ca_file = optarg; break;
        case 'd': log_set_level(LOG_LEVEL_DEBUG); break;
        case 'r': config_region = 1; break;
        default: return 2;
        }
    }
    if (optind != argc || threads < 1 || threads > 64) {
        fprintf(stderr, "creds_cli: bad arguments\n");
        return 2;
    }

    if (config_region) {
        char *region = NULL;
        if (cred_config_region(opts.profile, &region) < 0)
            return 1;
        json_t *o = json_pack("{s:o}", "region",
                              region ? json_string(region) : json_null());
        free(region);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!s)
            return 1;
        printf("%s\n", s);
        free(s);
        return 0;
    }

    /* As the store does (s3/store_s3.c): AWS_CA_BUNDLE or ca_bundle. */
    char *bundle = NULL;
    const char *bundle_from;
    if (cred_ca_bundle(opts.profile, &bundle, &bundle_from) < 0) {
        fprintf(stderr, "creds_cli: out of memory\n");
        return 1;
    }
    opts.ca_bundle = bundle;
    int made = cred_provider_new(&opts, &run.p);
    free(bundle);
    if (made < 0) {
        fprintf(stderr, "creds_cli: cannot create the provider\n");
        return 1;
    }
    pthread_t tids[64];
    struct run runs[64];
    long started = 0;
    for (long i = 0; i < threads; i++) {
        runs[i] = run;
        if (pthread_create(&tids[i], NULL, run_loop, &runs[i]) != 0) {
            fprintf(stderr, "creds_cli: cannot start a thread\n");
            runs[i].failed = 1;
            break;
        }
        started++;
    }
    int failed = started < threads;
    for (long i = 0; i < started; i++) {
        pthread_join(tids[i], NULL);
        failed |= runs[i].failed;
    }
    cred_provider_free(run.p);
    return failed ? 1 : 0;
}
