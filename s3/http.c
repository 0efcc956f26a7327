/* libcurl transport: pooled easy handles, time-outs, TLS, retries. */
#include "s3/http.h"
#include "s3/defaults.h"
#include "s3/tls.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/rand.h>

#include "s3/xml.h"
#include "util/clock.h"
#include "util/log.h"

#define POOL_MAX 32
#define BODY_MAX ((size_t)1 << 30) /* refuse answers above 1 GiB */

struct s3_http {
    struct s3_http_options o;
    char *ca_file;
    char *ca_bundle;
    pthread_mutex_t lock;
    CURL *pool[POOL_MAX];
    size_t npool;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (curl_init_rc != CURLE_OK)
        log_error("libcurl initialisation failed: %s", curl_easy_strerror(curl_init_rc));
}

int s3_http_global_init(void)
{
    pthread_once(&curl_once, curl_init_once);
    return curl_init_rc == CURLE_OK ? 0 : -EIO;
}

/* A number of the options that is not set (<= 0) takes its default. */
static void or_default(long *v, long dflt)
{
    if (*v <= 0)
        *v = dflt;
}

int s3_http_new(const struct s3_http_options *opts, struct s3_http **out)
{
    *out = NULL;
    int rc = s3_http_global_init();
    if (rc < 0)
        return rc;
    struct s3_http *h = calloc(1, sizeof *h);
    if (!h)
        return -ENOMEM;
    if (opts)
        h->o = *opts;
    or_default(&h->o.connect_timeout_ms, S3_DEFAULT_CONNECT_TIMEOUT_MS);
    or_default(&h->o.timeout_ms, S3_DEFAULT_TIMEOUT_MS);
    or_default(&h->o.max_retry_ms, S3_DEFAULT_RETRY_TIME_MS);
    or_default(&h->o.backoff_base_ms, S3_DEFAULT_BACKOFF_BASE_MS);
    or_default(&h->o.backoff_cap_ms, S3_DEFAULT_BACKOFF_CAP_MS);
    if (h->o.max_attempts <= 0)
        h->o.max_attempts = S3_DEFAULT_MAX_ATTEMPTS;
    h->o.ca_file = NULL;
    h->o.ca_bundle = NULL;
    if ((opts && opts->ca_file && opts->ca_file[0] &&
         !(h->ca_file = strdup(opts->ca_file))) ||
        (opts && opts->ca_bundle && opts->ca_bundle[0] &&
         !(h->ca_bundle = strdup(opts->ca_bundle))) ||
        pthread_mutex_init(&h->lock, NULL) != 0) {
        free(h->ca_file); /* the mutex was not made: nothing after it failed */
        free(h->ca_bundle);
        free(h);
        return -ENOMEM;
    }
    *out = h;
    return 0;
}

void s3_http_free(struct s3_http *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->npool; i++)
        curl_easy_cleanup(h->pool[i]);
    pthread_mutex_destroy(&h->lock);
    free(h->ca_file);
    free(h->ca_bundle);
    free(h);
}

static CURL *pool_get(struct s3_http *h)
{
    CURL *c = NULL;
    if (pthread_mutex_lock(&h->lock) == 0) {
        if (h->npool > 0)
            c = h->pool[--h->npool];
        pthread_mutex_unlock(&h->lock);
    }
    if (!c)
        c = curl_easy_init();
    else
        curl_easy_reset(c); /* keeps its live connections and DNS cache */
    return c;
}

static void pool_put(struct s3_http *h, CURL *c)
{
    if (!c)
        return;
    if (pthread_mutex_lock(&h->lock) == 0) {
        if (h->npool < POOL_MAX) {
            h->pool[h->npool++] = c;
            c = NULL;
        }
        pthread_mutex_unlock(&h->lock);
    }
    if (c)
        curl_easy_cleanup(c);
}

void s3_http_response_free(struct s3_http_response *resp)
{
    if (!resp)
        return;
    free(resp->body);
    resp->body = NULL;
    resp->body_len = 0;
}

int s3_http_retryable_status(long status)
{
    switch (status) {
    case 429: case 500: case 502: case 503: case 504:
        return 1;
    default:
        return 0;
    }
}

static uint64_t random_u64(void)
{
    uint64_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof v) != 1) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        v = (uint64_t)ts.tv_nsec * 2654435761u;
    }
    return v;
}

long s3_http_backoff_ms(long base_ms, long cap_ms, int retry)
{
    if (base_ms <= 0 || cap_ms <= 0)
        return 0;
    long ceiling = base_ms;
    for (int i = 1; i < retry && ceiling < cap_ms; i++)
        ceiling = ceiling > cap_ms / 2 ? cap_ms : ceiling * 2;
    if (ceiling > cap_ms)
        ceiling = cap_ms;
    return (long)(random_u64() % ((uint64_t)ceiling + 1));
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct s3_http_call *call = userdata;
    size_t n = size * nmemb;
    if (n == 0)
        return 0;
    if (n > call->body_max - call->body.len) {
        call->too_big = 1;
        return 0;
    }
    if (textbuf_put(ptr, n, &call->body) != 0) {
        call->oom = 1;
        return 0;
    }
    return n;
}

static size_t on_read(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct s3_http_call *call = userdata;
    size_t room = size * nitems, left = call->up_len - call->up_off;
    size_t n = left < room ? left : room;
    if (n) {
        memcpy(buf, call->up + call->up_off, n);
        call->up_off += n;
    }
    return n;
}

static int on_seek(void *userdata, curl_off_t offset, int origin)
{
    struct s3_http_call *call = userdata;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > call->up_len)
        return CURL_SEEKFUNC_CANTSEEK;
    call->up_off = (size_t)offset;
    return CURL_SEEKFUNC_OK;
}

/* The one map from libcurl's codes to what failed. */
static enum s3_http_fail classify(CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return S3_HTTP_OK;
    case CURLE_COULDNT_CONNECT:
        return S3_HTTP_CONNECT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return S3_HTTP_RESOLVE;
    case CURLE_OPERATION_TIMEDOUT:
        return S3_HTTP_TIMEOUT;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_USE_SSL_FAILED:
        return S3_HTTP_TLS;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_WRITE_ERROR:
    case CURLE_READ_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
    case CURLE_NOT_BUILT_IN:
    case CURLE_UNKNOWN_OPTION:
        return S3_HTTP_OTHER;
    default:
        return S3_HTTP_NETWORK;
    }
}

void s3_http_call_init(struct s3_http_call *call, size_t body_max, int secret)
{
    memset(call, 0, sizeof *call);
    if (secret)
        textbuf_init_secret(&call->body);
    else
        textbuf_init(&call->body);
    call->body_max = body_max;
}

void s3_http_call_free(struct s3_http_call *call)
{
    textbuf_free(&call->body);
}

int s3_http_header_list(const char *const *hdrs, size_t n, struct curl_slist **out)
{
    struct curl_slist *list = NULL;
    for (size_t i = 0; i <= n; i++) {
        /* No "Expect: 100-continue" round trip before bodies. */
        const char *h = i < n ? hdrs[i] : "Expect:";
        if (!h)
            continue;
        struct curl_slist *nl = curl_slist_append(list, h);
        if (!nl) {
            s3_http_header_list_free(list);
            *out = NULL;
            return -ENOMEM;
        }
        list = nl;
    }
    *out = list;
    return 0;
}

void s3_http_header_list_free(struct curl_slist *list)
{
    /* Signed headers carry the session token, the credential endpoints'
     * the authorization token: wiped before they are freed. */
    for (struct curl_slist *e = list; e; e = e->next)
        if (e->data)
            explicit_bzero(e->data, strlen(e->data));
    curl_slist_free_all(list);
}

int s3_http_setup(CURL *c, const struct s3_http_setup *su, struct s3_http_call *call)
{
    call->up = su->body;
    call->up_len = su->body ? su->body_len : 0;
    call->up_off = 0;
    call->errbuf[0] = '\0';
    CURLcode cc = CURLE_OK;
#define SET(opt, val)                                     \
    do {                                                  \
        if (cc == CURLE_OK)                               \
            cc = curl_easy_setopt(c, opt, val);           \
    } while (0)
    SET(CURLOPT_URL, su->url);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_ERRORBUFFER, call->errbuf);
    SET(CURLOPT_HTTPHEADER, su->headers);
    SET(CURLOPT_CONNECTTIMEOUT_MS, su->connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, su->timeout_ms);
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    SET(CURLOPT_WRITEFUNCTION, on_write);
    SET(CURLOPT_WRITEDATA, call);
    if (strcmp(su->method, "GET") == 0) {
        SET(CURLOPT_HTTPGET, 1L);
    } else if (strcmp(su->method, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (strcmp(su->method, "PUT") == 0) {
        SET(CURLOPT_UPLOAD, 1L);
        SET(CURLOPT_READFUNCTION, on_read);
        SET(CURLOPT_READDATA, call);
        SET(CURLOPT_SEEKFUNCTION, on_seek);
        SET(CURLOPT_SEEKDATA, call);
        SET(CURLOPT_INFILESIZE_LARGE, (curl_off_t)call->up_len);
    } else if (strcmp(su->method, "POST") == 0) {
        /* Not copied: the form may hold a token the caller wipes. */
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->up_len);
        SET(CURLOPT_POSTFIELDS, call->up ? (const char *)call->up : "");
    } else {
        SET(CURLOPT_CUSTOMREQUEST, su->method);
    }
#undef SET
    int rc = cc == CURLE_OK ? tls_setup(c, su->ca_bundle, su->ca_file) : 0;
    if (cc != CURLE_OK)
        rc = cc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
    return rc;
}

enum s3_http_fail s3_http_run(CURL *c, struct s3_http_call *call, long *status,
                              char *err, size_t errlen)
{
    CURLcode cc = curl_easy_perform(c);
    enum s3_http_fail f = classify(cc);
    *status = 0;
    if (cc == CURLE_OK) {
        if (curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status) != CURLE_OK)
            *status = 0;
        err[0] = '\0';
        return f;
    }
    if (cc == CURLE_OUT_OF_MEMORY)
        call->oom = 1;
    if (call->too_big)
        snprintf(err, errlen, "answer larger than %zu bytes", call->body_max);
    else if (call->oom)
        snprintf(err, errlen, "out of memory");
    else
        snprintf(err, errlen, "%s", call->errbuf[0] ? call->errbuf : curl_easy_strerror(cc));
    return f;
}

static void free_headers(char **hdrs, size_t n)
{
    if (!hdrs)
        return;
    for (size_t i = 0; i < n; i++) {
        if (hdrs[i])
            explicit_bzero(hdrs[i], strlen(hdrs[i]));
        free(hdrs[i]);
    }
    free(hdrs);
}

static void copy_header(CURL *c, const char *name, char *dst, size_t dstlen, int unquote)
{
    struct curl_header *hd = NULL;
    dst[0] = '\0';
    if (curl_easy_header(c, name, 0, CURLH_HEADER, -1, &hd) != CURLHE_OK || !hd ||
        !hd->value)
        return;
    if (unquote)
        s3_xml_etag_copy(dst, dstlen, hd->value);
    else
        snprintf(dst, dstlen, "%s", hd->value);
}

/* One try. Returns 0 when the try ran (resp->fail tells how), or a
 * negative errno for a local failure (nothing was sent). */
static int one_try(struct s3_http *h, const struct s3_http_request *req,
                   int force_refresh, struct s3_http_response *resp)
{
    char *url = NULL;
    char **hdrs = NULL;
    size_t nhdrs = 0;
    int rc = req->build(req->arg, force_refresh, &url, &hdrs, &nhdrs);
    if (rc < 0) {
        free(url);
        free_headers(hdrs, nhdrs);
        return rc;
    }
    struct curl_slist *list = NULL;
    rc = s3_http_header_list((const char *const *)hdrs, nhdrs, &list);
    free_headers(hdrs, nhdrs);
    CURL *c = rc == 0 ? pool_get(h) : NULL;
    if (rc == 0 && !c)
        rc = -ENOMEM;
    if (rc < 0) {
        s3_http_header_list_free(list);
        free(url);
        return rc;
    }

    struct s3_http_call call;
    s3_http_call_init(&call, BODY_MAX, 0);
    struct s3_http_setup su = {
        .url = url,
        .method = req->method,
        .body = req->body,
        .body_len = req->body_len,
        .headers = list,
        .connect_timeout_ms = h->o.connect_timeout_ms,
        .timeout_ms = h->o.timeout_ms,
        .ca_bundle = h->ca_bundle, /* verified; --ca-file adds */
        .ca_file = h->ca_file,
    };
    rc = s3_http_setup(c, &su, &call);
    CURLcode cc = CURLE_OK;
    if (rc == 0) {
        cc = curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L); /* keys may hold "." and ".." segments */
        if (cc == CURLE_OK)
            cc = curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
        if (cc != CURLE_OK)
            rc = cc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
    }
    if (rc < 0) {
        resp->status = 0;
        resp->fail = S3_HTTP_OTHER;
        snprintf(resp->error, sizeof resp->error, "%s",
                 rc == -ENOMEM ? "out of memory" : "cannot set up the request");
    } else {
        resp->fail = s3_http_run(c, &call, &resp->status, resp->error, sizeof resp->error);
    }
    if (rc == 0 && resp->fail == S3_HTTP_OK) {
        copy_header(c, "ETag", resp->etag, sizeof resp->etag, 1);
        copy_header(c, "x-amz-request-id", resp->request_id, sizeof resp->request_id, 0);
        copy_header(c, "Date", resp->date, sizeof resp->date, 0);
        copy_header(c, "Last-Modified", resp->last_modified, sizeof resp->last_modified, 0);
        resp->body_len = call.body.len;
        if (textbuf_take(&call.body, 0, &resp->body) < 0) {
            resp->body_len = 0;
            resp->fail = S3_HTTP_OTHER;
            snprintf(resp->error, sizeof resp->error, "out of memory");
        }
    }
    s3_http_call_free(&call);
    pool_put(h, c);
    s3_http_header_list_free(list);
    free(url);
    return 0;
}

static int transport_retryable(enum s3_http_fail f)
{
    return f == S3_HTTP_CONNECT || f == S3_HTTP_RESOLVE || f == S3_HTTP_TIMEOUT ||
           f == S3_HTTP_NETWORK;
}

int s3_http_perform(struct s3_http *h, const struct s3_http_request *req,
                    struct s3_http_response *resp)
{
    memset(resp, 0, sizeof *resp);
    const char *what = req->what ? req->what : req->method;
    int64_t start = clock_mono_ms();
    int refreshed = 0, force = 0;
    for (int attempt = 1;; attempt++) {
        s3_http_response_free(resp);
        resp->status = 0;
        resp->etag[0] = resp->request_id[0] = resp->error[0] = '\0';
        resp->date[0] = resp->last_modified[0] = '\0';
        resp->fail = S3_HTTP_OK;
        int rc = one_try(h, req, force, resp);
        force = 0;
        if (rc < 0) {
            resp->fail = S3_HTTP_OTHER;
            return rc;
        }
        resp->attempts = attempt;

        int retry = 0;
        char reason[S3_HTTP_ERR_MAX + 64];
        if (resp->fail != S3_HTTP_OK) {
            retry = transport_retryable(resp->fail);
            snprintf(reason, sizeof reason, "%s", resp->error);
        } else if (resp->status >= 400) {
            snprintf(reason, sizeof reason, "HTTP %ld", resp->status);
            enum s3_http_verdict v =
                req->judge ? req->judge(req->arg, resp, reason, sizeof reason)
                           : s3_http_retryable_status(resp->status) ? S3_HTTP_RETRY
                                                                    : S3_HTTP_STOP;
            if (v == S3_HTTP_REFRESH) {
                if (!refreshed && attempt < h->o.max_attempts) {
                    refreshed = 1;
                    force = 1;
                    log_info("%s: credentials expired, refreshing them", what);
                    continue;
                }
            } else {
                retry = v == S3_HTTP_RETRY;
            }
        }
        if (!retry)
            break;
        if (attempt >= h->o.max_attempts) {
            log_warn("%s: %s; giving up after %d attempts", what, reason, attempt);
            break;
        }
        long delay = s3_http_backoff_ms(h->o.backoff_base_ms, h->o.backoff_cap_ms, attempt);
        int64_t elapsed = clock_mono_ms() - start;
        if (elapsed + delay > h->o.max_retry_ms) {
            log_warn("%s: %s; giving up after %d attempts (%lld ms)", what, reason,
                     attempt, (long long)elapsed);
            break;
        }
        log_warn("%s: %s; retrying in %ld ms (attempt %d of %d)", what, reason, delay,
                 attempt + 1, h->o.max_attempts);
        sleep_ms(delay);
    }
    switch (resp->fail) {
    case S3_HTTP_OK:
        return 0;
    case S3_HTTP_TIMEOUT:
        return -ETIMEDOUT;
    case S3_HTTP_OTHER:
        return strcmp(resp->error, "out of memory") == 0 ? -ENOMEM : -EIO;
    default:
        return -EIO;
    }
}
