/* util/iso8601: the one reader of AWS's ISO 8601 times (S3 LastModified,
 * every Expiration): what AWS writes is read to the millisecond, the same
 * instant in every zone reads alike, and everything else is refused with
 * the output left alone. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "tests/unit/check.h"
#include "util/iso8601.h"

static int64_t ms_of(const char *s)
{
    int64_t ms = -42;
    CHECK(iso8601_parse_ms(s, &ms) == 0);
    return ms;
}

/* The instant, computed by the C library (timegm), of a UTC calendar time. */
static int64_t utc_ms(int y, int mo, int d, int h, int mi, int s)
{
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                    .tm_hour = h, .tm_min = mi, .tm_sec = s};
    return (int64_t)timegm(&tm) * 1000;
}

static void test_accepted(void)
{
    int64_t t = utc_ms(2024, 5, 1, 12, 34, 56);
    CHECK(ms_of("2024-05-01T12:34:56Z") == t);
    CHECK(ms_of("2024-05-01T12:34:56.789Z") == t + 789);
    CHECK(ms_of("2024-05-01T12:34:56.7Z") == t + 700);
    CHECK(ms_of("2024-05-01T12:34:56.7891234Z") == t + 789); /* beyond ms dropped */
    CHECK(ms_of("2024-05-01t12:34:56z") == t);
    CHECK(ms_of("2024-05-01T14:34:56+02:00") == t);
    CHECK(ms_of("2024-05-01T14:34:56+0200") == t);
    CHECK(ms_of("2024-05-01T07:04:56.789-05:30") == t + 789);
    CHECK(ms_of("  2024-05-01T12:34:56Z\n") == t); /* indented XML text */
    CHECK(ms_of("1970-01-01T00:00:00Z") == 0);
    CHECK(ms_of("1969-12-31T23:59:59Z") == -1000);
    CHECK(ms_of("2024-02-29T23:59:59Z") == utc_ms(2024, 2, 29, 23, 59, 59));
    CHECK(ms_of("2000-02-29T00:00:00Z") == utc_ms(2000, 2, 29, 0, 0, 0));
    CHECK(ms_of("2038-01-19T03:14:08Z") == utc_ms(2038, 1, 19, 3, 14, 8));
    CHECK(ms_of("9999-12-31T23:59:59Z") == utc_ms(9999, 12, 31, 23, 59, 59));
}

static void test_refused(void)
{
    static const char *const bad[] = {
        "",
        "next tuesday",
        "2024-05-01T12:34:56",        /* no zone: ambiguous */
        "2024-05-01 12:34:56Z",       /* a space for the T */
        "2024-5-01T12:34:56Z",        /* too few digits */
        "2024-05-1T12:34:56Z",
        "2024-05-01T2:34:56Z",
        "24-05-01T12:34:56Z",
        "2024-05-01T12:34Z",          /* no seconds */
        "2024-05-01T12:34:56.Z",      /* a point and no fraction */
        "2024-05-01T12:34:56,5Z",     /* ISO's comma: AWS never writes it */
        "2024-13-01T12:34:56Z",
        "2024-00-01T12:34:56Z",
        "2024-04-31T12:34:56Z",       /* April has 30 days */
        "2023-02-29T12:34:56Z",       /* not a leap year */
        "1900-02-29T12:34:56Z",
        "2024-05-00T12:34:56Z",
        "2024-05-01T24:00:00Z",
        "2024-05-01T12:60:56Z",
        "2024-05-01T12:34:60Z",       /* no leap second */
        "2024-05-01T12:34:56+02",     /* half an offset */
        "2024-05-01T12:34:56+2:00",
        "2024-05-01T12:34:56+24:00",
        "2024-05-01T12:34:56+02:60",
        "2024-05-01T12:34:56ZZ",
        "2024-05-01T12:34:56Z junk",
        "2024-05-01T12:34:56 Z",
        "+2024-05-01T12:34:56Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t ms = 42;
        int rc = iso8601_parse_ms(bad[i], &ms);
        if (rc != -EINVAL || ms != 42)
            fprintf(stderr, "accepted: \"%s\"\n", bad[i]);
        CHECK(rc == -EINVAL && ms == 42);
    }
    int64_t ms = 42;
    CHECK(iso8601_parse_ms(NULL, &ms) == -EINVAL && ms == 42);
}

int main(void)
{
    test_accepted();
    test_refused();
    return failures != 0;
}
