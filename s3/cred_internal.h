/* Internals of the credential chain (s3/cred.c and s3/cred_*.c, which
 * share the cred_ prefix). Not for use outside s3/cred*.c.
 *
 * Every provider returns 0 with *out filled, CRED_ABSENT (a negative errno
 * no source fails with) when its source is not configured or holds nothing
 * (note: a short phrase saying why, for the "nothing found" message), or
 * another negative errno when the source is configured but failed (note:
 * one plain sentence, the error message). Notes and log lines never
 * contain a secret. */
#ifndef BOOKMARKFS_S3_CRED_INTERNAL_H
#define BOOKMARKFS_S3_CRED_INTERNAL_H

#include "s3/cred.h"
#include "util/env.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include <jansson.h>

#define CRED_ABSENT (-ENODATA)

/* ---- providers ---- */
int cred_env_get(struct cred_keys *out, char *note, size_t notelen);
/* profile: the resolved profile name; named: 1 when the user named it (option
 * or AWS_PROFILE), so a profile found in neither file is an error. Resolves
 * static keys, role_arn (AssumeRole with source_profile or
 * credential_source; AssumeRoleWithWebIdentity with web_identity_token_file)
 * and credential_process. */
int cred_files_get(const struct cred_options *o, const char *profile, int named,
                   struct cred_keys *out, char *note, size_t notelen);
int cred_container_get(const struct cred_options *o, struct cred_keys *out,
                       char *note, size_t notelen);
int cred_web_identity_get(const struct cred_options *o, const char *profile,
                          struct cred_keys *out, char *note, size_t notelen);
int cred_imds_get(const struct cred_options *o, struct cred_keys *out,
                  char *note, size_t notelen);

/* STS AssumeRole, signed (SigV4) with src. */
struct cred_assume_role {
    const char *role_arn;
    const char *external_id;   /* or NULL */
    const char *session_name;  /* or NULL: bookmarkfs-<time> */
    long duration_s;           /* 0: STS's default (one hour) */
    const char *profile;       /* for the STS region */
};
int cred_sts_assume_role(const struct cred_options *o,
                         const struct cred_keys *src,
                         const struct cred_assume_role *ar,
                         struct cred_keys *out, char *note, size_t notelen);
/* STS AssumeRoleWithWebIdentity with the token in token_file (re-read every
 * time). session_name may be NULL. */
int cred_sts_web_identity(const struct cred_options *o, const char *token_file,
                          const char *role_arn, const char *session_name,
                          const char *profile, struct cred_keys *out,
                          char *note, size_t notelen);
/* credential_process: runs command with /bin/sh -c and reads the JSON it
 * prints (Version 1). */
int cred_process_get(const struct cred_options *o, const char *command,
                     const char *profile, struct cred_keys *out,
                     char *note, size_t notelen);

/* ---- helpers (cred.c) ---- */
/* Two variables that go together (a key and its secret, a token file and
 * its role): 0 with both set, CRED_ABSENT with neither (note says so), or
 * -EACCES with one (note names the missing one). */
int cred_env_pair(const char *first, const char *second, const char **v1,
                  const char **v2, char *note, size_t notelen);
/* Fills out (source and copies of the strings; tok may be NULL or "").
 * Returns 0 or -ENOMEM (out left cleared). */
int cred_fill(struct cred_keys *out, const char *source, const char *ak,
              const char *sk, const char *tok, int64_t expiration);
/* Wipes and frees a string that may hold a secret (NULL is fine). */
void cred_free_secret(char *s);
/* Wipes and frees a buffer of known length (NULL is fine). */
void cred_free_buf(void *p, size_t len);
/* An Expiration (util/iso8601.h says which times are read) to whole
 * seconds since 1970, which must be after 1970. Returns 0 or -EINVAL. */
int cred_parse_expiration(const char *s, int64_t *out);
/* Reads a whole (regular) file of at most max bytes into a NUL-terminated
 * malloc'd buffer; st receives its stat. Returns 0 or a negative errno
 * (-EFBIG when larger than max). Free with cred_free_buf(buf, len + 1). */
int cred_read_file(const char *path, size_t max, char **buf, size_t *len,
                   struct stat *st);
/* "~/..." expanded with the home directory into *out (malloc'd). 0, or
 * -ENOENT (no home directory) or -ENOMEM. */
int cred_expand_home(const char *path, char **out);

/* ---- HTTP (cred_http.c) ---- */
struct cred_http_req {
    const char *method;           /* "GET", "PUT", "POST" */
    const char *url;
    const char *const *headers;   /* "Name: value", NULL-terminated, or NULL */
    const char *body;             /* POST/PUT body or NULL */
    size_t body_len;
    long connect_timeout_ms;
    long timeout_ms;
    const char *ca_file;          /* NULL: no extra certificates */
    const char *ca_bundle;        /* NULL: system bundle */
    int no_proxy;                 /* 1: never through a proxy (link-local) */
};

struct cred_http_resp {
    long status;
    char *body;  /* NUL-terminated; may hold secrets: free with _resp_free */
    size_t len;
};

/* Performs one request. Returns 0 when an HTTP answer arrived (any status),
 * -ECONNREFUSED when the server could not be reached, -ETIMEDOUT, -ENOMEM or
 * -EIO; err then says what happened (no secrets). */
int cred_http(const struct cred_http_req *rq, struct cred_http_resp *rs,
              char *err, size_t errlen);
void cred_http_resp_free(struct cred_http_resp *rs);
/* A request to a credential endpoint with the options' time-out (connect
 * and whole request) and CA bundles; no body, through proxies. */
void cred_http_req_init(struct cred_http_req *rq, const struct cred_options *o,
                        const char *method, const char *url,
                        const char *const *headers);

/* Wipes a JSON string's bytes in place (a secret parsed from an answer),
 * before its document is freed. Anything else is left alone. */
void cred_wipe_json_string(json_t *v);

/* Per-request time-out from the options. */
long cred_timeout_ms(const struct cred_options *o);

/* One-time global initialisation of libcurl and libxml2. */
void cred_global_init(void);

#endif
