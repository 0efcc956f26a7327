/* Credential endpoints over HTTP (libcurl, one short-lived easy handle per
 * request): the container endpoint (ECS/EKS) and EC2 instance metadata
 * (IMDSv2), plus the JSON answer both serve (jansson).
 *
 * BOOKMARKFS_CONTAINER_HOST ("host" or "host:port") replaces 169.254.170.2
 * for AWS_CONTAINER_CREDENTIALS_RELATIVE_URI; it exists for tests, which
 * stay on loopback. */
#include "s3/tls.h"
#include "s3/cred_internal.h"
#include "util/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>
#include <libxml/parser.h>
#include <openssl/crypto.h>

#define CRED_HTTP_MAX_BODY (1024 * 1024)
#define CRED_CONNECT_TIMEOUT_MS 1000L
#define CONTAINER_HOST "169.254.170.2"
#define IMDS_ENDPOINT "http://169.254.169.254"
#define IMDS_ENDPOINT_V6 "http://[fd00:ec2::254]"
#define IMDS_TOKEN_TTL "21600"

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_OK;

static void global_init(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    xmlInitParser();
}

void cred_global_init(void)
{
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK)
        log_error("libcurl initialisation failed: %s", curl_easy_strerror(global_rc));
}

/* ------------------------------------------------------------------ */
/* transport                                                           */

struct sink {
    char *buf;
    size_t len, cap;
    int too_big;
    int oom;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct sink *s = ud;
    size_t n = size * nmemb;
    if (n > CRED_HTTP_MAX_BODY - s->len) {
        s->too_big = 1;
        return 0;
    }
    if (s->len + n + 1 > s->cap) {
        size_t ncap = s->cap ? s->cap : 1024;
        while (ncap < s->len + n + 1)
            ncap *= 2;
        char *nb = malloc(ncap);
        if (!nb) {
            s->oom = 1;
            return 0;
        }
        if (s->len)
            memcpy(nb, s->buf, s->len);
        cred_free_buf(s->buf, s->cap); /* may hold secrets: wipe, not realloc */
        s->buf = nb;
        s->cap = ncap;
    }
    memcpy(s->buf + s->len, ptr, n);
    s->len += n;
    s->buf[s->len] = '\0';
    return n;
}

static void wipe_slist(struct curl_slist *l)
{
    for (struct curl_slist *e = l; e; e = e->next)
        if (e->data)
            OPENSSL_cleanse(e->data, strlen(e->data));
    curl_slist_free_all(l);
}

#define SETOPT(h, opt, val)                                                    \
    do {                                                                       \
        if (crc == CURLE_OK)                                                   \
            crc = curl_easy_setopt((h), (opt), (val));                         \
    } while (0)

int cred_http(const struct cred_http_req *rq, struct cred_http_resp *rs,
              char *err, size_t errlen)
{
    memset(rs, 0, sizeof *rs);
    struct sink sink = {0};
    struct curl_slist *hdrs = NULL;
    char ebuf[CURL_ERROR_SIZE];
    int rc = 0;
    ebuf[0] = '\0';

    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(err, errlen, "cannot create an HTTP handle");
        return -ENOMEM;
    }
    for (const char *const *hp = rq->headers; hp && *hp; hp++) {
        struct curl_slist *n = curl_slist_append(hdrs, *hp);
        if (!n) {
            snprintf(err, errlen, "out of memory");
            rc = -ENOMEM;
            goto out;
        }
        hdrs = n;
    }
    /* No "Expect: 100-continue" round trip for our small bodies. */
    struct curl_slist *n = curl_slist_append(hdrs, "Expect:");
    if (!n) {
        snprintf(err, errlen, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    hdrs = n;

    CURLcode crc = CURLE_OK;
    SETOPT(h, CURLOPT_URL, rq->url);
    SETOPT(h, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    SETOPT(h, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    SETOPT(h, CURLOPT_FOLLOWLOCATION, 0L);
    SETOPT(h, CURLOPT_CONNECTTIMEOUT_MS, rq->connect_timeout_ms);
    SETOPT(h, CURLOPT_TIMEOUT_MS, rq->timeout_ms);
    SETOPT(h, CURLOPT_WRITEFUNCTION, on_data);
    SETOPT(h, CURLOPT_WRITEDATA, &sink);
    SETOPT(h, CURLOPT_ERRORBUFFER, ebuf);
    SETOPT(h, CURLOPT_HTTPHEADER, hdrs);
    SETOPT(h, CURLOPT_USERAGENT, "bookmarkfs/" BOOKMARKFS_VERSION);
    if (rq->no_proxy)
        SETOPT(h, CURLOPT_NOPROXY, "*");
    if (crc == CURLE_OK)
        crc = tls_setup(h, rq->ca_bundle, rq->ca_file); /* --ca-file adds */
    if (strcmp(rq->method, "GET") != 0) {
        if (strcmp(rq->method, "POST") != 0)
            SETOPT(h, CURLOPT_CUSTOMREQUEST, rq->method);
        SETOPT(h, CURLOPT_POSTFIELDSIZE, (long)rq->body_len);
        SETOPT(h, CURLOPT_POSTFIELDS, rq->body ? rq->body : "");
    }
    if (crc != CURLE_OK) {
        snprintf(err, errlen, "cannot set up the HTTP request: %s",
                 curl_easy_strerror(crc));
        rc = crc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EIO;
        goto out;
    }

    crc = curl_easy_perform(h);
    if (crc != CURLE_OK) {
        const char *why = ebuf[0] ? ebuf : curl_easy_strerror(crc);
        if (sink.too_big)
            why = "the answer is too large";
        snprintf(err, errlen, "%s", why);
        switch (crc) {
        case CURLE_OPERATION_TIMEDOUT:
            rc = -ETIMEDOUT;
            break;
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
            rc = -ECONNREFUSED;
            break;
        case CURLE_OUT_OF_MEMORY:
            rc = -ENOMEM;
            break;
        default:
            rc = sink.oom ? -ENOMEM : -EIO;
            break;
        }
        goto out;
    }
    if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &rs->status) != CURLE_OK)
        rs->status = 0;
    if (!sink.buf) {
        sink.buf = calloc(1, 1);
        sink.cap = 1;
        if (!sink.buf) {
            snprintf(err, errlen, "out of memory");
            rc = -ENOMEM;
            goto out;
        }
    }
    rs->body = sink.buf;
    rs->len = sink.len;
    sink.buf = NULL;
out:
    cred_free_buf(sink.buf, sink.cap);
    curl_easy_cleanup(h);
    wipe_slist(hdrs);
    return rc;
}

void cred_http_resp_free(struct cred_http_resp *rs)
{
    if (!rs)
        return;
    cred_free_buf(rs->body, rs->len);
    rs->body = NULL;
    rs->len = 0;
}

/* ------------------------------------------------------------------ */
/* the JSON answer                                                     */

static void wipe_json_string(json_t *v)
{
    if (json_is_string(v))
        OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
}

int cred_parse_json(const char *body, size_t len, const char *source,
                    const char *where, struct aws_credentials *out,
                    char *note, size_t notelen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(body, len, 0, &jerr);
    if (!doc || !json_is_object(doc)) {
        /* jerr.text may quote the document: not logged. */
        snprintf(note, notelen, "The answer of %s is not a JSON object.", where);
        json_decref(doc);
        return -EIO;
    }
    int rc = 0;
    json_t *ak = json_object_get(doc, "AccessKeyId");
    json_t *sk = json_object_get(doc, "SecretAccessKey");
    json_t *tok = json_object_get(doc, "Token");
    json_t *exp = json_object_get(doc, "Expiration");
    json_t *code = json_object_get(doc, "Code");
    if (json_is_string(code) && strcmp(json_string_value(code), "Success") != 0) {
        json_t *m = json_object_get(doc, "Message");
        snprintf(note, notelen, "%s answered %s%s%.200s.", where,
                 json_string_value(code), json_is_string(m) ? ": " : "",
                 json_is_string(m) ? json_string_value(m) : "");
        rc = -EIO;
        goto out;
    }
    if (!json_is_string(ak) || !json_is_string(sk) || !*json_string_value(ak) ||
        !*json_string_value(sk)) {
        snprintf(note, notelen,
                 "The answer of %s lacks AccessKeyId or SecretAccessKey.", where);
        rc = -EIO;
        goto out;
    }
    if (tok && !json_is_string(tok) && !json_is_null(tok)) {
        snprintf(note, notelen, "The answer of %s has a Token that is not a string.",
                 where);
        rc = -EIO;
        goto out;
    }
    int64_t expiration = 0;
    if (exp && !json_is_null(exp) &&
        (!json_is_string(exp) ||
         cred_parse_expiration(json_string_value(exp), &expiration) < 0)) {
        snprintf(note, notelen, "The answer of %s has an unreadable Expiration.",
                 where);
        rc = -EIO;
        goto out;
    }
    rc = cred_fill(out, source, json_string_value(ak), json_string_value(sk),
                   json_is_string(tok) ? json_string_value(tok) : NULL, expiration);
    if (rc < 0)
        snprintf(note, notelen, "Out of memory.");
out:
    wipe_json_string(sk);
    wipe_json_string(tok);
    json_decref(doc);
    return rc;
}

/* ------------------------------------------------------------------ */
/* container credentials                                               */

/* An http:// full URI may only point at the container agent's addresses or
 * at loopback, as in the AWS SDKs. */
static int allowed_plain_host(const char *host)
{
    if (strcasecmp(host, "localhost") == 0)
        return 1;
    char h[64];
    size_t hl = strlen(host);
    if (hl >= sizeof h)
        return 0;
    memcpy(h, host, hl + 1);
    if (h[0] == '[' && hl > 2 && h[hl - 1] == ']') {
        memmove(h, h + 1, hl - 2);
        h[hl - 2] = '\0';
    }
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, h, &a4) == 1) {
        uint32_t a = ntohl(a4.s_addr);
        return (a >> 24) == 127 || a == 0xA9FEAA02u /* 169.254.170.2 */ ||
               a == 0xA9FEAA17u /* 169.254.170.23 */;
    }
    if (inet_pton(AF_INET6, h, &a6) == 1) {
        static const unsigned char eks[16] = {0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0,
                                              0, 0, 0, 0, 0, 0, 0, 0x23};
        return IN6_IS_ADDR_LOOPBACK(&a6) || memcmp(&a6, eks, 16) == 0;
    }
    return 0;
}

static int check_full_uri(const char *uri, char *note, size_t notelen)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int rc = 0;
    if (!u) {
        snprintf(note, notelen, "Out of memory.");
        return -ENOMEM;
    }
    if (curl_url_set(u, CURLUPART_URL, uri, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        snprintf(note, notelen,
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI is not a valid URL.");
        rc = -EINVAL;
    } else if (strcasecmp(scheme, "https") != 0 &&
               (strcasecmp(scheme, "http") != 0 || !allowed_plain_host(host))) {
        snprintf(note, notelen,
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI must use https, or http to "
                 "a loopback address or the container agent (host %s).", host);
        rc = -EACCES;
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

/* The authorization token: the token file (re-read every time, it rotates)
 * wins over the variable. *hdr receives "Authorization: TOKEN" or NULL. */
static int container_auth_header(char **hdr, char *note, size_t notelen)
{
    *hdr = NULL;
    const char *file = env_nonempty("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    const char *val = env_nonempty("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    char *data = NULL;
    size_t len = 0;
    if (file) {
        struct stat st;
        int rc = cred_read_file(file, 16384, &data, &len, &st);
        if (rc < 0) {
            snprintf(note, notelen,
                     "Cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE %s: %s.",
                     file, strerror(-rc));
            return rc == -ENOMEM ? rc : -EACCES;
        }
        while (len && (data[len - 1] == '\n' || data[len - 1] == '\r'))
            data[--len] = '\0';
        val = data;
    }
    if (!val) {
        cred_free_buf(data, len + 1);
        return 0;
    }
    size_t vl = strlen(val);
    if (vl == 0 || strpbrk(val, "\r\n") || vl != (file ? len : vl)) {
        snprintf(note, notelen, "The container authorization token %s is empty "
                 "or holds line breaks or NUL bytes.",
                 file ? "file" : "variable");
        cred_free_buf(data, len + 1);
        return -EACCES;
    }
    static const char prefix[] = "Authorization: ";
    char *h = malloc(sizeof prefix + vl);
    if (!h) {
        cred_free_buf(data, len + 1);
        snprintf(note, notelen, "Out of memory.");
        return -ENOMEM;
    }
    memcpy(h, prefix, sizeof prefix - 1);
    memcpy(h + sizeof prefix - 1, val, vl + 1);
    cred_free_buf(data, len + 1);
    *hdr = h;
    return 0;
}

int cred_container_get(const struct cred_options *o, struct aws_credentials *out,
                       char *note, size_t notelen)
{
    const char *rel = env_nonempty("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = env_nonempty("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    if (!rel && !full) {
        snprintf(note, notelen,
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and _FULL_URI are not set");
        return CRED_ABSENT;
    }
    char *url = NULL;
    int rc;
    if (rel) {
        const char *host = env_nonempty("BOOKMARKFS_CONTAINER_HOST");
        if (!host)
            host = CONTAINER_HOST;
        if (asprintf(&url, "http://%s%s%s", host, rel[0] == '/' ? "" : "/", rel) < 0) {
            snprintf(note, notelen, "Out of memory.");
            return -ENOMEM;
        }
    } else {
        rc = check_full_uri(full, note, notelen);
        if (rc < 0)
            return rc;
        if (!(url = strdup(full))) {
            snprintf(note, notelen, "Out of memory.");
            return -ENOMEM;
        }
    }
    char *auth = NULL;
    rc = container_auth_header(&auth, note, notelen);
    if (rc < 0) {
        free(url);
        return rc;
    }
    const char *headers[] = {"Accept: application/json", auth, NULL};
    struct cred_http_req rq = {
        .method = "GET",
        .url = url,
        .headers = headers,
        .connect_timeout_ms = CRED_CONNECT_TIMEOUT_MS,
        .timeout_ms = cred_timeout_ms(o),
        .ca_file = o ? o->ca_file : NULL,
        .ca_bundle = o ? o->ca_bundle : NULL,
        .no_proxy = rel != NULL,
    };
    struct cred_http_resp rs;
    char err[CURL_ERROR_SIZE + 64];
    log_debug("fetching container credentials from %s", rel ? rel : "AWS_CONTAINER_CREDENTIALS_FULL_URI");
    rc = cred_http(&rq, &rs, err, sizeof err);
    cred_free_secret(auth);
    if (rc < 0) {
        snprintf(note, notelen, "The container credentials endpoint did not "
                 "answer: %s.", err);
        if (rc == -ECONNREFUSED)
            rc = -EIO;
        goto out;
    }
    if (rs.status != 200) {
        snprintf(note, notelen, "The container credentials endpoint answered "
                 "HTTP %ld.", rs.status);
        rc = rs.status == 401 || rs.status == 403 ? -EACCES : -EIO;
        cred_http_resp_free(&rs);
        goto out;
    }
    rc = cred_parse_json(rs.body, rs.len, "container",
                         "the container credentials endpoint", out, note, notelen);
    cred_http_resp_free(&rs);
out:
    free(url);
    return rc;
}

/* ------------------------------------------------------------------ */
/* EC2 instance metadata (IMDSv2)                                      */

static int env_true(const char *name)
{
    const char *v = env_nonempty(name);
    return v && strcasecmp(v, "true") == 0;
}

int cred_imds_get(const struct cred_options *o, struct aws_credentials *out,
                  char *note, size_t notelen)
{
    if (env_true("AWS_EC2_METADATA_DISABLED")) {
        snprintf(note, notelen, "AWS_EC2_METADATA_DISABLED is true");
        return CRED_ABSENT;
    }
    const char *ep = env_nonempty("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    if (!ep) {
        const char *mode = env_nonempty("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
        ep = mode && strcasecmp(mode, "IPv6") == 0 ? IMDS_ENDPOINT_V6 : IMDS_ENDPOINT;
    }
    size_t epl = strlen(ep);
    while (epl && ep[epl - 1] == '/')
        epl--;

    char *url = NULL, *token_hdr = NULL, *role = NULL;
    struct cred_http_resp rs = {0};
    char err[CURL_ERROR_SIZE + 64];
    long timeout = cred_timeout_ms(o);
    int rc;

    if (asprintf(&url, "%.*s/latest/api/token", (int)epl, ep) < 0) {
        url = NULL;
        goto oom;
    }
    const char *put_headers[] = {
        "X-aws-ec2-metadata-token-ttl-seconds: " IMDS_TOKEN_TTL, NULL};
    struct cred_http_req rq = {
        .method = "PUT",
        .url = url,
        .headers = put_headers,
        .connect_timeout_ms = CRED_CONNECT_TIMEOUT_MS,
        .timeout_ms = timeout,
        .no_proxy = 1,
    };
    log_debug("asking EC2 instance metadata at %.*s for a session token",
              (int)epl, ep);
    rc = cred_http(&rq, &rs, err, sizeof err);
    if (rc == -ENOMEM)
        goto oom;
    if (rc < 0) {
        snprintf(note, notelen, "no answer from %.*s: %s", (int)epl, ep, err);
        rc = CRED_ABSENT;
        goto out;
    }
    if (rs.status != 200 || rs.len == 0 || strpbrk(rs.body, "\r\n") ||
        strlen(rs.body) != rs.len) {
        snprintf(note, notelen, "%.*s answered HTTP %ld to the token request",
                 (int)epl, ep, rs.status);
        cred_http_resp_free(&rs);
        rc = CRED_ABSENT;
        goto out;
    }
    if (asprintf(&token_hdr, "X-aws-ec2-metadata-token: %s", rs.body) < 0) {
        token_hdr = NULL;
        goto oom;
    }
    cred_http_resp_free(&rs);

    /* The role attached to the instance. */
    free(url);
    if (asprintf(&url, "%.*s/latest/meta-data/iam/security-credentials/",
                 (int)epl, ep) < 0) {
        url = NULL;
        goto oom;
    }
    const char *get_headers[] = {token_hdr, NULL};
    rq.method = "GET";
    rq.url = url;
    rq.headers = get_headers;
    rc = cred_http(&rq, &rs, err, sizeof err);
    if (rc == -ENOMEM)
        goto oom;
    if (rc < 0) {
        snprintf(note, notelen, "EC2 instance metadata stopped answering: %s.", err);
        goto out;
    }
    if (rs.status == 404) {
        snprintf(note, notelen, "no IAM role is attached to this instance");
        rc = CRED_ABSENT;
        cred_http_resp_free(&rs);
        goto out;
    }
    if (rs.status != 200) {
        snprintf(note, notelen, "EC2 instance metadata answered HTTP %ld to the "
                 "role request.", rs.status);
        rc = rs.status == 401 || rs.status == 403 ? -EACCES : -EIO;
        cred_http_resp_free(&rs);
        goto out;
    }
    size_t rl = strcspn(rs.body, "\r\n");
    while (rl && (rs.body[rl - 1] == ' ' || rs.body[rl - 1] == '\t'))
        rl--;
    if (rl == 0) {
        snprintf(note, notelen, "no IAM role is attached to this instance");
        rc = CRED_ABSENT;
        cred_http_resp_free(&rs);
        goto out;
    }
    role = curl_easy_escape(NULL, rs.body, (int)rl);
    cred_http_resp_free(&rs);
    if (!role)
        goto oom;

    free(url);
    if (asprintf(&url, "%.*s/latest/meta-data/iam/security-credentials/%s",
                 (int)epl, ep, role) < 0) {
        url = NULL;
        goto oom;
    }
    rq.url = url;
    log_debug("fetching the credentials of instance role %s", role);
    rc = cred_http(&rq, &rs, err, sizeof err);
    if (rc == -ENOMEM)
        goto oom;
    if (rc < 0) {
        snprintf(note, notelen, "EC2 instance metadata stopped answering: %s.", err);
        goto out;
    }
    if (rs.status != 200) {
        snprintf(note, notelen, "EC2 instance metadata answered HTTP %ld for the "
                 "credentials of role %s.", rs.status, role);
        rc = rs.status == 401 || rs.status == 403 ? -EACCES : -EIO;
        cred_http_resp_free(&rs);
        goto out;
    }
    rc = cred_parse_json(rs.body, rs.len, "imds", "EC2 instance metadata", out,
                         note, notelen);
    cred_http_resp_free(&rs);
    goto out;
oom:
    snprintf(note, notelen, "Out of memory.");
    rc = -ENOMEM;
out:
    cred_http_resp_free(&rs);
    free(url);
    cred_free_secret(token_hdr);
    curl_free(role);
    return rc;
}
