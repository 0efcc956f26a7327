/* HTTP transport for the S3 client, on libcurl: a pool of easy handles
 * (connections stay alive across requests), time-outs, TLS verification,
 * and retries with exponential back-off and full jitter. Thread-safe.
 *
 * Each try asks the caller to build the request anew (URL and signed
 * headers), so every try carries a fresh signature and x-amz-date. */
#ifndef BOOKMARKFS_S3_HTTP_H
#define BOOKMARKFS_S3_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "util/textbuf.h"

#define S3_HTTP_ETAG_MAX 80 /* as STORE_ETAG_MAX */
#define S3_HTTP_ERR_MAX 256

struct s3_http_options {
    /* <= 0 in any of the numbers: its default in s3/defaults.h */
    long connect_timeout_ms;
    long timeout_ms;         /* whole request */
    const char *ca_file;     /* extra CA bundle, or NULL for the system's */
    const char *ca_bundle;   /* replaces the system bundle (AWS_CA_BUNDLE), or NULL */
    int max_attempts;
    long max_retry_ms;       /* bound on the whole operation */
    long backoff_base_ms;
    long backoff_cap_ms;
};

struct s3_http_response;

/* What to do after an answer with an HTTP error status. */
enum s3_http_verdict {
    S3_HTTP_STOP = 0,        /* final: hand the answer to the caller */
    S3_HTTP_RETRY,           /* transient: try again after a back-off */
    S3_HTTP_REFRESH,         /* try again at once with fresh credentials (once) */
};

/* What one try sends. build() fills url and headers ("Name: value" lines,
 * malloc'd array of malloc'd strings) for the try; force_refresh asks for
 * fresh credentials (after judge() said S3_HTTP_REFRESH). It returns 0 or a
 * negative errno, which ends the operation with that value. judge() reads
 * an answer with status >= 400 (the transport knows nothing of its body)
 * and writes the reason for the retry lines; NULL: retried as
 * s3_http_retryable_status says, the reason "HTTP <status>". */
struct s3_http_request {
    const char *method;          /* "GET", "PUT", "HEAD", ... */
    const void *body;            /* request body (PUT), may be NULL */
    size_t body_len;
    const char *what;            /* for logs, e.g. "GetObject bucket/key" */
    int (*build)(void *arg, int force_refresh, char **url, char ***headers,
                 size_t *nheaders);
    enum s3_http_verdict (*judge)(void *arg, const struct s3_http_response *resp,
                                  char *reason, size_t reason_len);
    void *arg;
};

enum s3_http_fail {
    S3_HTTP_OK = 0,          /* an HTTP answer arrived (any status) */
    S3_HTTP_CONNECT,         /* connection refused / unreachable */
    S3_HTTP_RESOLVE,         /* host name not resolved */
    S3_HTTP_TIMEOUT,         /* connect or request time-out */
    S3_HTTP_TLS,             /* TLS handshake or verification */
    S3_HTTP_NETWORK,         /* reset, truncated body, other transport */
    S3_HTTP_OTHER,           /* local failure (memory, build()) */
};

struct s3_http_response {
    long status;                 /* HTTP status of the last try, 0 if none */
    char *body;                  /* malloc'd, NUL-terminated, may be NULL */
    size_t body_len;
    char etag[S3_HTTP_ETAG_MAX]; /* ETag header, quotes removed */
    char request_id[128];        /* x-amz-request-id header */
    char date[64];               /* Date header (the server's clock) */
    char last_modified[64];      /* Last-Modified header */
    enum s3_http_fail fail;      /* transport failure of the last try */
    char error[S3_HTTP_ERR_MAX]; /* transport error text of the last try */
    int attempts;                /* requests sent, retries included */
};

struct s3_http;

/* Creates the transport in *out. 0, or -ENOMEM or -EIO (libcurl could not
 * be initialised). */
int s3_http_new(const struct s3_http_options *opts, struct s3_http **out);
void s3_http_free(struct s3_http *h);

/* Performs req with retries. Returns 0 when an HTTP answer arrived (look at
 * resp->status; transient failures were retried as far as the bounds
 * allow), or a negative errno: -ETIMEDOUT (time-outs), -EIO (other
 * transport failures), -ENOMEM, or build()'s error. resp is always filled
 * (free it with s3_http_response_free). */
int s3_http_perform(struct s3_http *h, const struct s3_http_request *req,
                    struct s3_http_response *resp);

void s3_http_response_free(struct s3_http_response *resp);

/* Whether an HTTP status is worth another try whatever the body says
 * (429, 500, 502, 503, 504). */
int s3_http_retryable_status(long status);

/* Full-jitter back-off for the given retry number (1 = first retry):
 * a uniform random delay in [0, min(cap, base * 2^(retry-1))] ms. */
long s3_http_backoff_ms(long base_ms, long cap_ms, int retry);

/* Once per process, before the first handle: libcurl's global set-up. 0,
 * or -EIO (logged once). s3_http_new calls it; so does the credential
 * chain, which makes its own handles. */
int s3_http_global_init(void);

/* ---- the handle set-up every request of the S3 client shares ----
 * The transport's tries and the credential endpoints' requests (s3/cred_http.c)
 * set their easy handles up alike: URL, headers, time-outs, no redirects,
 * TLS verification (s3/tls.h), the method and its body, and the answer's
 * body into a bounded textbuf; each then adds its own options. */

/* What one request sends. */
struct s3_http_setup {
    const char *url;
    const char *method;          /* GET, HEAD, PUT (body uploaded, seekable),
                                    POST (body as the form, not copied), or
                                    another (sent as is, no body) */
    const void *body;            /* PUT/POST body, may be NULL */
    size_t body_len;
    struct curl_slist *headers;  /* from s3_http_header_list */
    long connect_timeout_ms;
    long timeout_ms;
    const char *ca_bundle;       /* as tls_setup takes them */
    const char *ca_file;
};

/* One request's state, which the handle points into until it is done. */
struct s3_http_call {
    char errbuf[CURL_ERROR_SIZE];
    struct textbuf body;         /* the answer's body */
    size_t body_max;             /* a longer answer fails (too_big) */
    int too_big, oom;
    const char *up;              /* the body being sent */
    size_t up_len, up_off;
};

/* secret: the answer may hold credentials (wiped wherever it goes). */
void s3_http_call_init(struct s3_http_call *call, size_t body_max, int secret);
void s3_http_call_free(struct s3_http_call *call);

/* The header list of n "Name: value" lines (NULL entries skipped), with
 * "Expect:" added (no 100-continue round trip). 0 or -ENOMEM. */
int s3_http_header_list(const char *const *hdrs, size_t n, struct curl_slist **out);
/* Wipes the lines (they may carry tokens) and frees the list. */
void s3_http_header_list_free(struct curl_slist *list);

/* Sets c up for su, answering into call. 0, or -ENOMEM or -EINVAL (an
 * option libcurl refused). */
int s3_http_setup(CURL *c, const struct s3_http_setup *su, struct s3_http_call *call);

/* Performs the request set up on c. S3_HTTP_OK with *status set when an
 * answer arrived (its body in call->body), else what failed, with err
 * saying it in a line (no secrets) and call->oom set when memory ran out. */
enum s3_http_fail s3_http_run(CURL *c, struct s3_http_call *call, long *status,
                              char *err, size_t errlen);

#endif
