/* S3 response documents, parsed with libxml2: ListObjectsV2 results and
 * error documents. Malformed input is an error, never a crash. */
#ifndef BOOKMARKFS_S3_XML_H
#define BOOKMARKFS_S3_XML_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct s3_xml_error {
    char code[64];        /* e.g. "NoSuchBucket"; "" when absent */
    char message[512];
    char request_id[128];
};

/* Once per process, before threads use the parser (also done lazily). */
void s3_xml_init(void);

/* Parses an <Error> document (S3), or an <ErrorResponse> holding one
 * (STS); the document's text is wiped before it is freed (an STS message
 * may quote the caller's token). Returns 0, or -EINVAL when body is not
 * one. */
int s3_xml_parse_error(const char *body, size_t len, struct s3_xml_error *out);

/* An ETag into dst (dstlen bytes, cut to fit), without its surrounding
 * quotes (from a listing, also the &quot; form, already decoded; from a
 * response header). */
void s3_xml_etag_copy(char *dst, size_t dstlen, const char *src);

/* Parses a <ListBucketResult> (ListObjectsV2) into out (objects, count,
 * next_token when IsTruncated). Returns 0, -EINVAL on a malformed or
 * inconsistent document, -ENOMEM. On error out is left empty. */
int s3_xml_parse_list(const char *body, size_t len, struct store_page *out);

#endif
