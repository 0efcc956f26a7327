/* AWS Signature Version 4 (header signing) for S3, on OpenSSL 3.
 *
 * S3 differs from the other services in two ways that matter here: the
 * canonical URI is the path encoded exactly once, never normalized (no
 * removal of "." or ".." segments, no merging of "//"), and the payload hash
 * is sent in x-amz-content-sha256 and signed. */
#include "s3/sigv4.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "util/hex.h"
#include "util/textbuf.h"

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SHA256_LEN 32

/* ---- growing string: a textbuf that remembers its first failure ------ */

struct sb {
    struct textbuf t;
    int rc; /* 0, or the first error: later additions are dropped */
};

static void sb_init(struct sb *b)
{
    textbuf_init(&b->t);
    b->rc = 0;
}

static void sb_reserve(struct sb *b, size_t extra)
{
    if (!b->rc)
        b->rc = textbuf_reserve(&b->t, extra);
}

static void sb_addn(struct sb *b, const char *s, size_t n)
{
    if (!b->rc)
        b->rc = textbuf_put(s, n, &b->t);
}

static void sb_adds(struct sb *b, const char *s)
{
    sb_addn(b, s, strlen(s));
}

/* Appends each string up to the NULL that ends the list. */
static void sb_addv(struct sb *b, ...)
{
    va_list ap;
    va_start(ap, b);
    for (const char *s; (s = va_arg(ap, const char *)) != NULL;)
        sb_adds(b, s);
    va_end(ap);
}

static void sb_addc(struct sb *b, char c)
{
    sb_addn(b, &c, 1);
}

/* Hands the string over in *out ("" when empty) and leaves b empty and
 * usable. 0, or -ENOMEM when an addition or the hand-over failed (*out
 * NULL). */
static int sb_take(struct sb *b, char **out)
{
    int rc = b->rc;
    *out = NULL;
    if (rc)
        textbuf_free(&b->t);
    else
        rc = textbuf_take(&b->t, 0, out);
    b->rc = 0;
    return rc;
}

static void sb_discard(struct sb *b)
{
    textbuf_free(&b->t);
    b->rc = 0;
}

/* ---- encoding ----------------------------------------------------------- */

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
           c == '~';
}

static void sb_add_encoded(struct sb *b, const char *s, size_t len,
                           int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c) || (keep_slash && c == '/')) {
            sb_addc(b, (char)c);
        } else {
            char e[3] = { '%', hex[c >> 4], hex[c & 0x0f] };
            sb_addn(b, e, sizeof e);
        }
    }
}

int sigv4_uri_encode(const char *s, size_t len, int keep_slash, char **out)
{
    *out = NULL;
    if (!s && len)
        return -EINVAL;
    struct sb b;
    sb_init(&b);
    sb_reserve(&b, len); /* common case: little to encode */
    sb_add_encoded(&b, s ? s : "", len, keep_slash);
    return sb_take(&b, out);
}

/* ---- hashing ------------------------------------------------------------ */

static int sha256(const void *data, size_t len, unsigned char md[SHA256_LEN])
{
    unsigned int mdlen = 0;
    if (!EVP_Digest(data ? data : "", data ? len : 0, md, &mdlen,
                    EVP_sha256(), NULL) || mdlen != SHA256_LEN)
        return -EIO;
    return 0;
}

int sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[SHA256_LEN];
    int rc = sha256(data, len, md);
    if (rc < 0) {
        memset(out, 0, 65);
        return rc;
    }
    hex_encode(md, sizeof md, out);
    return 0;
}

static int hmac_sha256(EVP_MAC *mac, const void *key, size_t keylen,
                       const void *data, size_t len,
                       unsigned char out[SHA256_LEN])
{
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    if (!ctx)
        return -ENOMEM;
    size_t outlen = 0;
    int ok = EVP_MAC_init(ctx, key, keylen, params) &&
             EVP_MAC_update(ctx, data, len) &&
             EVP_MAC_final(ctx, out, &outlen, SHA256_LEN) &&
             outlen == SHA256_LEN;
    EVP_MAC_CTX_free(ctx);
    return ok ? 0 : -EIO;
}

/* signature = hex(HMAC(kSigning, sts)), with
 * kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
 *                 "aws4_request"). */
static int compute_signature(const char *secret, const char *date8,
                             const char *region, const char *service,
                             const char *sts, char out[65])
{
    size_t slen = strlen(secret);
    if (slen > SIZE_MAX - 5)
        return -EINVAL;
    unsigned char *ksecret = malloc(slen + 4);
    if (!ksecret)
        return -ENOMEM;
    memcpy(ksecret, "AWS4", 4);
    memcpy(ksecret + 4, secret, slen);

    int rc = -ENOMEM;
    unsigned char k1[SHA256_LEN], k2[SHA256_LEN], sig[SHA256_LEN];
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (mac &&
        hmac_sha256(mac, ksecret, slen + 4, date8, strlen(date8), k1) == 0 &&
        hmac_sha256(mac, k1, sizeof k1, region, strlen(region), k2) == 0 &&
        hmac_sha256(mac, k2, sizeof k2, service, strlen(service), k1) == 0 &&
        hmac_sha256(mac, k1, sizeof k1, "aws4_request", 12, k2) == 0 &&
        hmac_sha256(mac, k2, sizeof k2, sts, strlen(sts), sig) == 0) {
        hex_encode(sig, sizeof sig, out);
        rc = 0;
    }
    EVP_MAC_free(mac);
    OPENSSL_cleanse(ksecret, slen + 4);
    OPENSSL_cleanse(k1, sizeof k1);
    OPENSSL_cleanse(k2, sizeof k2);
    free(ksecret);
    return rc;
}

/* ---- validation --------------------------------------------------------- */

/* RFC 9110 token characters (header names). */
static int is_tchar(unsigned char c)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
        (c >= '0' && c <= '9'))
        return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A header value: no control characters except horizontal tab (no CR/LF
 * injection). */
static int is_field_char(unsigned char c)
{
    return !((c < 0x20 && c != '\t') || c == 0x7f);
}

/* Printable ASCII without spaces, and without the characters that separate
 * fields of the credential scope or Authorization header. */
static int is_scope_char(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '/' && c != ',' && c != ';' && c != '=';
}

/* Printable, no spaces: method, host, payload hash. */
static int is_word_char(unsigned char c)
{
    return c > 0x20 && c != 0x7f;
}

/* s is not NULL, not empty unless may_be_empty, and every byte of it is
 * one that ok() takes. */
static int valid_text(const char *s, int may_be_empty, int (*ok)(unsigned char))
{
    if (!s || (!may_be_empty && !*s))
        return 0;
    for (; *s; s++)
        if (!ok((unsigned char)*s))
            return 0;
    return 1;
}

static int valid_token(const char *s) { return valid_text(s, 0, is_tchar); }
static int valid_field_value(const char *s) { return valid_text(s, 1, is_field_char); }
static int valid_scope_part(const char *s) { return valid_text(s, 0, is_scope_char); }
static int valid_word(const char *s) { return valid_text(s, 0, is_word_char); }

/* ---- canonical parts ---------------------------------------------------- */

/* A header (name lowercase; value trimmed, inner runs of blanks collapsed
 * to one space) or a query parameter (name and value encoded). */
struct pair {
    char *name;
    char *value;
};

static char *lowercase_dup(const char *s)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        d[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
    }
    d[n] = '\0';
    return d;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

static char *trimall_dup(const char *s)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    size_t o = 0;
    int pending_space = 0;
    for (size_t i = 0; i < n; i++) {
        if (is_blank(s[i])) {
            pending_space = o > 0;
            continue;
        }
        if (pending_space)
            d[o++] = ' ';
        pending_space = 0;
        d[o++] = s[i];
    }
    d[o] = '\0';
    return d;
}

static int hdr_cmp(const void *a, const void *b)
{
    return strcmp(((const struct pair *)a)->name, ((const struct pair *)b)->name);
}


static int qpair_cmp(const void *a, const void *b)
{
    const struct pair *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->value, y->value);
}

static int is_reserved_header(const char *lname)
{
    static const char *const reserved[] = {
        "host", "x-amz-content-sha256", "x-amz-date", "x-amz-security-token",
        "authorization",
    };
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcmp(lname, reserved[i]) == 0)
            return 1;
    return 0;
}

static void free_pairs(struct pair *h, size_t n)
{
    if (!h)
        return;
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
}

static int add_hdr(struct pair *h, size_t *n, const char *name,
                   const char *value)
{
    h[*n].name = lowercase_dup(name);
    h[*n].value = trimall_dup(value);
    if (!h[*n].name || !h[*n].value) {
        free(h[*n].name);
        free(h[*n].value);
        h[*n].name = h[*n].value = NULL;
        return -ENOMEM;
    }
    (*n)++;
    return 0;
}

static int validate(const struct sigv4_request *req,
                    const struct sigv4_credentials *creds)
{
    if (!req || !creds)
        return -EINVAL;
    if (!valid_word(req->method) || !valid_word(req->host) ||
        !valid_word(req->payload_hash))
        return -EINVAL;
    if (!req->path || req->path[0] != '/')
        return -EINVAL;
    if (!valid_scope_part(req->region) ||
        (req->service && !valid_scope_part(req->service)))
        return -EINVAL;
    if (!valid_scope_part(creds->access_key) || !creds->secret_key)
        return -EINVAL;
    if (creds->session_token && !valid_field_value(creds->session_token))
        return -EINVAL;
    if (req->nquery && !req->query)
        return -EINVAL;
    for (size_t i = 0; i < req->nquery; i++)
        if (!req->query[i].name || !req->query[i].name[0] ||
            !req->query[i].value)
            return -EINVAL;
    if (req->nheaders && !req->headers)
        return -EINVAL;
    for (size_t i = 0; i < req->nheaders; i++)
        if (!valid_token(req->headers[i].name) ||
            !valid_field_value(req->headers[i].value))
            return -EINVAL;
    return 0;
}

static int format_amz_date(time_t now, char out[17])
{
    struct tm tm;
    if (now < 0 || !gmtime_r(&now, &tm) || tm.tm_year + 1900 > 9999)
        return -EINVAL;
    if (strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm) != 16)
        return -EINVAL;
    return 0;
}

static int build_query(const struct sigv4_request *req, char **out)
{
    *out = NULL;
    struct pair *q = NULL;
    if (req->nquery) {
        if (req->nquery > SIZE_MAX / sizeof *q)
            return -ENOMEM;
        q = calloc(req->nquery, sizeof *q);
        if (!q)
            return -ENOMEM;
    }
    for (size_t i = 0; i < req->nquery; i++) {
        const struct sigv4_pair *p = &req->query[i];
        if (sigv4_uri_encode(p->name, strlen(p->name), 0, &q[i].name) < 0 ||
            sigv4_uri_encode(p->value, strlen(p->value), 0, &q[i].value) < 0) {
            free_pairs(q, req->nquery);
            return -ENOMEM;
        }
    }
    if (req->nquery > 1)
        qsort(q, req->nquery, sizeof *q, qpair_cmp);
    struct sb b;
    sb_init(&b);
    for (size_t i = 0; i < req->nquery; i++) {
        if (i)
            sb_addc(&b, '&');
        sb_adds(&b, q[i].name);
        sb_addc(&b, '=');
        sb_adds(&b, q[i].value);
    }
    free_pairs(q, req->nquery);
    return sb_take(&b, out);
}

/* The signed headers, sorted by lowercase name. */
static int build_headers(const struct sigv4_request *req,
                         const struct sigv4_credentials *creds,
                         const char *amz_date, struct pair **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    int token = creds->session_token && creds->session_token[0];
    if (req->nheaders > SIZE_MAX / sizeof(struct pair) - 4)
        return -ENOMEM;
    size_t cap = req->nheaders + 4;
    struct pair *h = calloc(cap, sizeof *h);
    if (!h)
        return -ENOMEM;
    size_t n = 0;
    int rc = add_hdr(h, &n, "host", req->host);
    if (!rc)
        rc = add_hdr(h, &n, "x-amz-content-sha256", req->payload_hash);
    if (!rc)
        rc = add_hdr(h, &n, "x-amz-date", amz_date);
    if (!rc && token)
        rc = add_hdr(h, &n, "x-amz-security-token", creds->session_token);
    for (size_t i = 0; !rc && i < req->nheaders; i++) {
        rc = add_hdr(h, &n, req->headers[i].name, req->headers[i].value);
        if (!rc && is_reserved_header(h[n - 1].name))
            rc = -EINVAL; /* the signer owns these */
    }
    if (!rc) {
        qsort(h, n, sizeof *h, hdr_cmp);
        for (size_t i = 1; i < n; i++)
            if (strcmp(h[i - 1].name, h[i].name) == 0)
                rc = -EINVAL; /* the same header twice */
    }
    if (rc) {
        free_pairs(h, n);
        return rc;
    }
    *out = h;
    *nout = n;
    return 0;
}

/* ---- signing ------------------------------------------------------------ */

int sigv4_sign(const struct sigv4_request *req,
               const struct sigv4_credentials *creds, struct sigv4_signed *out)
{
    if (!out)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    int rc = validate(req, creds);
    if (rc)
        return rc;
    const char *service = req->service ? req->service : "s3";

    rc = format_amz_date(req->now, out->amz_date);
    if (rc)
        return rc;
    char date8[9];
    memcpy(date8, out->amz_date, 8);
    date8[8] = '\0';

    struct pair *h = NULL;
    size_t nh = 0;
    struct sb b;
    sb_init(&b);
    char *signed_headers = NULL;
    char cr_hash[65];

    rc = sigv4_uri_encode(req->path, strlen(req->path), 1, &out->encoded_path);
    if (rc < 0)
        goto fail;
    rc = build_query(req, &out->encoded_query);
    if (rc)
        goto fail;
    rc = build_headers(req, creds, out->amz_date, &h, &nh);
    if (rc)
        goto fail;

    /* SignedHeaders */
    for (size_t i = 0; i < nh; i++) {
        if (i)
            sb_addc(&b, ';');
        sb_adds(&b, h[i].name);
    }
    rc = sb_take(&b, &signed_headers);
    if (rc < 0)
        goto fail;

    /* CanonicalRequest */
    sb_addv(&b, req->method, "\n", out->encoded_path, "\n", out->encoded_query, "\n",
            (const char *)NULL);
    for (size_t i = 0; i < nh; i++)
        sb_addv(&b, h[i].name, ":", h[i].value, "\n", (const char *)NULL);
    sb_addv(&b, "\n", signed_headers, "\n", req->payload_hash, (const char *)NULL);
    rc = sb_take(&b, &out->canonical_request);
    if (rc < 0)
        goto fail;

    /* StringToSign */
    rc = sigv4_sha256_hex(out->canonical_request, strlen(out->canonical_request),
                          cr_hash);
    if (rc < 0)
        goto fail;
    sb_addv(&b, SIGV4_ALGORITHM "\n", out->amz_date, "\n", date8, "/", req->region, "/",
            service, "/aws4_request\n", cr_hash, (const char *)NULL);
    rc = sb_take(&b, &out->string_to_sign);
    if (rc < 0)
        goto fail;

    rc = compute_signature(creds->secret_key, date8, req->region, service,
                           out->string_to_sign, out->signature);
    if (rc)
        goto fail;

    /* Authorization */
    sb_addv(&b, SIGV4_ALGORITHM " Credential=", creds->access_key, "/", date8, "/",
            req->region, "/", service, "/aws4_request,SignedHeaders=", signed_headers,
            ",Signature=", out->signature, (const char *)NULL);
    rc = sb_take(&b, &out->authorization);
    if (rc < 0)
        goto fail;

    /* Headers to send: the signed ones in canonical order, then
     * Authorization. */
    out->send_headers = calloc(nh + 1, sizeof *out->send_headers);
    if (!out->send_headers) {
        rc = -ENOMEM;
        goto fail;
    }
    for (size_t i = 0; i < nh; i++) {
        sb_addv(&b, h[i].name, ": ", h[i].value, (const char *)NULL);
        rc = sb_take(&b, &out->send_headers[i]);
        if (rc < 0)
            goto fail;
        out->nsend_headers = i + 1;
    }
    sb_addv(&b, "Authorization: ", out->authorization, (const char *)NULL);
    rc = sb_take(&b, &out->send_headers[nh]);
    if (rc < 0)
        goto fail;
    out->nsend_headers = nh + 1;

    free(signed_headers);
    free_pairs(h, nh);
    return 0;

fail:
    free(signed_headers);
    sb_discard(&b);
    free_pairs(h, nh);
    sigv4_signed_free(out);
    return rc;
}

void sigv4_signed_free(struct sigv4_signed *s)
{
    if (!s)
        return;
    free(s->encoded_path);
    free(s->encoded_query);
    free(s->canonical_request);
    free(s->string_to_sign);
    free(s->authorization);
    if (s->send_headers) {
        for (size_t i = 0; i < s->nsend_headers; i++)
            free(s->send_headers[i]);
        free(s->send_headers);
    }
    OPENSSL_cleanse(s->signature, sizeof s->signature);
    memset(s, 0, sizeof *s);
}
