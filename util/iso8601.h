/* The one reader of the times AWS writes in ISO 8601 / RFC 3339 form: S3's
 * LastModified, STS's Expiration, the Expiration of the container and
 * instance-metadata endpoints and of credential_process. */
#ifndef BOOKMARKFS_UTIL_ISO8601_H
#define BOOKMARKFS_UTIL_ISO8601_H

#include <stdint.h>

/* "YYYY-MM-DDTHH:MM:SS", then an optional fraction ('.' and at least one
 * digit; milliseconds kept, the rest dropped), then a zone: 'Z', or
 * "+hh:mm" / "-hh:mm" / "+hhmm" / "-hhmm". Exactly that many digits, fields
 * in range (the day within its month, no leap second), 'T' and 'Z' in
 * either case; spaces around the whole are allowed (XML text), anything
 * else is not. A time without a zone is refused: it is ambiguous. Sets *ms
 * to milliseconds since 1970 UTC. 0, or -EINVAL (*ms unchanged). */
int iso8601_parse_ms(const char *s, int64_t *ms);

#endif
