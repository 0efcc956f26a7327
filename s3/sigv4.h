/* AWS Signature Version 4 for S3 requests (header signing), on OpenSSL.
 * Knows nothing of HTTP transport: it turns a request description into the
 * encoded path and query to send and the headers to add. */
#ifndef BOOKMARKFS_S3_SIGV4_H
#define BOOKMARKFS_S3_SIGV4_H

#include <stddef.h>
#include <time.h>

struct sigv4_credentials {
    const char *access_key;
    const char *secret_key;
    const char *session_token; /* NULL or "" when not temporary */
};

struct sigv4_pair {
    const char *name;  /* headers: any case; query: raw (unencoded) */
    const char *value; /* raw (unencoded); "" allowed */
};

struct sigv4_request {
    const char *method;    /* "GET", "PUT", ... */
    const char *host;      /* Host header value, with :port when not default */
    const char *path;      /* raw path starting with '/', e.g. "/bkt/a b=c.json" */
    const struct sigv4_pair *query;   /* raw query parameters, any order */
    size_t nquery;
    const struct sigv4_pair *headers; /* extra headers to sign and send
                                         (content-type, content-md5, ...) */
    size_t nheaders;
    const char *payload_hash; /* lowercase hex SHA-256 of the body, or
                                 "UNSIGNED-PAYLOAD" */
    const char *region;       /* e.g. "us-east-1" */
    const char *service;      /* "s3" (NULL means "s3") */
    time_t now;               /* signing time (UTC seconds) */
};

struct sigv4_signed {
    char *encoded_path;      /* what goes on the request line, strict encoding */
    char *encoded_query;     /* "a=b&c=d" sorted and encoded, "" when none */
    char *canonical_request;
    char *string_to_sign;
    char signature[65];      /* lowercase hex */
    char amz_date[17];       /* YYYYMMDDTHHMMSSZ */
    char *authorization;     /* full Authorization header value */
    /* Every header to send, signed ones included ("name: value" lines
     * without CRLF), in canonical order: host, x-amz-content-sha256,
     * x-amz-date, x-amz-security-token (when a session token is set), and
     * the request's extra headers, then "Authorization: ...". */
    char **send_headers;
    size_t nsend_headers;
};

/* Percent-encode every byte outside A-Z a-z 0-9 - . _ ~ (uppercase hex);
 * keep_slash keeps '/' as is (for paths). 0 with *out malloc'd, or
 * -ENOMEM, or -EINVAL (s NULL and len not 0). */
int sigv4_uri_encode(const char *s, size_t len, int keep_slash, char **out);

/* Lowercase hex SHA-256 of data into out (65 bytes with NUL). 0, or -EIO
 * (OpenSSL failed; out is then all NULs). */
int sigv4_sha256_hex(const void *data, size_t len, char out[65]);

/* Signs req with creds. Returns 0, or -ENOMEM / -EINVAL. */
int sigv4_sign(const struct sigv4_request *req,
               const struct sigv4_credentials *creds, struct sigv4_signed *out);

void sigv4_signed_free(struct sigv4_signed *s);

#endif
