/* The defaults of the S3 client's time-outs and retries, in one place:
 * the option parser (fs/options.c) starts from them and prints them in
 * --help, the S3 store and the transport fall back on them, and the
 * README ("Command line", "Retries") and bookmarkfs(1) state them (the
 * tests check the man page against --help). Plain integer literals, so
 * S3_DEFAULT_STR can spell them in text. */
#ifndef BOOKMARKFS_S3_DEFAULTS_H
#define BOOKMARKFS_S3_DEFAULTS_H

#define S3_DEFAULT_CONNECT_TIMEOUT_MS 5000 /* --connect-timeout */
#define S3_DEFAULT_TIMEOUT_MS 30000        /* --timeout: one request */
#define S3_DEFAULT_MAX_ATTEMPTS 5          /* --retries: the first included */
#define S3_DEFAULT_RETRY_TIME_MS 60000     /* --retry-time: one operation */
#define S3_DEFAULT_BACKOFF_BASE_MS 100     /* full-jitter back-off: base */
#define S3_DEFAULT_BACKOFF_CAP_MS 5000     /* and cap */

/* The credential endpoints (container, instance metadata, STS): one
 * request's time-out, and the connect time-out of the link-local ones. */
#define S3_DEFAULT_CRED_TIMEOUT_MS 5000
#define S3_DEFAULT_CRED_CONNECT_TIMEOUT_MS 1000

/* A default as a string literal: S3_DEFAULT_STR(S3_DEFAULT_TIMEOUT_MS). */
#define S3_DEFAULT_STR_(x) #x
#define S3_DEFAULT_STR(x) S3_DEFAULT_STR_(x)

#endif
