/* Credential endpoints over HTTP (libcurl, one short-lived easy handle per
 * request): the container endpoint (ECS/EKS) and EC2 instance metadata
 * (IMDSv2), plus the JSON answer both serve (jansson).
 *
 * BOOKMARKFS_CONTAINER_HOST ("host" or "host:port") replaces 169.254.170.2
 * for AWS_CONTAINER_CREDENTIALS_RELATIVE_URI; it exists for tests, which
 * stay on loopback. */
#include "s3/cred_internal.h"
#include "s3/defaults.h"
#include "s3/http.h"
#include "s3/xml.h"
#include "util/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>

#define CRED_HTTP_MAX_BODY (1024 * 1024)
#define CONTAINER_HOST "169.254.170.2"
#define IMDS_ENDPOINT "http://169.254.169.254"
#define IMDS_ENDPOINT_V6 "http://[fd00:ec2::254]"
#define IMDS_TOKEN_TTL "21600"

void cred_global_init(void)
{
    s3_http_global_init(); /* logs a failure; the request then says it too */
    s3_xml_init();
}

/* ------------------------------------------------------------------ */
/* transport: the S3 transport's handle set-up (s3/http.h), with every
 * buffer that may hold a secret wiped                                 */

int cred_http(const struct cred_http_req *rq, struct cred_http_resp *rs,
              char *err, size_t errlen)
{
    memset(rs, 0, sizeof *rs);
    size_t n = 0;
    while (rq->headers && rq->headers[n])
        n++;
    struct curl_slist *hdrs = NULL;
    if (s3_http_header_list(rq->headers, n, &hdrs) < 0) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    CURL *h = curl_easy_init();
    if (!h) {
        s3_http_header_list_free(hdrs);
        snprintf(err, errlen, "cannot create an HTTP handle");
        return -ENOMEM;
    }
    struct s3_http_call call;
    s3_http_call_init(&call, CRED_HTTP_MAX_BODY, 1);
    struct s3_http_setup su = {
        .url = rq->url,
        .method = rq->method,
        .body = rq->body,
        .body_len = rq->body_len,
        .headers = hdrs,
        .connect_timeout_ms = rq->connect_timeout_ms,
        .timeout_ms = rq->timeout_ms,
        .ca_bundle = rq->ca_bundle,
        .ca_file = rq->ca_file, /* --ca-file adds */
    };
    int rc = s3_http_setup(h, &su, &call);
    CURLcode crc = CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075500
    if (rc == 0)
        crc = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    if (rc == 0 && crc == CURLE_OK)
        crc = curl_easy_setopt(h, CURLOPT_USERAGENT, "bookmarkfs/" BOOKMARKFS_VERSION);
    if (rc == 0 && crc == CURLE_OK && rq->no_proxy)
        crc = curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    if (rc == 0 && crc != CURLE_OK)
        rc = crc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
    if (rc < 0) {
        snprintf(err, errlen, "cannot set up the HTTP request: %s", strerror(-rc));
        rc = rc == -ENOMEM ? rc : -EIO;
        goto out;
    }
    switch (s3_http_run(h, &call, &rs->status, err, errlen)) {
    case S3_HTTP_OK:
        rs->len = call.body.len;
        rc = textbuf_take(&call.body, 0, &rs->body);
        if (rc < 0) {
            rs->len = 0;
            snprintf(err, errlen, "out of memory");
        }
        break;
    case S3_HTTP_TIMEOUT:
        rc = -ETIMEDOUT;
        break;
    case S3_HTTP_CONNECT:
    case S3_HTTP_RESOLVE:
        rc = -ECONNREFUSED;
        break;
    default:
        rc = call.oom ? -ENOMEM : -EIO;
        break;
    }
out:
    s3_http_call_free(&call);
    curl_easy_cleanup(h);
    s3_http_header_list_free(hdrs);
    return rc;
}

void cred_http_req_init(struct cred_http_req *rq, const struct cred_options *o,
                        const char *method, const char *url,
                        const char *const *headers)
{
    long t = cred_timeout_ms(o);
    *rq = (struct cred_http_req){
        .method = method,
        .url = url,
        .headers = headers,
        .connect_timeout_ms = t,
        .timeout_ms = t,
        .ca_file = o ? o->ca_file : NULL,
        .ca_bundle = o ? o->ca_bundle : NULL,
    };
}

/* An answer other than 200: note says who answered which status (what:
 * to which request), and the errno is -EACCES for 401 and 403, else -EIO.
 * Frees rs. */
static int refused(struct cred_http_resp *rs, const char *who, const char *what,
                   char *note, size_t notelen)
{
    snprintf(note, notelen, "%s answered HTTP %ld%s.", who, rs->status, what);
    int rc = rs->status == 401 || rs->status == 403 ? -EACCES : -EIO;
    cred_http_resp_free(rs);
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

void cred_wipe_json_string(json_t *v)
{
    if (json_is_string(v))
        OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
}

/* Parses the JSON document served by the container and IMDS endpoints
 * (AccessKeyId, SecretAccessKey, Token, Expiration). Returns 0, -EIO (note
 * says what is wrong, where names the endpoint) or -ENOMEM. */
static int cred_parse_json(const char *body, size_t len, const char *source,
                           const char *where, struct cred_keys *out, char *note,
                           size_t notelen)
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
    cred_wipe_json_string(sk);
    cred_wipe_json_string(tok);
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

int cred_container_get(const struct cred_options *o, struct cred_keys *out,
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
    struct cred_http_req rq;
    cred_http_req_init(&rq, o, "GET", url, headers);
    rq.connect_timeout_ms = S3_DEFAULT_CRED_CONNECT_TIMEOUT_MS;
    rq.no_proxy = rel != NULL;
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
        rc = refused(&rs, "The container credentials endpoint", "", note, notelen);
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

/* A request after the token's: "stopped answering" when it fails. */
static int imds_call(const struct cred_http_req *rq, struct cred_http_resp *rs,
                     char *note, size_t notelen)
{
    char err[CURL_ERROR_SIZE + 64];
    int rc = cred_http(rq, rs, err, sizeof err);
    if (rc < 0 && rc != -ENOMEM)
        snprintf(note, notelen, "EC2 instance metadata stopped answering: %s.", err);
    return rc;
}

/* A request to the instance metadata service: link-local, plain HTTP, so
 * no proxy and no CA bundle. */
static void imds_req(struct cred_http_req *rq, const char *method, const char *url,
                     const char *const *headers, long timeout)
{
    cred_http_req_init(rq, NULL, method, url, headers);
    rq->connect_timeout_ms = S3_DEFAULT_CRED_CONNECT_TIMEOUT_MS;
    rq->timeout_ms = timeout;
    rq->no_proxy = 1;
}

/* IMDSv2's session token, as the header that sends it, in *hdr: 0,
 * CRED_ABSENT when the service does not answer or hands out none (note
 * says so), or -ENOMEM. */
static int imds_token(const char *ep, size_t epl, long timeout, char **hdr,
                      char *note, size_t notelen)
{
    *hdr = NULL;
    char *url;
    if (asprintf(&url, "%.*s/latest/api/token", (int)epl, ep) < 0) {
        snprintf(note, notelen, "Out of memory.");
        return -ENOMEM;
    }
    const char *put_headers[] = {
        "X-aws-ec2-metadata-token-ttl-seconds: " IMDS_TOKEN_TTL, NULL};
    struct cred_http_req rq;
    imds_req(&rq, "PUT", url, put_headers, timeout);
    log_debug("asking EC2 instance metadata at %.*s for a session token",
              (int)epl, ep);
    struct cred_http_resp rs;
    char err[CURL_ERROR_SIZE + 64];
    int rc = cred_http(&rq, &rs, err, sizeof err);
    free(url);
    if (rc == -ENOMEM) {
        snprintf(note, notelen, "Out of memory.");
        return rc;
    }
    if (rc < 0) {
        snprintf(note, notelen, "no answer from %.*s: %s", (int)epl, ep, err);
        return CRED_ABSENT;
    }
    if (rs.status != 200 || rs.len == 0 || strpbrk(rs.body, "\r\n") ||
        strlen(rs.body) != rs.len) {
        snprintf(note, notelen, "%.*s answered HTTP %ld to the token request",
                 (int)epl, ep, rs.status);
        rc = CRED_ABSENT;
    } else if (asprintf(hdr, "X-aws-ec2-metadata-token: %s", rs.body) < 0) {
        *hdr = NULL;
        snprintf(note, notelen, "Out of memory.");
        rc = -ENOMEM;
    }
    cred_http_resp_free(&rs);
    return rc;
}

int cred_imds_get(const struct cred_options *o, struct cred_keys *out,
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
    long timeout = cred_timeout_ms(o);
    int rc = imds_token(ep, epl, timeout, &token_hdr, note, notelen);
    if (rc < 0)
        return rc;

    /* The role attached to the instance. */
    if (asprintf(&url, "%.*s/latest/meta-data/iam/security-credentials/",
                 (int)epl, ep) < 0) {
        url = NULL;
        goto oom;
    }
    const char *get_headers[] = {token_hdr, NULL};
    struct cred_http_req rq;
    imds_req(&rq, "GET", url, get_headers, timeout);
    rc = imds_call(&rq, &rs, note, notelen);
    if (rc == -ENOMEM)
        goto oom;
    if (rc < 0)
        goto out;
    if (rs.status == 404) {
        snprintf(note, notelen, "no IAM role is attached to this instance");
        rc = CRED_ABSENT;
        cred_http_resp_free(&rs);
        goto out;
    }
    if (rs.status != 200) {
        rc = refused(&rs, "EC2 instance metadata", " to the role request", note, notelen);
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
    rc = imds_call(&rq, &rs, note, notelen);
    if (rc == -ENOMEM)
        goto oom;
    if (rc < 0)
        goto out;
    if (rs.status != 200) {
        char what[300];
        snprintf(what, sizeof what, " for the credentials of role %s", role);
        rc = refused(&rs, "EC2 instance metadata", what, note, notelen);
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
