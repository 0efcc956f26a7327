/* Unit tests of s3/sigv4.c.
 *
 * The four signing examples are AWS's published S3 SigV4 examples ("Signature
 * Calculations for the Authorization Header: Transferring Payload in a Single
 * Chunk", S3 API reference): their canonical requests, string-to-sign hashes
 * and signatures are external truth. */
#include "s3/sigv4.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
static int checks;

#define CHECK(cond)                                                          \
    do {                                                                     \
        checks++;                                                            \
        if (!(cond)) {                                                       \
            failures++;                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
        }                                                                    \
    } while (0)

#define CHECK_STR(got, want) check_str(__FILE__, __LINE__, #got, got, want)
#define CHECK_INT(got, want) check_int(__FILE__, __LINE__, #got, got, want)

static void check_str(const char *file, int line, const char *expr,
                      const char *got, const char *want)
{
    checks++;
    if (!got || strcmp(got, want) != 0) {
        failures++;
        fprintf(stderr, "%s:%d: %s\n  got:  \"%s\"\n  want: \"%s\"\n", file,
                line, expr, got ? got : "(null)", want);
    }
}

static void check_int(const char *file, int line, const char *expr, long got,
                      long want)
{
    checks++;
    if (got != want) {
        failures++;
        fprintf(stderr, "%s:%d: %s = %ld, want %ld\n", file, line, expr, got,
                want);
    }
}

/* ---- AWS's published examples ------------------------------------------ */

#define EX_HOST "examplebucket.s3.amazonaws.com"
#define EX_DATE "20130524T000000Z"
#define EX_TIME ((time_t)1369353600) /* 2013-05-24T00:00:00Z */
#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define EX_SCOPE "20130524/us-east-1/s3/aws4_request"
#define EX_CRED "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/" EX_SCOPE

static const struct sigv4_credentials ex_creds = {
    .access_key = "AKIAIOSFODNN7EXAMPLE",
    .secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    .session_token = NULL,
};

static struct sigv4_request ex_request(const char *method, const char *path)
{
    struct sigv4_request r = {
        .method = method,
        .host = EX_HOST,
        .path = path,
        .payload_hash = EMPTY_SHA,
        .region = "us-east-1",
        .service = "s3",
        .now = EX_TIME,
    };
    return r;
}

static void test_get_object(void)
{
    const struct sigv4_pair hdrs[] = { { "Range", "bytes=0-9" } };
    struct sigv4_request r = ex_request("GET", "/test.txt");
    r.headers = hdrs;
    r.nheaders = 1;
    struct sigv4_signed s;
    CHECK_INT(sigv4_sign(&r, &ex_creds, &s), 0);
    CHECK_STR(s.canonical_request,
              "GET\n"
              "/test.txt\n"
              "\n"
              "host:" EX_HOST "\n"
              "range:bytes=0-9\n"
              "x-amz-content-sha256:" EMPTY_SHA "\n"
              "x-amz-date:" EX_DATE "\n"
              "\n"
              "host;range;x-amz-content-sha256;x-amz-date\n" EMPTY_SHA);
    CHECK_STR(s.string_to_sign,
              "AWS4-HMAC-SHA256\n" EX_DATE "\n" EX_SCOPE "\n"
              "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972");
    CHECK_STR(s.signature,
              "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    CHECK_STR(s.authorization,
              EX_CRED ",SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
              "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    CHECK_STR(s.amz_date, EX_DATE);
    CHECK_STR(s.encoded_path, "/test.txt");
    CHECK_STR(s.encoded_query, "");

    /* Headers to send: the signed ones in canonical order, Authorization
     * last. */
    CHECK_INT((long)s.nsend_headers, 5);
    if (s.nsend_headers == 5) {
        CHECK_STR(s.send_headers[0], "host: " EX_HOST);
        CHECK_STR(s.send_headers[1], "range: bytes=0-9");
        CHECK_STR(s.send_headers[2], "x-amz-content-sha256: " EMPTY_SHA);
        CHECK_STR(s.send_headers[3], "x-amz-date: " EX_DATE);
        CHECK(strncmp(s.send_headers[4], "Authorization: ", 15) == 0);
        CHECK_STR(s.send_headers[4] + 15, s.authorization);
    }
    sigv4_signed_free(&s);
}

static void test_put_object(void)
{
    static const char body[] = "Welcome to Amazon S3.";
    char hash[65];
    sigv4_sha256_hex(body, strlen(body), hash);
    CHECK_STR(hash,
              "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");

    const struct sigv4_pair hdrs[] = {
        { "x-amz-storage-class", "REDUCED_REDUNDANCY" },
        { "Date", "Fri, 24 May 2013 00:00:00 GMT" },
    };
    struct sigv4_request r = ex_request("PUT", "/test$file.text");
    r.headers = hdrs;
    r.nheaders = 2;
    r.payload_hash = hash;
    struct sigv4_signed s;
    CHECK_INT(sigv4_sign(&r, &ex_creds, &s), 0);
    CHECK_STR(s.canonical_request,
              "PUT\n"
              "/test%24file.text\n"
              "\n"
              "date:Fri, 24 May 2013 00:00:00 GMT\n"
              "host:" EX_HOST "\n"
              "x-amz-content-sha256:44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\n"
              "x-amz-date:" EX_DATE "\n"
              "x-amz-storage-class:REDUCED_REDUNDANCY\n"
              "\n"
              "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class\n"
              "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
    CHECK_STR(s.string_to_sign,
              "AWS4-HMAC-SHA256\n" EX_DATE "\n" EX_SCOPE "\n"
              "9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d");
    CHECK_STR(s.signature,
              "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    CHECK_STR(s.authorization,
              EX_CRED ",SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;"
              "x-amz-storage-class,"
              "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
    CHECK_STR(s.encoded_path, "/test%24file.text");
    sigv4_signed_free(&s);
}

static void test_get_bucket_lifecycle(void)
{
    const struct sigv4_pair q[] = { { "lifecycle", "" } };
    struct sigv4_request r = ex_request("GET", "/");
    r.query = q;
    r.nquery = 1;
    struct sigv4_signed s;
    CHECK_INT(sigv4_sign(&r, &ex_creds, &s), 0);
    CHECK_STR(s.canonical_request,
              "GET\n"
              "/\n"
              "lifecycle=\n"
              "host:" EX_HOST "\n"
              "x-amz-content-sha256:" EMPTY_SHA "\n"
              "x-amz-date:" EX_DATE "\n"
              "\n"
              "host;x-amz-content-sha256;x-amz-date\n" EMPTY_SHA);
    CHECK_STR(s.string_to_sign,
              "AWS4-HMAC-SHA256\n" EX_DATE "\n" EX_SCOPE "\n"
              "9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca");
    CHECK_STR(s.signature,
              "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
    CHECK_STR(s.encoded_query, "lifecycle=");
    sigv4_signed_free(&s);
}

static void test_list_objects(void)
{
    /* Given out of order: the signer sorts. */
    const struct sigv4_pair q[] = { { "prefix", "J" }, { "max-keys", "2" } };
    struct sigv4_request r = ex_request("GET", "/");
    r.query = q;
    r.nquery = 2;
    r.service = NULL; /* defaults to "s3" */
    struct sigv4_signed s;
    CHECK_INT(sigv4_sign(&r, &ex_creds, &s), 0);
    CHECK_STR(s.canonical_request,
              "GET\n"
              "/\n"
              "max-keys=2&prefix=J\n"
              "host:" EX_HOST "\n"
              "x-amz-content-sha256:" EMPTY_SHA "\n"
              "x-amz-date:" EX_DATE "\n"
              "\n"
              "host;x-amz-content-sha256;x-amz-date\n" EMPTY_SHA);
    CHECK_STR(s.string_to_sign,
              "AWS4-HMAC-SHA256\n" EX_DATE "\n" EX_SCOPE "\n"
              "df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7");
    CHECK_STR(s.signature,
              "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
    CHECK_STR(s.encoded_query, "max-keys=2&prefix=J");
    sigv4_signed_free(&s);
}

/* ---- encoding ----------------------------------------------------------- */

static void check_enc(int line, const char *in, size_t len, int keep_slash,
                      const char *want)
{
    char *got;
    CHECK(sigv4_uri_encode(in, len, keep_slash, &got) == 0);
    check_str(__FILE__, line, in, got, want);
    free(got);
}
#define ENC(in, keep, want) check_enc(__LINE__, in, strlen(in), keep, want)

static void test_uri_encode(void)
{
    ENC("a b", 1, "a%20b");
    ENC("a b", 0, "a%20b");
    ENC("=", 1, "%3D");
    ENC("upload_date=1700000000", 1, "upload_date%3D1700000000");
    ENC("+", 0, "%2B");
    ENC("~", 0, "~");
    ENC("~", 1, "~");
    ENC("a/b", 1, "a/b");
    ENC("a/b", 0, "a%2Fb");
    ENC("%", 1, "%25");
    ENC("%41", 1, "%2541"); /* never decoded, never double-decoded */
    ENC("AZaz09-._~", 0, "AZaz09-._~");
    ENC("!*'();:@&$,?#[]", 1, "%21%2A%27%28%29%3B%3A%40%26%24%2C%3F%23%5B%5D");
    ENC("caf\xc3\xa9", 1, "caf%C3%A9");           /* é */
    ENC("\xe6\x97\xa5", 1, "%E6%97%A5");          /* 日 */
    ENC("\xf0\x9f\x98\x80", 1, "%F0%9F%98%80");   /* 😀 */
    ENC("\x7f\xff", 0, "%7F%FF");
    ENC("", 0, "");
    check_enc(__LINE__, "a\0b", 3, 0, "a%00b"); /* length, not NUL, ends */
    check_enc(__LINE__, "abc", 2, 0, "ab");
}

static void test_sha256(void)
{
    char out[65];
    sigv4_sha256_hex("", 0, out);
    CHECK_STR(out, EMPTY_SHA);
    sigv4_sha256_hex(NULL, 0, out);
    CHECK_STR(out, EMPTY_SHA);
    /* FIPS 180-2 test vector. */
    sigv4_sha256_hex("abc", 3, out);
    CHECK_STR(out,
              "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* ---- request canonicalization ----------------------------------------- */

/* Line n (0-based) of s, into buf. */
static const char *line_of(const char *s, int n, char *buf, size_t cap)
{
    for (; n > 0 && s; n--) {
        s = strchr(s, '\n');
        if (s)
            s++;
    }
    if (!s)
        return "";
    size_t len = strcspn(s, "\n");
    if (len >= cap)
        len = cap - 1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return buf;
}

static void test_path_and_query_encoding(void)
{
    const struct sigv4_pair q[] = {
        { "prefix", "dom/ds/" },
        { "list-type", "2" },
        { "continuation-token", "1ab+c/d==" },
        { "b", "" },
        { "a", "2" },
        { "a", "10" },
        { "A", "x y" },
    };
    struct sigv4_request r = ex_request("GET",
        "/bkt/dom/ds/upload_date=1700000000/u s/others/job+1 \xc3\xa9_completed.json");
    r.query = q;
    r.nquery = sizeof q / sizeof q[0];
    struct sigv4_signed s;
    char buf[512];
    CHECK_INT(sigv4_sign(&r, &ex_creds, &s), 0);
    CHECK_STR(s.encoded_path,
              "/bkt/dom/ds/upload_date%3D1700000000/u%20s/others/"
              "job%2B1%20%C3%A9_completed.json");
    /* Sorted by encoded name, then value; '/' is encoded in the query. */
    CHECK_STR(s.encoded_query,
              "A=x%20y&a=10&a=2&b=&continuation-token=1ab%2Bc%2Fd%3D%3D&"
              "list-type=2&prefix=dom%2Fds%2F");
    CHECK_STR(line_of(s.canonical_request, 1, buf, sizeof buf), s.encoded_path);
    CHECK_STR(line_of(s.canonical_request, 2, buf, sizeof buf), s.encoded_query);
    sigv4_signed_free(&s);

    /* S3 does not normalize paths. */
    r = ex_request("GET", "/bkt//a/./b/../c/");
    CHECK_INT(sigv4_sign(&r, &ex_creds, &s), 0);
    CHECK_STR(s.encoded_path, "/bkt//a/./b/../c/");
    CHECK_STR(line_of(s.canonical_request, 1, buf, sizeof buf),
              "/bkt//a/./b/../c/");
    sigv4_signed_free(&s);
}

static void test_headers_and_token(void)
{
    const struct sigv4_pair hdrs[] = {
        { "Content-Type", "  application/json   ;  charset=utf-8 " },
        { "CONTENT-MD5", "\t1B2M2Y8AsgTpgAmY7PhCfg==" },
        { "X-Amz-Meta-Note", "" },
    };
    struct sigv4_credentials creds = ex_creds;
    creds.session_token = "FQoGZXIvYXdzE+token/with=";
    struct sigv4_request r = ex_request("PUT", "/b/k");
    r.headers = hdrs;
    r.nheaders = 3;
    r.region = "eu-central-1";
    r.payload_hash = "UNSIGNED-PAYLOAD";
    r.host = "127.0.0.1:9000";
    struct sigv4_signed s;
    CHECK_INT(sigv4_sign(&r, &creds, &s), 0);
    CHECK_STR(s.canonical_request,
              "PUT\n/b/k\n\n"
              "content-md5:1B2M2Y8AsgTpgAmY7PhCfg==\n"
              "content-type:application/json ; charset=utf-8\n"
              "host:127.0.0.1:9000\n"
              "x-amz-content-sha256:UNSIGNED-PAYLOAD\n"
              "x-amz-date:" EX_DATE "\n"
              "x-amz-meta-note:\n"
              "x-amz-security-token:FQoGZXIvYXdzE+token/with=\n"
              "\n"
              "content-md5;content-type;host;x-amz-content-sha256;x-amz-date;"
              "x-amz-meta-note;x-amz-security-token\n"
              "UNSIGNED-PAYLOAD");
    CHECK(strstr(s.string_to_sign, "\n20130524/eu-central-1/s3/aws4_request\n") != NULL);
    CHECK_INT((long)s.nsend_headers, 8);
    if (s.nsend_headers == 8) {
        CHECK_STR(s.send_headers[0], "content-md5: 1B2M2Y8AsgTpgAmY7PhCfg==");
        CHECK_STR(s.send_headers[6],
                  "x-amz-security-token: FQoGZXIvYXdzE+token/with=");
        CHECK(strncmp(s.send_headers[7], "Authorization: ", 15) == 0);
    }
    char with_token[65];
    memcpy(with_token, s.signature, sizeof with_token);
    sigv4_signed_free(&s);

    /* An empty token is no token. */
    creds.session_token = "";
    CHECK_INT(sigv4_sign(&r, &creds, &s), 0);
    CHECK(strstr(s.canonical_request, "x-amz-security-token") == NULL);
    CHECK(strcmp(s.signature, with_token) != 0);
    CHECK_INT((long)s.nsend_headers, 7);
    sigv4_signed_free(&s);
}

static void test_signature_depends_on_inputs(void)
{
    struct sigv4_request r = ex_request("GET", "/test.txt");
    struct sigv4_signed a, b;
    CHECK_INT(sigv4_sign(&r, &ex_creds, &a), 0);
    CHECK_INT(sigv4_sign(&r, &ex_creds, &b), 0);
    CHECK_STR(a.signature, b.signature); /* deterministic */
    sigv4_signed_free(&b);

    struct sigv4_credentials other = ex_creds;
    other.secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEZ";
    CHECK_INT(sigv4_sign(&r, &other, &b), 0);
    CHECK_STR(b.canonical_request, a.canonical_request);
    CHECK_STR(b.string_to_sign, a.string_to_sign);
    CHECK(strcmp(a.signature, b.signature) != 0);
    sigv4_signed_free(&b);

    r.now = EX_TIME + 86400;
    CHECK_INT(sigv4_sign(&r, &ex_creds, &b), 0);
    CHECK_STR(b.amz_date, "20130525T000000Z");
    CHECK(strcmp(a.signature, b.signature) != 0);
    sigv4_signed_free(&b);
    sigv4_signed_free(&a);
}

static void check_einval(int line, const struct sigv4_request *r,
                         const struct sigv4_credentials *c)
{
    struct sigv4_signed s;
    memset(&s, 0x5a, sizeof s);
    int rc = sigv4_sign(r, c, &s);
    check_int(__FILE__, line, "sigv4_sign(invalid)", rc, -EINVAL);
    /* The result is left empty, safe to free. */
    checks++;
    if (s.canonical_request || s.authorization || s.send_headers ||
        s.encoded_path) {
        failures++;
        fprintf(stderr, "%s:%d: result not cleared on error\n", __FILE__, line);
    }
    sigv4_signed_free(&s);
}

static void test_invalid(void)
{
    struct sigv4_request r = ex_request("GET", "no-leading-slash");
    check_einval(__LINE__, &r, &ex_creds);
    r = ex_request("GET", NULL);
    check_einval(__LINE__, &r, &ex_creds);
    r = ex_request("GET", "/");
    r.now = -1;
    check_einval(__LINE__, &r, &ex_creds);
    check_einval(__LINE__, NULL, &ex_creds);
    r = ex_request("GET", "/");
    check_einval(__LINE__, &r, NULL);

    const struct sigv4_pair crlf[] = { { "x-amz-meta-a", "v\r\nInjected: 1" } };
    r = ex_request("GET", "/");
    r.headers = crlf;
    r.nheaders = 1;
    check_einval(__LINE__, &r, &ex_creds);

    const struct sigv4_pair badname[] = { { "bad name", "v" } };
    r.headers = badname;
    check_einval(__LINE__, &r, &ex_creds);

    const struct sigv4_pair dup[] = { { "Content-Type", "a" },
                                      { "content-type", "b" } };
    r.headers = dup;
    r.nheaders = 2;
    check_einval(__LINE__, &r, &ex_creds);

    const struct sigv4_pair reserved[] = { { "Host", "elsewhere" } };
    r.headers = reserved;
    r.nheaders = 1;
    check_einval(__LINE__, &r, &ex_creds);

    const struct sigv4_pair noname[] = { { "", "v" } };
    r = ex_request("GET", "/");
    r.query = noname;
    r.nquery = 1;
    check_einval(__LINE__, &r, &ex_creds);

    struct sigv4_credentials c = ex_creds;
    c.session_token = "tok\nen";
    r = ex_request("GET", "/");
    check_einval(__LINE__, &r, &c);
    c = ex_creds;
    c.access_key = NULL;
    check_einval(__LINE__, &r, &c);

    struct sigv4_signed s;
    CHECK_INT(sigv4_sign(&r, &ex_creds, NULL), -EINVAL);
    sigv4_signed_free(NULL);
    memset(&s, 0, sizeof s);
    sigv4_signed_free(&s); /* a cleared result frees cleanly */
}

int main(void)
{
    test_get_object();
    test_put_object();
    test_get_bucket_lifecycle();
    test_list_objects();
    test_uri_encode();
    test_sha256();
    test_path_and_query_encoding();
    test_headers_and_token();
    test_signature_depends_on_inputs();
    test_invalid();
    if (failures) {
        fprintf(stderr, "%d of %d checks failed\n", failures, checks);
        return 1;
    }
    printf("all %d checks passed\n", checks);
    return 0;
}
