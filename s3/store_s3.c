/* The store interface (store/store.h) on S3: ListObjectsV2, GetObject,
 * PutObject (also conditional), DeleteObject, signed with SigV4, over the pooled libcurl transport. */
#include "s3/store_s3.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "s3/cred.h"
#include "s3/http.h"
#include "s3/sigv4.h"
#include "s3/xml.h"
#include "s3/defaults.h"
#include "util/clock.h"
#include "util/env.h"
#include "util/log.h"

struct s3_store {
    struct store base;
    char *endpoint;   /* as given, for messages */
    char *scheme;     /* "http" or "https" */
    char *host;       /* endpoint host with ":port" when not the default */
    char *base_path;  /* endpoint path without trailing '/', often "" */
    int path_style;   /* forced by the option */
    int is_aws;       /* endpoint is AWS's */
    char *region;
    char *ca_bundle;  /* AWS_CA_BUNDLE or the profile's ca_bundle, or NULL */
    struct cred_provider *creds;
    struct s3_http *http;
};

/* ---- addressing ---------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

static int looks_like_ipv4(const char *s)
{
    int dots = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '.')
            dots++;
        else if (!isdigit((unsigned char)*p))
            return 0;
    }
    return dots == 3;
}

/* Whether bucket can be a DNS label in front of the endpoint host: lowercase
 * letters, digits, '-', no dots under TLS (the wildcard certificate covers
 * one label only), 3 to 63 characters, letter or digit at both ends. */
static int bucket_dns_safe(const char *b, int https)
{
    size_t n = strlen(b);
    if (n < 3 || n > 63 || looks_like_ipv4(b))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = b[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
                 (c == '.' && !https);
        if (!ok)
            return 0;
        if (c == '.' && (i == 0 || b[i - 1] == '.' || b[i - 1] == '-' ||
                         (i + 1 < n && b[i + 1] == '-')))
            return 0;
    }
    return isalnum((unsigned char)b[0]) && isalnum((unsigned char)b[n - 1]);
}

static int use_virtual_host(const struct s3_store *s, const char *bucket)
{
    return !s->path_style && s->is_aws &&
           bucket_dns_safe(bucket, strcmp(s->scheme, "https") == 0);
}

static char *str_concat(const char *a, const char *b, const char *c, const char *d)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c), ld = strlen(d);
    char *r = malloc(la + lb + lc + ld + 1);
    if (!r)
        return NULL;
    memcpy(r, a, la);
    memcpy(r + la, b, lb);
    memcpy(r + la + lb, c, lc);
    memcpy(r + la + lb + lc, d, ld);
    r[la + lb + lc + ld] = '\0';
    return r;
}

/* ---- one request --------------------------------------------------------- */

struct req_ctx {
    struct s3_store *s;
    const char *method;
    const char *bucket;
    const char *key;                 /* NULL: a bucket-level request */
    const struct sigv4_pair *query;
    size_t nquery;
    const struct sigv4_pair *headers;
    size_t nheaders;
    char payload_hash[65];
    char cred_msg[256];              /* why credentials failed */
    struct store_error *err;         /* what failed before anything was sent */
};

static int build_request(void *arg, int force_refresh, char **url, char ***hdrs,
                         size_t *nhdrs)
{
    struct req_ctx *x = arg;
    struct s3_store *s = x->s;
    *url = NULL;
    *hdrs = NULL;
    *nhdrs = 0;

    struct cred_keys cr;
    memset(&cr, 0, sizeof cr);
    x->cred_msg[0] = '\0';
    int rc = cred_provider_get(s->creds, &cr, force_refresh, x->cred_msg,
                               sizeof x->cred_msg);
    if (rc < 0) {
        if (!x->cred_msg[0])
            snprintf(x->cred_msg, sizeof x->cred_msg, "No AWS credentials were found.");
        store_fail(x->err, rc, "%s", x->cred_msg);
        cred_keys_clear(&cr);
        return rc;
    }

    char *host = NULL, *path = NULL;
    if (use_virtual_host(s, x->bucket)) {
        host = str_concat(x->bucket, ".", s->host, "");
        path = str_concat(s->base_path, "/", x->key ? x->key : "", "");
    } else {
        host = strdup(s->host);
        path = str_concat(s->base_path, "/", x->bucket, "");
        if (path && x->key) {
            char *p = str_concat(path, "/", x->key, "");
            free(path);
            path = p;
        }
    }
    struct sigv4_signed sg;
    memset(&sg, 0, sizeof sg);
    if (!host || !path) {
        rc = -ENOMEM;
        goto out;
    }
    struct sigv4_request sr = {
        .method = x->method,
        .host = host,
        .path = path,
        .query = x->query,
        .nquery = x->nquery,
        .headers = x->headers,
        .nheaders = x->nheaders,
        .payload_hash = x->payload_hash,
        .region = s->region,
        .service = "s3",
        .now = clock_wall_s(), /* shifted in test builds (util/clock.h) */
    };
    struct sigv4_credentials sc = {cr.access_key, cr.secret_key, cr.session_token};
    rc = sigv4_sign(&sr, &sc, &sg);
    if (rc < 0) {
        store_fail(x->err, rc, "signing the request failed: %s", strerror(-rc));
        goto out;
    }
    const char *q = sg.encoded_query && sg.encoded_query[0] ? sg.encoded_query : NULL;
    size_t ulen = strlen(s->scheme) + 3 + strlen(host) + strlen(sg.encoded_path) +
                  (q ? strlen(q) + 1 : 0) + 1;
    *url = malloc(ulen);
    if (!*url) {
        rc = -ENOMEM;
        goto out;
    }
    snprintf(*url, ulen, "%s://%s%s%s%s", s->scheme, host, sg.encoded_path,
             q ? "?" : "", q ? q : "");
    *hdrs = calloc(sg.nsend_headers ? sg.nsend_headers : 1, sizeof **hdrs);
    if (!*hdrs) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < sg.nsend_headers; i++) {
        (*hdrs)[i] = strdup(sg.send_headers[i]);
        if (!(*hdrs)[i]) {
            rc = -ENOMEM;
            goto out;
        }
        *nhdrs = i + 1;
    }
out:
    sigv4_signed_free(&sg);
    cred_keys_clear(&cr);
    free(host);
    free(path);
    return rc; /* on failure the transport frees what was filled */
}

/* ---- errors -------------------------------------------------------------- */

static int errno_for(long status, const char *code)
{
    if (strcmp(code, "NoSuchKey") == 0)
        return -ENOENT;
    if (strcmp(code, "NoSuchBucket") == 0)
        return -ENXIO;
    if (strcmp(code, "AccessDenied") == 0 || strcmp(code, "InvalidAccessKeyId") == 0 ||
        strcmp(code, "SignatureDoesNotMatch") == 0 || strcmp(code, "ExpiredToken") == 0 ||
        strcmp(code, "InvalidToken") == 0 || strcmp(code, "AllAccessDisabled") == 0 ||
        strcmp(code, "AccountProblem") == 0 || strcmp(code, "RequestTimeTooSkewed") == 0)
        return -EACCES;
    if (strcmp(code, "RequestTimeout") == 0)
        return -ETIMEDOUT;
    if (!code[0] && (status == 401 || status == 403))
        return -EACCES;
    return -EIO;
}

#define SKEW_HINT "; the local clock differs from the store's by more than 15 " \
                  "minutes: set the clock (NTP)"

static const char *plural(int n) { return n == 1 ? "" : "s"; }

/* Maps an error answer to errno and fills err (code, request id, message). */
static int answer_error(const char *key, const struct s3_http_response *r,
                        struct s3_xml_error *doc, struct store_error *err)
{
    if (s3_xml_parse_error(r->body, r->body_len, doc) < 0) {
        memset(doc, 0, sizeof *doc);
        snprintf(doc->message, sizeof doc->message, "no error document in the answer");
        snprintf(doc->request_id, sizeof doc->request_id, "%s", r->request_id);
    }
    int rc = errno_for(r->status, doc->code);
    if (rc == -EIO && !doc->code[0] && r->status == 404)
        rc = key ? -ENOENT : -ENXIO;
    store_fail(err, rc, "HTTP %ld after %d attempt%s: %s%s", r->status, r->attempts,
               plural(r->attempts), doc->message[0] ? doc->message : "-",
               strcmp(doc->code, "RequestTimeTooSkewed") == 0 ? SKEW_HINT : "");
    snprintf(err->code, sizeof err->code, "%s", doc->code);
    snprintf(err->request_id, sizeof err->request_id, "%s",
             doc->request_id[0] ? doc->request_id : r->request_id);
    return rc;
}

/* A failure with no answer: fills err unless building the request already
 * did (credentials, signing). */
static int transport_error(const struct s3_http_response *r, int rc,
                           struct store_error *err)
{
    if (r->fail == S3_HTTP_OTHER && !r->error[0] && err->message[0])
        return rc; /* credentials or signing: told by build_request */
    return store_fail(err, rc, "%s after %d attempt%s", r->error[0] ? r->error : strerror(-rc),
                      r->attempts, plural(r->attempts));
}

static int check_names(const char *bucket, const char *key, struct store_error *err)
{
    if (!bucket || !bucket[0] || strlen(bucket) > 255)
        return store_fail(err, -EINVAL, "the bucket name is empty or too long");
    if (key && (!key[0] || strlen(key) > STORE_KEY_MAX))
        return store_fail(err, -EINVAL, "the object key is empty or longer than %d bytes",
                          STORE_KEY_MAX);
    return 0;
}

/* The transport's judge of an error answer (s3/http.h): S3's codes decide
 * what the status alone cannot, ExpiredToken (fresh credentials, once) and
 * RequestTimeout (retried, as a 5xx is). */
static enum s3_http_verdict judge_answer(void *arg, const struct s3_http_response *r,
                                         char *reason, size_t reason_len)
{
    (void)arg;
    struct s3_xml_error doc;
    const char *code = s3_xml_parse_error(r->body, r->body_len, &doc) == 0 && doc.code[0]
                           ? doc.code : NULL;
    snprintf(reason, reason_len, "HTTP %ld%s%s", r->status, code ? " " : "",
             code ? code : "");
    if ((r->status == 400 || r->status == 403) && code && strcmp(code, "ExpiredToken") == 0)
        return S3_HTTP_REFRESH;
    if (s3_http_retryable_status(r->status) ||
        (r->status == 400 && code && strcmp(code, "RequestTimeout") == 0))
        return S3_HTTP_RETRY;
    return S3_HTTP_STOP;
}

static int perform(struct s3_store *s, struct req_ctx *x, const char *op,
                   const void *body, size_t len, struct s3_http_response *r)
{
    char what[512];
    snprintf(what, sizeof what, "%s s3://%s/%s", op, x->bucket, x->key ? x->key : "");
    struct s3_http_request hr = {
        .method = x->method,
        .body = body,
        .body_len = len,
        .what = what,
        .build = build_request,
        .judge = judge_answer,
        .arg = x,
    };
    sigv4_sha256_hex(body ? body : "", body ? len : 0, x->payload_hash);
    return s3_http_perform(s->http, &hr, r);
}

/* ---- operations ---------------------------------------------------------- */

static int list_request(struct s3_store *s, const char *bucket, const char *prefix,
                        const char *start_after, const char *token,
                        const char *max_keys, struct s3_http_response *r,
                        struct store_error *err)
{
    struct sigv4_pair q[5];
    size_t nq = 0;
    /* Keys come URL-encoded: XML 1.0 cannot carry every byte a key may
     * hold (control characters; a CR would come back as LF). */
    q[nq++] = (struct sigv4_pair){"encoding-type", "url"};
    q[nq++] = (struct sigv4_pair){"list-type", "2"};
    q[nq++] = (struct sigv4_pair){"max-keys", max_keys};
    if (prefix && prefix[0])
        q[nq++] = (struct sigv4_pair){"prefix", prefix};
    /* S3 ignores StartAfter once a continuation token is given. */
    if (start_after && start_after[0] && !token)
        q[nq++] = (struct sigv4_pair){"start-after", start_after};
    if (token)
        q[nq++] = (struct sigv4_pair){"continuation-token", token};
    struct req_ctx x = {.s = s, .method = "GET", .bucket = bucket, .key = NULL,
                        .query = q, .nquery = nq, .err = err};
    return perform(s, &x, "ListObjectsV2", NULL, 0, r);
}

static int s3_list_from(struct store *st, const char *bucket, const char *prefix,
                        const char *start_after, const char *token,
                        struct store_page *out, struct store_error *err)
{
    struct s3_store *s = (struct s3_store *)st;
    memset(out, 0, sizeof *out);
    int rc = check_names(bucket, NULL, err);
    if (rc < 0)
        return rc;
    struct s3_http_response r;
    rc = list_request(s, bucket, prefix, start_after, token, "1000", &r, err);
    if (rc < 0) {
        transport_error(&r, rc, err);
    } else if (r.status != 200) {
        struct s3_xml_error doc;
        rc = answer_error(NULL, &r, &doc, err);
    } else {
        rc = s3_xml_parse_list(r.body, r.body_len, out);
        if (rc == 0 && out->skipped)
            log_warn("ListObjectsV2 s3://%s/%s: %zu object%s skipped: the listing cannot "
                     "tell their keys (control characters, and the server ignored "
                     "encoding-type=url)", bucket, prefix ? prefix : "", out->skipped,
                     out->skipped == 1 ? "" : "s");
        if (rc == -EINVAL) {
            rc = store_fail(err, -EIO, "the answer is not a valid listing");
            snprintf(err->request_id, sizeof err->request_id, "%s", r.request_id);
        }
    }
    s3_http_response_free(&r);
    return rc;
}

static int s3_list_page(struct store *st, const char *bucket, const char *prefix,
                        const char *token, struct store_page *out,
                        struct store_error *err)
{
    return s3_list_from(st, bucket, prefix, NULL, token, out, err);
}

/* An HTTP date (Date, Last-Modified) in ms since 1970, 0 when absent or
 * unreadable; parsed by libcurl. */
static int64_t http_date_ms(const char *v)
{
    if (!v || !v[0])
        return 0;
    time_t t = curl_getdate(v, NULL);
    return t > 0 ? (int64_t)t * 1000 : 0;
}

static int s3_get_info(struct store *st, const char *bucket, const char *key,
                       char **data, size_t *len, struct store_get_info *info,
                       struct store_error *err)
{
    struct s3_store *s = (struct s3_store *)st;
    *data = NULL;
    *len = 0;
    memset(info, 0, sizeof *info);
    int rc = check_names(bucket, key, err);
    if (rc < 0)
        return rc;
    struct req_ctx x = {.s = s, .method = "GET", .bucket = bucket, .key = key, .err = err};
    struct s3_http_response r;
    rc = perform(s, &x, "GetObject", NULL, 0, &r);
    info->server_ms = http_date_ms(r.date);
    if (rc < 0) {
        transport_error(&r, rc, err);
    } else if (r.status != 200) {
        struct s3_xml_error doc;
        rc = answer_error(key, &r, &doc, err);
        if (rc == -ENOENT)
            log_debug("GetObject s3://%s/%s: no such key", bucket, key);
    } else {
        snprintf(info->etag, sizeof info->etag, "%s", r.etag);
        info->last_modified_ms = http_date_ms(r.last_modified);
        *data = r.body; /* NUL-terminated by the transport */
        *len = r.body_len;
        r.body = NULL;
    }
    s3_http_response_free(&r);
    return rc;
}

static int s3_get(struct store *st, const char *bucket, const char *key, char **data,
                  size_t *len, struct store_error *err)
{
    struct store_get_info info;
    return s3_get_info(st, bucket, key, data, len, &info, err);
}

/* PutObject, unconditional (if_match NULL) or conditional (put_if). */
static int put_common(struct s3_store *s, const char *bucket, const char *key,
                      const void *body, size_t len, const char *if_match,
                      struct store_put_result *res, struct store_error *err)
{
    memset(res, 0, sizeof *res);
    int rc = check_names(bucket, key, err);
    if (rc < 0)
        return rc;
    if (!body && len)
        return store_fail(err, -EINVAL, "no body to put");
    if (len > (size_t)1 << 30)
        return store_fail(err, -EFBIG, "an object over 1 GiB");
    if (if_match && (!if_match[0] || strlen(if_match) >= STORE_ETAG_MAX))
        return store_fail(err, -EINVAL, "a conditional put needs an ETag or \"*\"");

    unsigned char md5[EVP_MAX_MD_SIZE];
    unsigned int md5len = 0;
    if (EVP_Digest(body ? body : "", len, md5, &md5len, EVP_md5(), NULL) != 1)
        return store_fail(err, -EIO, "MD5 unavailable for Content-MD5");
    char md5b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
    EVP_EncodeBlock((unsigned char *)md5b64, md5, (int)md5len);

    /* If-Match carries the ETag unquoted: RGW answers 412 to a quoted one
     * whatever the object, and AWS takes both. */
    struct sigv4_pair h[3] = {{"content-md5", md5b64},
                              {"content-type", "application/json"},
                              {NULL, NULL}};
    size_t nh = 2;
    if (if_match && strcmp(if_match, STORE_IF_ABSENT) == 0)
        h[nh++] = (struct sigv4_pair){"if-none-match", "*"};
    else if (if_match)
        h[nh++] = (struct sigv4_pair){"if-match", if_match};
    struct req_ctx x = {.s = s, .method = "PUT", .bucket = bucket, .key = key,
                        .headers = h, .nheaders = nh, .err = err};
    struct s3_http_response r;
    rc = perform(s, &x, "PutObject", body, len, &r);
    res->attempts = r.attempts;
    res->server_ms = http_date_ms(r.date);
    if (rc < 0) {
        transport_error(&r, rc, err);
        res->ambiguous = r.fail != S3_HTTP_OTHER || r.error[0];
    } else if (r.status == 412 && if_match) {
        rc = store_fail(err, -EEXIST, "precondition failed (%d attempt%s)", r.attempts,
                        plural(r.attempts));
        snprintf(err->request_id, sizeof err->request_id, "%s", r.request_id);
        res->ambiguous = r.attempts > 1; /* our own earlier try may have won */
        log_debug("conditional PutObject s3://%s/%s: precondition failed (%d attempts)",
                  bucket, key, r.attempts);
    } else if (r.status != 200) {
        struct s3_xml_error doc;
        rc = answer_error(key, &r, &doc, err);
        if (if_match && r.status == 404 && strcmp(doc.code, "NoSuchKey") == 0 &&
            strcmp(if_match, STORE_IF_ABSENT) != 0) {
            rc = -ENOENT;
        } else {
            if (rc == -ENOENT)
                rc = -EIO;
            /* 409 ConditionalRequestConflict, and 5xx after our retries:
             * the write may have taken place. */
            res->ambiguous = if_match && (r.status == 409 || r.status >= 500);
        }
        err->err = rc;
    } else {
        snprintf(res->etag, sizeof res->etag, "%s", r.etag);
    }
    s3_http_response_free(&r);
    return rc;
}

static int s3_put(struct store *st, const char *bucket, const char *key,
                  const void *body, size_t len, struct store_put_result *res,
                  struct store_error *err)
{
    return put_common((struct s3_store *)st, bucket, key, body, len, NULL, res, err);
}

static int s3_put_if(struct store *st, const char *bucket, const char *key,
                     const void *body, size_t len, const char *if_match,
                     struct store_put_result *res, struct store_error *err)
{
    if (!if_match) {
        memset(res, 0, sizeof *res);
        return store_fail(err, -EINVAL, "a conditional put needs an ETag or \"*\"");
    }
    return put_common((struct s3_store *)st, bucket, key, body, len, if_match, res, err);
}

static int s3_del(struct store *st, const char *bucket, const char *key,
                  struct store_error *err)
{
    struct s3_store *s = (struct s3_store *)st;
    int rc = check_names(bucket, key, err);
    if (rc < 0)
        return rc;
    struct req_ctx x = {.s = s, .method = "DELETE", .bucket = bucket, .key = key,
                        .err = err};
    struct s3_http_response r;
    rc = perform(s, &x, "DeleteObject", NULL, 0, &r);
    if (rc < 0) {
        transport_error(&r, rc, err);
    } else if (r.status != 204 && r.status != 200) {
        struct s3_xml_error doc;
        rc = answer_error(key, &r, &doc, err);
        if (rc == -ENOENT) {
            rc = 0;
            memset(err, 0, sizeof *err);
        }
    }
    s3_http_response_free(&r);
    return rc;
}

static int s3_check_bucket(struct store *st, const char *bucket, char *msg,
                           size_t msglen)
{
    struct s3_store *s = (struct s3_store *)st;
    if (!msg)
        msglen = 0; /* snprintf(NULL, 0, ...) writes nothing */
    if (msglen)
        msg[0] = '\0';
    struct store_error err = {0};
    if (check_names(bucket, NULL, &err) < 0) {
        snprintf(msg, msglen, "The bucket name is empty or too long.");
        return -EINVAL;
    }
    struct s3_http_response r;
    struct sigv4_pair q[3] = {{"encoding-type", "url"}, {"list-type", "2"},
                              {"max-keys", "1"}};
    /* msg is the one line the caller shows. */
    struct req_ctx x = {.s = s, .method = "GET", .bucket = bucket, .query = q,
                        .nquery = 3, .err = &err};
    int rc = perform(s, &x, "ListObjectsV2", NULL, 0, &r);
    if (rc < 0) {
        switch (r.fail) {
        case S3_HTTP_CONNECT:
            snprintf(msg, msglen, "Cannot connect to the S3 endpoint %s (connection refused "
                     "or unreachable).", s->endpoint);
            break;
        case S3_HTTP_RESOLVE:
            snprintf(msg, msglen, "Cannot resolve the host name of the S3 endpoint %s.",
                     s->endpoint);
            break;
        case S3_HTTP_TIMEOUT:
            snprintf(msg, msglen, "The S3 endpoint %s did not answer in time.", s->endpoint);
            break;
        case S3_HTTP_TLS:
            snprintf(msg, msglen, "The TLS connection to the S3 endpoint %s failed: %s.",
                     s->endpoint, r.error);
            break;
        default:
            if (x.cred_msg[0])
                snprintf(msg, msglen, "%s", x.cred_msg);
            else
                snprintf(msg, msglen, "The S3 endpoint %s failed: %s.", s->endpoint,
                         r.error[0] ? r.error : strerror(-rc));
        }
    } else if (r.status != 200) {
        struct s3_xml_error doc;
        rc = answer_error(NULL, &r, &doc, &err);
        const char *c = doc.code;
        if (strcmp(c, "NoSuchBucket") == 0 || (!c[0] && r.status == 404)) {
            snprintf(msg, msglen, "The bucket \"%s\" does not exist.", bucket);
            rc = -ENXIO;
        } else if (strcmp(c, "InvalidAccessKeyId") == 0)
            snprintf(msg, msglen, "The AWS access key ID is not known to the store "
                     "(InvalidAccessKeyId).");
        else if (strcmp(c, "SignatureDoesNotMatch") == 0)
            snprintf(msg, msglen, "The secret access key does not match the access key ID "
                     "(SignatureDoesNotMatch).");
        else if (strcmp(c, "AccessDenied") == 0)
            snprintf(msg, msglen, "Access to the bucket \"%s\" is denied to these "
                     "credentials (AccessDenied).", bucket);
        else if (strcmp(c, "ExpiredToken") == 0)
            snprintf(msg, msglen, "The AWS session token has expired (ExpiredToken).");
        else if (strcmp(c, "RequestTimeTooSkewed") == 0)
            snprintf(msg, msglen, "The local clock differs from the S3 endpoint's by more "
                     "than 15 minutes (RequestTimeTooSkewed); set the clock (NTP).");
        else if (strcmp(c, "PermanentRedirect") == 0 ||
                 strcmp(c, "AuthorizationHeaderMalformed") == 0 || r.status == 301)
            snprintf(msg, msglen, "The bucket \"%s\" is in another region than %s; give "
                     "its region with --region.", bucket, s->region);
        else
            snprintf(msg, msglen, "Checking the bucket \"%s\" failed: HTTP %ld %s.", bucket,
                     r.status, c[0] ? c : "without an S3 error code");
    } else {
        struct store_page page;
        rc = s3_xml_parse_list(r.body, r.body_len, &page);
        store_page_free(&page);
        if (rc < 0) {
            snprintf(msg, msglen, "The S3 endpoint %s did not answer with a bucket listing.",
                     s->endpoint);
            rc = -EIO;
        }
    }
    s3_http_response_free(&r);
    return rc;
}

static void s3_locate(struct store *st, const char *bucket, const char *key, char *buf,
                      size_t len)
{
    (void)st;
    snprintf(buf, len, "s3://%s/%s", bucket, key);
}

static void s3_destroy(struct store *st)
{
    struct s3_store *s = (struct s3_store *)st;
    if (!s)
        return;
    s3_http_free(s->http);
    cred_provider_free(s->creds);
    free(s->endpoint);
    free(s->scheme);
    free(s->host);
    free(s->base_path);
    free(s->region);
    free(s->ca_bundle);
    free(s);
}

static const struct store_ops s3_ops = {
    .list_page = s3_list_page,
    .list_from = s3_list_from,
    .get = s3_get,
    .put = s3_put,
    .put_if = s3_put_if,
    .get_info = s3_get_info,
    .del = s3_del,
    .check_bucket = s3_check_bucket,
    .locate = s3_locate,
    .destroy = s3_destroy,
};

/* ---- construction -------------------------------------------------------- */

const char *store_s3_endpoint_given(const char *option)
{
    const char *endpoint = option && option[0] ? option : NULL;
    if (!endpoint)
        endpoint = env_nonempty("AWS_ENDPOINT_URL_S3");
    if (!endpoint)
        endpoint = env_nonempty("AWS_ENDPOINT_URL");
    return endpoint;
}

/* Splits the endpoint URL with libcurl's URL parser. */
static int parse_endpoint(struct s3_store *s, const char *endpoint, char *err,
                          size_t errlen)
{
    CURLU *u = curl_url();
    if (!u) {
        snprintf(err, errlen, "Out of memory.");
        return -ENOMEM;
    }
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL,
         *user = NULL;
    int rc = 0;
    if (curl_url_set(u, CURLUPART_URL, endpoint, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        snprintf(err, errlen, "The S3 endpoint \"%s\" is not a valid URL.", endpoint);
        rc = -EINVAL;
        goto out;
    }
    if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
        snprintf(err, errlen, "The S3 endpoint \"%s\" must begin with http:// or https://.",
                 endpoint);
        rc = -EINVAL;
        goto out;
    }
    if (curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
        snprintf(err, errlen, "The S3 endpoint \"%s\" must not hold a user name or a query.",
                 endpoint);
        rc = -EINVAL;
        goto out;
    }
    for (char *p = scheme; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    CURLUcode pc = curl_url_get(u, CURLUPART_PORT, &port, 0);
    int https = strcmp(scheme, "https") == 0;
    int default_port = pc != CURLUE_OK ||
                       strcmp(port, https ? "443" : "80") == 0;
    if (curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK)
        path = NULL;
    s->scheme = strdup(scheme);
    s->host = default_port ? strdup(host) : str_concat(host, ":", port, "");
    if (path) {
        size_t n = strlen(path);
        while (n > 0 && path[n - 1] == '/')
            n--;
        s->base_path = strndup(path, n);
    } else {
        s->base_path = strdup("");
    }
    if (!s->scheme || !s->host || !s->base_path) {
        snprintf(err, errlen, "Out of memory.");
        rc = -ENOMEM;
        goto out;
    }
    s->is_aws = ends_with(host, ".amazonaws.com") || ends_with(host, ".amazonaws.com.cn");
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(query);
    curl_free(user);
    curl_url_cleanup(u);
    return rc;
}

int store_s3_new(const struct store_s3_options *opts, struct store **out, char *err,
                 size_t errlen)
{
    *out = NULL;
    if (!err)
        errlen = 0; /* snprintf(NULL, 0, ...) writes nothing */
    if (errlen)
        err[0] = '\0';
    struct store_s3_options o = {0};
    if (opts)
        o = *opts;
    struct s3_store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "Out of memory.");
        return -ENOMEM;
    }
    int rc = -ENOMEM;
    s->base.ops = &s3_ops;
    s->base.kind = "s3";
    s->path_style = o.path_style != 0;

    const char *profile = o.profile && o.profile[0] ? o.profile : env_nonempty("AWS_PROFILE");
    if (!profile)
        profile = "default";

    const char *region = o.region && o.region[0] ? o.region : NULL;
    if (!region)
        region = env_nonempty("AWS_REGION");
    if (!region)
        region = env_nonempty("AWS_DEFAULT_REGION");
    if (region) {
        s->region = strdup(region);
    } else {
        char *cfg = NULL;
        if (cred_config_region(profile, &cfg) < 0)
            cfg = NULL; /* unreadable: as if none were set */
        s->region = cfg && cfg[0] ? strdup(cfg) : strdup("us-east-1");
        free(cfg);
    }
    if (!s->region) {
        snprintf(err, errlen, "Out of memory.");
        goto fail;
    }
    for (const char *p = s->region; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '-') {
            snprintf(err, errlen, "The region \"%s\" is not a valid AWS region name.",
                     s->region);
            rc = -EINVAL;
            goto fail;
        }
    }

    const char *endpoint = store_s3_endpoint_given(o.endpoint);
    if (endpoint)
        s->endpoint = strdup(endpoint);
    else
        s->endpoint = str_concat("https://s3.", s->region, ".amazonaws.com", "");
    if (!s->endpoint) {
        snprintf(err, errlen, "Out of memory.");
        goto fail;
    }
    if ((rc = parse_endpoint(s, s->endpoint, err, errlen)) < 0)
        goto fail;
    rc = -ENOMEM;

    const char *bundle_from;
    if (cred_ca_bundle(profile, &s->ca_bundle, &bundle_from) < 0) {
        snprintf(err, errlen, "Out of memory.");
        goto fail;
    }
    if (s->ca_bundle) {
        /* A bundle that cannot be read would fail every request: say so once,
         * before anything is mounted. */
        FILE *f = fopen(s->ca_bundle, "re");
        if (!f) {
            rc = -errno;
            snprintf(err, errlen, "The CA bundle %s (from %s) cannot be read: %s.",
                     s->ca_bundle, bundle_from, strerror(-rc));
            goto fail;
        }
        fclose(f);
        log_debug("TLS: CA bundle %s (from %s) in place of the system's",
                  s->ca_bundle, bundle_from);
    }

    s3_xml_init(); /* before threads parse answers */
    struct s3_http_options ho = {
        .connect_timeout_ms = o.connect_timeout_ms > 0 ? o.connect_timeout_ms
                                                       : S3_DEFAULT_CONNECT_TIMEOUT_MS,
        .timeout_ms = o.timeout_ms > 0 ? o.timeout_ms : S3_DEFAULT_TIMEOUT_MS,
        .ca_file = o.ca_file,
        .ca_bundle = s->ca_bundle,
        .max_attempts = o.max_attempts > 0 ? o.max_attempts : S3_DEFAULT_MAX_ATTEMPTS,
        .max_retry_ms = o.max_retry_ms > 0 ? o.max_retry_ms : S3_DEFAULT_RETRY_TIME_MS,
    };
    /* A whole listing, all its pages: ten times the bound on one operation
     * (README, "Retries"). */
    s->base.list_bound_ms = 10 * (ho.max_retry_ms + ho.timeout_ms);
    if (s3_http_new(&ho, &s->http) < 0) {
        snprintf(err, errlen, "The HTTP client could not be set up.");
        goto fail;
    }
    struct cred_options co = {.profile = o.profile, .ca_file = o.ca_file,
                              .ca_bundle = s->ca_bundle,
                              .timeout_ms = ho.connect_timeout_ms};
    if (cred_provider_new(&co, &s->creds) < 0) {
        snprintf(err, errlen, "The AWS credential chain could not be set up.");
        goto fail;
    }
    log_debug("S3 endpoint %s, region %s, %s addressing", s->endpoint, s->region,
              s->path_style || !s->is_aws ? "path-style" : "virtual-hosted");
    *out = &s->base;
    return 0;
fail:
    s3_destroy(&s->base);
    return rc;
}
