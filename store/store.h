/* The object-store interface between the filesystem (fs/) and the stores:
 * S3 (s3/) and a local directory (store/dir.c). List by prefix with
 * pagination, get, put; and for leases (fs/lease.c) a conditional put, a
 * get that tells the object's ETag and the store's clock, and a delete.
 * Every call returns 0 or a negative errno and fills a struct store_error
 * with what went wrong; the store does not log a call's final failure:
 * its caller does, once (README, "Observability"). Attempts that are
 * retried may be logged as warnings.
 *
 * errno mapping shared by all stores:
 *   -ENOENT     get: no such key           -ENXIO      no such bucket
 *   -EACCES     access denied / bad creds  -ETIMEDOUT  time-out after retries
 *   -EIO        anything else (after retries, for transient faults)
 *   -EINVAL     a key the store cannot hold   -ENOMEM  allocation failed
 * Implementations must be safe to call from many threads at once. */
#ifndef BOOKMARKFS_STORE_STORE_H
#define BOOKMARKFS_STORE_STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_ETAG_MAX 80
/* The longest object key a store takes (S3's limit, in bytes). */
#define STORE_KEY_MAX 1024

/* What went wrong in a store call. err is the call's return value; the
 * dir store fills message, the S3 store all four (code and request_id
 * are "" when the answer had none: a transport failure). */
struct store_error {
    int err;                 /* negative errno, 0: none */
    char code[64];           /* S3 error code, e.g. "SlowDown" */
    char request_id[128];    /* x-amz-request-id */
    char message[512];       /* one line: what failed and why */
};

/* Fills e (when not NULL): err and a message from fmt; code and request id
 * cleared. Returns err, so a store can `return store_fail(e, -EIO, ...)`. */
int store_fail(struct store_error *e, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A store_error's text for a log line or .status: its message, with the
 * S3 code and request id when there are (e.g. "HTTP 503 SlowDown: Please
 * reduce your request rate. (code SlowDown, request id 4B2...)"). */
void store_error_text(const struct store_error *e, char *buf, size_t len);

struct store_object {
    char *key;                 /* object key (UTF-8), owned */
    int64_t last_modified_ms;  /* LastModified, ms since 1970 UTC */
    uint64_t size;
    char etag[STORE_ETAG_MAX]; /* without surrounding quotes */
};

/* One page of a listing, keys in byte order. */
struct store_page {
    struct store_object *objects; /* owned array of `count` objects */
    size_t count;
    char *next_token;             /* owned; NULL when this was the last page */
    size_t skipped;               /* objects left out: their keys could not be told */
};

struct store_put_result {     /* zeroed by store_put and store_put_if first */
    char etag[STORE_ETAG_MAX];    /* without quotes */
    int attempts;                 /* requests sent, retries included */
    int64_t server_ms;            /* the store's clock at its answer (Date), 0: unknown */
    int ambiguous;                /* put_if failed in a way that may hide a write
                                     that took place: time-out, 409, 5xx, transport
                                     error, or a 412 after a retry of our own */
};

/* What get_info tells besides the bytes. */
struct store_get_info {
    char etag[STORE_ETAG_MAX];    /* without quotes */
    int64_t last_modified_ms;     /* LastModified (S3: whole seconds) */
    int64_t server_ms;            /* the store's clock at its answer (Date), 0: unknown */
};

/* if_match of put_if: create only when absent (If-None-Match: *). */
#define STORE_IF_ABSENT "*"

struct store;

/* Callers use the store_* wrappers below. Every operation fills err (never
 * NULL from the wrappers) when it fails; res and info are never NULL. */
struct store_ops {
    /* List keys beginning with `prefix` (may be ""), starting after the page
     * that handed out `token` (NULL for the first page). */
    int (*list_page)(struct store *st, const char *bucket, const char *prefix,
                     const char *token, struct store_page *out,
                     struct store_error *err);
    /* The same, only keys greater than `start_after` (S3's StartAfter;
     * NULL or "": from the first key). */
    int (*list_from)(struct store *st, const char *bucket, const char *prefix,
                     const char *start_after, const char *token,
                     struct store_page *out, struct store_error *err);
    /* Fetch a whole object into a malloc'd buffer (*data, *len); *data is
     * NUL-terminated one byte past *len for convenience. */
    int (*get)(struct store *st, const char *bucket, const char *key,
               char **data, size_t *len, struct store_error *err);
    /* Store a whole object atomically (application/json). */
    int (*put)(struct store *st, const char *bucket, const char *key,
               const void *body, size_t len, struct store_put_result *res,
               struct store_error *err);
    /* Conditional put: with if_match STORE_IF_ABSENT only when no object
     * has the key, else only when the object's ETag is if_match. A failed
     * precondition is -EEXIST (412); an If-Match on a missing key -ENOENT
     * (AWS answers 404; RGW answers 412, hence -EEXIST). res->ambiguous
     * marks failures whose outcome is unknown (see store_put_result). */
    int (*put_if)(struct store *st, const char *bucket, const char *key,
                  const void *body, size_t len, const char *if_match,
                  struct store_put_result *res, struct store_error *err);
    /* get, also filling info (ETag, LastModified, the store's Date). */
    int (*get_info)(struct store *st, const char *bucket, const char *key,
                    char **data, size_t *len, struct store_get_info *info,
                    struct store_error *err);
    /* Removes an object; a missing one is no error. */
    int (*del)(struct store *st, const char *bucket, const char *key,
               struct store_error *err);
    /* Mount-time check that `bucket` is reachable with the credentials;
     * on failure writes one plain sentence for the user into msg. */
    int (*check_bucket)(struct store *st, const char *bucket, char *msg,
                        size_t msglen);
    /* Where an object is, in the store's own words, for messages (S3:
     * s3://bucket/key; the dir store: its file). */
    void (*locate)(struct store *st, const char *bucket, const char *key, char *buf,
                   size_t len);
    void (*destroy)(struct store *st);
};

struct store {
    const struct store_ops *ops;
    const char *kind; /* "s3" or "dir" */
    size_t max_segment; /* longest segment of a key between slashes, 0: none */
    long list_bound_ms; /* bound on a whole listing, all pages; 0: none */
    int list_no_etags;  /* the caller never reads a listing's ETags: a store
                         * that must compute them (dir) may leave them empty */
};

/* The operations, as callers use them: err may be NULL (nothing is told
 * beyond the errno); res of the puts may be NULL. */
int store_get(struct store *st, const char *bucket, const char *key, char **data,
              size_t *len, struct store_error *err);
int store_get_info(struct store *st, const char *bucket, const char *key, char **data,
                   size_t *len, struct store_get_info *info, struct store_error *err);
int store_put(struct store *st, const char *bucket, const char *key, const void *body,
              size_t len, struct store_put_result *res, struct store_error *err);
int store_put_if(struct store *st, const char *bucket, const char *key,
                 const void *body, size_t len, const char *if_match,
                 struct store_put_result *res, struct store_error *err);
int store_del(struct store *st, const char *bucket, const char *key,
              struct store_error *err);
int store_check_bucket(struct store *st, const char *bucket, char *msg, size_t msglen);

/* Where bucket/key is (key may be NULL or a prefix), for messages: the
 * store's locate, else "bucket/key". Always NUL-terminates buf. */
#define STORE_LOCATION_MAX 2048
void store_locate(struct store *st, const char *bucket, const char *key, char *buf,
                  size_t len);

/* Calls cb for every object under prefix, page after page. Stops early and
 * returns cb's value when it returns non-zero (err: its errno). A listing
 * that cannot end is -EIO: a page that hands out the token it was asked
 * with, a page whose keys do not come after the previous page's, or more
 * time in all than st->list_bound_ms. err may be NULL. */
int store_list_all(struct store *st, const char *bucket, const char *prefix,
                   int (*cb)(const struct store_object *obj, void *arg),
                   void *arg, struct store_error *err);

/* store_list_all of the keys greater than start_after only. */
int store_list_from(struct store *st, const char *bucket, const char *prefix,
                    const char *start_after,
                    int (*cb)(const struct store_object *obj, void *arg),
                    void *arg, struct store_error *err);

void store_page_free(struct store_page *page);

static inline void store_destroy(struct store *st)
{
    if (st)
        st->ops->destroy(st);
}

/* The local directory store: objects at ROOT/<bucket>/<key>. Bucket
 * directories are created when missing. 0 with the store in *out, or a
 * negative errno with a message in err. */
int store_dir_new(const char *root, struct store **out, char *err, size_t errlen);

/* How many directories the directory store's listings have read so far
 * (each is read once and kept while it is unchanged): for the tests. */
uint64_t store_dir_reads(struct store *st);

#endif
