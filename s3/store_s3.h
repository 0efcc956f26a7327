/* The S3 implementation of the store interface (store/store.h). */
#ifndef BOOKMARKFS_S3_STORE_S3_H
#define BOOKMARKFS_S3_STORE_S3_H

#include "store/store.h"

struct store_s3_options {
    const char *endpoint;   /* NULL: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL,
                               else https://s3.<region>.amazonaws.com */
    const char *region;     /* NULL: AWS_REGION, AWS_DEFAULT_REGION,
                               profile's region, "us-east-1" */
    int path_style;         /* 1: path-style addressing */
    const char *profile;    /* NULL: AWS_PROFILE, else "default" */
    const char *ca_file;    /* extra CA bundle, or NULL */
    long connect_timeout_ms;/* default 5000 */
    long timeout_ms;        /* per request, default 30000 */
    int max_attempts;       /* default 5 */
    long max_retry_ms;      /* total time bound for one operation, default 60000 */
};

/* The endpoint --endpoint (option, may be NULL) or the environment gives
 * (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL), or NULL: AWS's regional one,
 * which store_s3_new derives from the region. */
const char *store_s3_endpoint_given(const char *option);

/* 0 with the store in *out, or a negative errno (-EINVAL for a
 * configuration error) with one plain sentence in err. */
int store_s3_new(const struct store_s3_options *opts, struct store **out, char *err,
                 size_t errlen);

#endif
