/* s3/sigv4.c on arbitrary bytes.
 *
 * sigv4_uri_encode: the output holds only unreserved characters
 * (A-Z a-z 0-9 - . _ ~), "%XX" with uppercase hex, and '/' only when
 * keep_slash; decoding it gives back exactly the input bytes.
 *
 * sigv4_sign: a request built from the input (path, query parameters,
 * extra headers, time) is signed twice; the two results are identical.
 * A request with a valid path and query and no extra headers always signs
 * (the signer encodes whatever bytes it is given), its encoded path is
 * sigv4_uri_encode of the path, its query is sorted, and the canonical
 * request and Authorization header have the expected shape.
 *
 * Input: byte 0 = flags (bit 0 keep_slash, bit 1 session token, bit 2
 * PUT), bytes 1-8 = signing time for the second request, the rest = the
 * string to encode; split at NUL bytes it also gives the path, then
 * name/value pairs, alternately query parameters and headers. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "s3/sigv4.h"
#include "tests/fuzz/fuzz_check.h"

#define MAX_SEGS 16
#define FIXED_NOW ((time_t)1700000000) /* 2023-11-14 */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
           c == '~';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1; /* lowercase hex is a failure too */
}

/* Checks the alphabet of enc and that it decodes to in[0..len). */
static void check_encoding(const char *enc, const unsigned char *in,
                           size_t len, int keep_slash)
{
    FUZZ_CHECK(enc != NULL);
    size_t o = 0;
    for (size_t i = 0; enc[i]; o++) {
        unsigned char c = (unsigned char)enc[i];
        unsigned char dec;
        if (c == '%') {
            int hi = hexval(enc[i + 1]);
            int lo = hi < 0 ? -1 : hexval(enc[i + 2]);
            FUZZ_CHECK(hi >= 0 && lo >= 0);
            dec = (unsigned char)(hi << 4 | lo);
            /* Encoded only when it had to be. */
            FUZZ_CHECK(!is_unreserved(dec) && !(keep_slash && dec == '/'));
            i += 3;
        } else {
            FUZZ_CHECK(is_unreserved(c) || (keep_slash && c == '/'));
            dec = c;
            i++;
        }
        FUZZ_CHECK(o < len && in[o] == dec);
    }
    FUZZ_CHECK(o == len);
}

static int is_lower_hex64(const char *s)
{
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return s[64] == '\0';
}

static void check_same(const struct sigv4_signed *a, const struct sigv4_signed *b)
{
    FUZZ_CHECK(strcmp(a->encoded_path, b->encoded_path) == 0);
    FUZZ_CHECK(strcmp(a->encoded_query, b->encoded_query) == 0);
    FUZZ_CHECK(strcmp(a->canonical_request, b->canonical_request) == 0);
    FUZZ_CHECK(strcmp(a->string_to_sign, b->string_to_sign) == 0);
    FUZZ_CHECK(strcmp(a->signature, b->signature) == 0);
    FUZZ_CHECK(strcmp(a->amz_date, b->amz_date) == 0);
    FUZZ_CHECK(strcmp(a->authorization, b->authorization) == 0);
    FUZZ_CHECK(a->nsend_headers == b->nsend_headers);
    for (size_t i = 0; i < a->nsend_headers; i++)
        FUZZ_CHECK(strcmp(a->send_headers[i], b->send_headers[i]) == 0);
}

/* Compares "n=v" pieces the way the signer sorts: name, then value. */
static int piece_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    const char *ae = memchr(a, '=', alen), *be = memchr(b, '=', blen);
    FUZZ_CHECK(ae != NULL && be != NULL);
    size_t an = (size_t)(ae - a), bn = (size_t)(be - b);
    int c = memcmp(a, b, an < bn ? an : bn);
    if (c == 0 && an != bn)
        c = an < bn ? -1 : 1;
    if (c)
        return c;
    size_t av = alen - an - 1, bv = blen - bn - 1;
    c = memcmp(ae + 1, be + 1, av < bv ? av : bv);
    if (c == 0 && av != bv)
        c = av < bv ? -1 : 1;
    return c;
}

static void check_query_sorted(const char *q, size_t nquery)
{
    if (nquery == 0) {
        FUZZ_CHECK(q[0] == '\0');
        return;
    }
    const char *prev = NULL;
    size_t prevlen = 0, pieces = 0;
    for (const char *p = q;;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        FUZZ_CHECK(memchr(p, '=', len) != NULL);
        if (prev)
            FUZZ_CHECK(piece_cmp(prev, prevlen, p, len) <= 0);
        prev = p;
        prevlen = len;
        pieces++;
        if (!amp)
            break;
        p = amp + 1;
    }
    FUZZ_CHECK(pieces == nquery);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 9)
        return 0;
    unsigned flags = data[0];
    int64_t when = 0;
    memcpy(&when, data + 1, sizeof when);
    const unsigned char *s = data + 9;
    size_t n = size - 9;

    /* 1. the encoder, on every byte (NULs included) */
    int keep_slash = flags & 1;
    char *enc;
    FUZZ_CHECK(sigv4_uri_encode((const char *)s, n, keep_slash, &enc) == 0);
    check_encoding(enc, s, n, keep_slash);
    free(enc);

    /* 2. the signer: the rest split at NULs (a NUL-terminated copy) */
    char *buf = malloc(n + 2);
    FUZZ_CHECK(buf != NULL);
    buf[0] = '/';
    memcpy(buf + 1, s, n);
    buf[n + 1] = '\0';
    const char *segs[MAX_SEGS] = { buf };
    size_t nsegs = 1;
    for (size_t i = 1; i <= n && nsegs < MAX_SEGS; i++)
        if (buf[i] == '\0')
            segs[nsegs++] = buf + i + 1;
    /* segs[0] is the path ("/" + first segment); then pairs. The last
     * segment may point at the final NUL (an empty string): fine. */
    struct sigv4_pair query[MAX_SEGS], headers[MAX_SEGS];
    size_t nquery = 0, nheaders = 0;
    for (size_t i = 1; i + 1 < nsegs; i += 2) {
        struct sigv4_pair p = { segs[i], segs[i + 1] };
        if ((i / 2) % 2 == 0) {
            if (p.name[0] != '\0') /* a query name may not be empty */
                query[nquery++] = p;
        } else {
            headers[nheaders++] = p;
        }
    }
    char payload[65];
    sigv4_sha256_hex(data, size, payload);
    FUZZ_CHECK(is_lower_hex64(payload));

    struct sigv4_credentials creds = {
        .access_key = "AKIDEXAMPLE",
        .secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        .session_token = (flags & 2) ? "FQoGZXIvYXdzEXAMPLE//token=" : NULL,
    };
    struct sigv4_request req = {
        .method = (flags & 4) ? "PUT" : "GET",
        .host = "bucket.s3.us-east-1.amazonaws.com",
        .path = buf,
        .query = query,
        .nquery = nquery,
        .payload_hash = payload,
        .region = "us-east-1",
        .now = FIXED_NOW,
    };
    struct sigv4_signed a, b;
    int rc = sigv4_sign(&req, &creds, &a);
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(sigv4_sign(&req, &creds, &b) == 0);
    check_same(&a, &b);
    check_encoding(a.encoded_path, (const unsigned char *)buf, strlen(buf), 1);
    check_query_sorted(a.encoded_query, nquery);
    FUZZ_CHECK(is_lower_hex64(a.signature));
    FUZZ_CHECK(strcmp(a.amz_date, "20231114T221320Z") == 0);
    size_t ml = strlen(req.method), pl = strlen(a.encoded_path),
           ql = strlen(a.encoded_query);
    FUZZ_CHECK(strncmp(a.canonical_request, req.method, ml) == 0 &&
               a.canonical_request[ml] == '\n');
    FUZZ_CHECK(strncmp(a.canonical_request + ml + 1, a.encoded_path, pl) == 0 &&
               a.canonical_request[ml + 1 + pl] == '\n');
    FUZZ_CHECK(strncmp(a.canonical_request + ml + pl + 2, a.encoded_query,
                       ql) == 0 &&
               a.canonical_request[ml + pl + 2 + ql] == '\n');
    size_t al = strlen(a.authorization);
    FUZZ_CHECK(al > 64 && strcmp(a.authorization + al - 64, a.signature) == 0);
    FUZZ_CHECK(a.nsend_headers == ((flags & 2) ? 5u : 4u));
    FUZZ_CHECK(strncmp(a.send_headers[a.nsend_headers - 1], "Authorization: ",
                       15) == 0);
    sigv4_signed_free(&a);
    sigv4_signed_free(&b);

    /* 3. with the extra headers and the fuzzed time: may be refused
     * (-EINVAL), never anything else, and always the same answer. */
    req.headers = headers;
    req.nheaders = nheaders;
    req.now = (time_t)when;
    rc = sigv4_sign(&req, &creds, &a);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    int rc2 = sigv4_sign(&req, &creds, &b);
    FUZZ_CHECK(rc2 == rc);
    if (rc == 0) {
        check_same(&a, &b);
        FUZZ_CHECK(a.nsend_headers == ((flags & 2) ? 5u : 4u) + nheaders);
        sigv4_signed_free(&a);
        sigv4_signed_free(&b);
    }
    free(buf);
    return 0;
}
