/* The AWS credential chain: the cache, the refresh policy, the environment
 * provider and helpers shared by the other providers (s3/cred_*.c).
 *
 * Resolution runs the whole chain in order (environment, shared files and
 * the profile's role or process, container, web identity, IMDS) and stops at the first source that is
 * configured: it either yields credentials or its error is the answer.
 * Temporary credentials are refreshed within CRED_REFRESH_MARGIN seconds of
 * their expiry; while one thread refreshes, the others keep using the cached
 * credentials as long as they have not expired. */
#include "s3/cred_internal.h"
#include "s3/defaults.h"
#include "util/files.h"
#include "util/iso8601.h"
#include "util/log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define CRED_REFRESH_MARGIN 300 /* seconds before expiry */

struct cred_provider {
    pthread_mutex_t lock;
    pthread_cond_t done;      /* signalled when a refresh ends */
    int refreshing;
    int have;
    struct cred_keys cur;
    char *profile;            /* from the options, or NULL */
    char *ca_file;
    char *ca_bundle;
    struct cred_options opts; /* strings point into this struct's copies */
};

/* ------------------------------------------------------------------ */
/* helpers                                                             */

/* snprintf for messages whose truncation is acceptable. */
__attribute__((format(printf, 3, 4)))
static void msgf(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

void cred_free_secret(char *s)
{
    if (!s)
        return;
    OPENSSL_cleanse(s, strlen(s));
    free(s);
}

void cred_free_buf(void *p, size_t len)
{
    if (!p)
        return;
    OPENSSL_cleanse(p, len);
    free(p);
}

void cred_keys_clear(struct cred_keys *c)
{
    if (!c)
        return;
    cred_free_secret(c->access_key);
    cred_free_secret(c->secret_key);
    cred_free_secret(c->session_token);
    c->access_key = c->secret_key = c->session_token = NULL;
    c->expiration = 0;
    memset(c->source, 0, sizeof c->source);
}

int cred_fill(struct cred_keys *out, const char *source, const char *ak,
              const char *sk, const char *tok, int64_t expiration)
{
    memset(out, 0, sizeof *out);
    out->access_key = strdup(ak);
    out->secret_key = strdup(sk);
    if (tok && *tok)
        out->session_token = strdup(tok);
    if (!out->access_key || !out->secret_key ||
        (tok && *tok && !out->session_token)) {
        cred_keys_clear(out);
        return -ENOMEM;
    }
    out->expiration = expiration;
    snprintf(out->source, sizeof out->source, "%s", source);
    return 0;
}

static int copy_credentials(struct cred_keys *dst,
                            const struct cred_keys *src)
{
    int rc = cred_fill(dst, src->source, src->access_key, src->secret_key,
                       src->session_token, src->expiration);
    return rc;
}

int cred_parse_expiration(const char *s, int64_t *out)
{
    int64_t ms;
    if (iso8601_parse_ms(s, &ms) < 0 || ms < 1000)
        return -EINVAL;
    *out = ms / 1000;
    return 0;
}

int cred_read_file(const char *path, size_t max, char **buf, size_t *len,
                   struct stat *st)
{
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    int rc = 0;
    if (fstat(fd, st) < 0) {
        rc = -errno;
        goto out;
    }
    if (!S_ISREG(st->st_mode)) {
        rc = -EINVAL;
        goto out;
    }
    if ((uintmax_t)st->st_size > max) {
        rc = -EFBIG;
        goto out;
    }
    /* The size may change under us: read until EOF, at most max bytes. */
    rc = files_read_fd(fd, max, 1, buf, len);
out:
    close(fd);
    return rc;
}

int cred_expand_home(const char *path, char **out)
{
    if (path[0] != '~' || (path[1] != '/' && path[1] != '\0'))
        return (*out = strdup(path)) ? 0 : -ENOMEM;
    *out = NULL;
    const char *home = env_nonempty("HOME");
    char pwbuf[4096];
    struct passwd pw, *res = NULL;
    if (!home) {
        if (getpwuid_r(getuid(), &pw, pwbuf, sizeof pwbuf, &res) != 0 || !res ||
            !res->pw_dir)
            return -ENOENT;
        home = res->pw_dir;
    }
    size_t hl = strlen(home), rl = strlen(path + 1);
    char *s = malloc(hl + rl + 1);
    if (!s)
        return -ENOMEM;
    memcpy(s, home, hl);
    memcpy(s + hl, path + 1, rl + 1);
    *out = s;
    return 0;
}

long cred_timeout_ms(const struct cred_options *o)
{
    return o && o->timeout_ms > 0 ? o->timeout_ms : S3_DEFAULT_CRED_TIMEOUT_MS;
}

/* ------------------------------------------------------------------ */
/* environment                                                         */

int cred_env_pair(const char *first, const char *second, const char **v1,
                  const char **v2, char *note, size_t notelen)
{
    *v1 = env_nonempty(first);
    *v2 = env_nonempty(second);
    if (!*v1 && !*v2) {
        snprintf(note, notelen, "%s is not set", first);
        return CRED_ABSENT;
    }
    if (!*v1 || !*v2) {
        snprintf(note, notelen, "%s is set in the environment but %s is not.",
                 *v1 ? first : second, *v1 ? second : first);
        return -EACCES;
    }
    return 0;
}

int cred_env_get(struct cred_keys *out, char *note, size_t notelen)
{
    const char *ak, *sk;
    int rc = cred_env_pair("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", &ak, &sk,
                           note, notelen);
    if (rc < 0)
        return rc;
    rc = cred_fill(out, "environment", ak, sk,
                       env_nonempty("AWS_SESSION_TOKEN"), 0);
    if (rc < 0)
        snprintf(note, notelen, "out of memory");
    return rc;
}

/* ------------------------------------------------------------------ */
/* the chain                                                           */

static int resolve(struct cred_provider *p, struct cred_keys *out,
                   char *msg, size_t msglen)
{
    char notes[5][320];
    const char *profile = p->profile;
    int named = profile != NULL;
    if (!profile) {
        profile = env_nonempty("AWS_PROFILE");
        named = profile != NULL;
    }
    if (!profile)
        profile = "default";

    memset(notes, 0, sizeof notes);
    int rc, i = 0;
    if (p->profile) {
        /* As the AWS CLI's --profile: a profile named on the command line
         * is used even where the environment holds keys (README,
         * "Credentials"). */
        snprintf(notes[0], sizeof notes[0], "skipped: --profile names a profile");
        rc = CRED_ABSENT;
    } else {
        rc = cred_env_get(out, notes[0], sizeof notes[0]);
    }
    if (rc == CRED_ABSENT) {
        i = 1;
        rc = cred_files_get(&p->opts, profile, named, out, notes[1], sizeof notes[1]);
    }
    if (rc == CRED_ABSENT) {
        i = 2;
        rc = cred_container_get(&p->opts, out, notes[2], sizeof notes[2]);
    }
    if (rc == CRED_ABSENT) {
        i = 3;
        rc = cred_web_identity_get(&p->opts, profile, out, notes[3],
                                   sizeof notes[3]);
    }
    if (rc == CRED_ABSENT) {
        i = 4;
        rc = cred_imds_get(&p->opts, out, notes[4], sizeof notes[4]);
    }
    if (rc == CRED_ABSENT) {
        msgf(msg, msglen,
                 "No AWS credentials found: tried the environment (%s), the "
                 "shared files (%s), container credentials (%s), web identity "
                 "(%s) and EC2 instance metadata (%s).",
                 notes[0], notes[1], notes[2], notes[3], notes[4]);
        return -EACCES;
    }
    if (rc < 0) {
        msgf(msg, msglen, "%s", notes[i]);
        return rc;
    }
    return 0;
}

static void describe_expiry(const struct cred_keys *c, char *buf,
                            size_t len)
{
    if (!c->expiration) {
        snprintf(buf, len, "no expiry");
        return;
    }
    struct tm tm;
    time_t t = (time_t)c->expiration;
    if (!gmtime_r(&t, &tm) || !strftime(buf, len, "expire %Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, len, "expire at %lld", (long long)c->expiration);
}

int cred_provider_new(const struct cred_options *opts, struct cred_provider **out)
{
    *out = NULL;
    cred_global_init();
    struct cred_provider *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    if (opts) {
        if (opts->profile && *opts->profile && !(p->profile = strdup(opts->profile)))
            goto fail;
        if (opts->ca_file && *opts->ca_file && !(p->ca_file = strdup(opts->ca_file)))
            goto fail;
        if (opts->ca_bundle && *opts->ca_bundle &&
            !(p->ca_bundle = strdup(opts->ca_bundle)))
            goto fail;
        p->opts.timeout_ms = opts->timeout_ms;
    }
    p->opts.profile = p->profile;
    p->opts.ca_file = p->ca_file;
    p->opts.ca_bundle = p->ca_bundle;
    if (pthread_mutex_init(&p->lock, NULL) != 0)
        goto fail;
    if (pthread_cond_init(&p->done, NULL) != 0) {
        pthread_mutex_destroy(&p->lock);
        goto fail;
    }
    *out = p;
    return 0;
fail:
    free(p->profile);
    free(p->ca_file);
    free(p->ca_bundle);
    free(p);
    return -ENOMEM;
}

void cred_provider_free(struct cred_provider *p)
{
    if (!p)
        return;
    cred_keys_clear(&p->cur);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->lock);
    free(p->profile);
    free(p->ca_file);
    free(p->ca_bundle);
    free(p);
}

static int needs_refresh(const struct cred_provider *p, time_t now)
{
    return !p->have || (p->cur.expiration &&
                        (int64_t)now + CRED_REFRESH_MARGIN >= p->cur.expiration);
}

static int still_valid(const struct cred_provider *p, time_t now)
{
    return p->have && (!p->cur.expiration || (int64_t)now < p->cur.expiration);
}

int cred_provider_get(struct cred_provider *p, struct cred_keys *out,
                      int force_refresh, char *msg, size_t msglen)
{
    char dummy[8];
    if (!msg || !msglen) {
        msg = dummy;
        msglen = sizeof dummy;
    }
    msg[0] = '\0';
    memset(out, 0, sizeof *out);
    if (!p) {
        snprintf(msg, msglen, "No credential provider.");
        return -EINVAL;
    }

    int rc = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        time_t now = time(NULL);
        if (!force_refresh && !needs_refresh(p, now))
            break;
        if (p->refreshing) {
            /* Another thread is at it: use what we have while it is valid,
             * else wait for its outcome (which also answers a forced
             * refresh). */
            if (still_valid(p, now))
                break;
            pthread_cond_wait(&p->done, &p->lock);
            if (p->have && still_valid(p, time(NULL)))
                break;
            force_refresh = 0;
            continue;
        }
        p->refreshing = 1;
        pthread_mutex_unlock(&p->lock);

        struct cred_keys fresh;
        char why[1536];
        why[0] = '\0';
        memset(&fresh, 0, sizeof fresh);
        log_debug("resolving AWS credentials%s", force_refresh ? " (forced)" : "");
        int r = resolve(p, &fresh, why, sizeof why);

        pthread_mutex_lock(&p->lock);
        p->refreshing = 0;
        pthread_cond_broadcast(&p->done);
        now = time(NULL);
        if (r == 0) {
            char exp[64];
            describe_expiry(&fresh, exp, sizeof exp);
            log_debug("AWS credentials from %s (access key %s, %s)",
                      fresh.source, fresh.access_key, exp);
            if (fresh.expiration && fresh.expiration <= (int64_t)now)
                log_warn("the AWS credentials from %s have already expired",
                         fresh.source);
            cred_keys_clear(&p->cur);
            p->cur = fresh;
            p->have = 1;
        } else if (still_valid(p, now)) {
            log_warn("refreshing AWS credentials failed (%s); keeping the "
                     "current ones from %s", why, p->cur.source);
        } else {
            msgf(msg, msglen, "%s", why);
            rc = r;
        }
        break;
    }
    if (rc == 0) {
        rc = copy_credentials(out, &p->cur);
        if (rc < 0)
            snprintf(msg, msglen, "Out of memory copying AWS credentials.");
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}
