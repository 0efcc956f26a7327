/* The one handle set-up of the S3 client's requests (s3/http.h), as the
 * credential fetcher uses it (cred_http), against a libmicrohttpd server on
 * 127.0.0.1: each method sends what it should (PUT and POST bodies, the
 * headers, no "Expect: 100-continue"), the answer's body comes back whole,
 * an answer over the bound is refused, and the one map of libcurl's codes
 * gives ECONNREFUSED for a closed port and ETIMEDOUT for a server that
 * does not answer in time. Also the one <Error> reader (s3/xml.c), in its
 * S3 and its STS form. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "s3/cred_internal.h"
#include "s3/http.h"
#include "s3/xml.h"
#include "tests/unit/check.h"

/* What the server saw of the last request. */
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static char seen_method[16], seen_url[128], seen_body[4096], seen_auth[128];
static int seen_expect;
static size_t seen_len;

struct upload {
    char buf[4096];
    size_t len;
};

static enum MHD_Result on_header(void *cls, enum MHD_ValueKind kind,
                                 const char *key, const char *value)
{
    (void)cls;
    (void)kind;
    if (strcasecmp(key, "Expect") == 0)
        seen_expect = 1;
    if (strcasecmp(key, "Authorization") == 0)
        snprintf(seen_auth, sizeof seen_auth, "%s", value);
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *data,
                                  size_t *data_len, void **state)
{
    (void)cls;
    (void)version;
    struct upload *u = *state;
    if (!u) {
        u = calloc(1, sizeof *u);
        if (!u)
            return MHD_NO;
        *state = u;
        return MHD_YES;
    }
    if (*data_len) {
        size_t n = *data_len < sizeof u->buf - u->len ? *data_len : sizeof u->buf - u->len;
        memcpy(u->buf + u->len, data, n);
        u->len += n;
        *data_len = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&seen_lock);
    snprintf(seen_method, sizeof seen_method, "%s", method);
    snprintf(seen_url, sizeof seen_url, "%s", url);
    memcpy(seen_body, u->buf, u->len);
    seen_len = u->len;
    seen_expect = 0;
    seen_auth[0] = '\0';
    MHD_get_connection_values(c, MHD_HEADER_KIND, on_header, NULL);
    pthread_mutex_unlock(&seen_lock);

    static char big[2 * 1024 * 1024];
    const char *body = "{\"AccessKeyId\":\"AKIDTEST\"}";
    size_t len = strlen(body);
    if (strcmp(url, "/big") == 0) {
        memset(big, 'x', sizeof big);
        body = big;
        len = sizeof big;
    } else if (strcmp(url, "/slow") == 0) {
        sleep(1);
    }
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    enum MHD_Result ok = MHD_queue_response(c, strcmp(url, "/missing") == 0 ? 404 : 200, r);
    MHD_destroy_response(r);
    return ok;
}

static void on_done(void *cls, struct MHD_Connection *c, void **state,
                    enum MHD_RequestTerminationCode how)
{
    (void)cls;
    (void)c;
    (void)how;
    free(*state);
    *state = NULL;
}

static struct MHD_Daemon *server;
static char base[64];

static void start_server(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    server = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION,
                              0, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, &a,
                              MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL, MHD_OPTION_END);
    REQUIRE(server != NULL);
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(server, MHD_DAEMON_INFO_BIND_PORT);
    REQUIRE(info && info->port);
    snprintf(base, sizeof base, "http://127.0.0.1:%u", (unsigned)info->port);
}

/* A port nothing listens on: bound, then closed. */
static unsigned closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    REQUIRE(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    REQUIRE(getsockname(fd, (struct sockaddr *)&a, &al) == 0);
    close(fd);
    return ntohs(a.sin_port);
}

static int fetch(const char *method, const char *path, const char *body,
                 const char *const *headers, long timeout_ms,
                 struct cred_http_resp *rs, char *err, size_t errlen)
{
    char url[128];
    snprintf(url, sizeof url, "%s%s", base, path);
    struct cred_http_req rq = {
        .method = method,
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = body ? strlen(body) : 0,
        .connect_timeout_ms = 2000,
        .timeout_ms = timeout_ms,
        .no_proxy = 1,
    };
    return cred_http(&rq, rs, err, errlen);
}

static void test_methods(void)
{
    struct cred_http_resp rs;
    char err[CURL_ERROR_SIZE + 64];
    const char *hdrs[] = {"Authorization: tok-123", NULL};
    static const char *const methods[] = {"GET", "PUT", "POST"};
    for (size_t i = 0; i < 3; i++) {
        const char *body = i == 0 ? NULL : "Action=AssumeRole&Token=secret%2B1";
        int rc = fetch(methods[i], "/creds", body, hdrs, 5000, &rs, err, sizeof err);
        CHECK(rc == 0);
        CHECK(rs.status == 200);
        CHECK(rs.body && rs.len == strlen("{\"AccessKeyId\":\"AKIDTEST\"}") &&
              strcmp(rs.body, "{\"AccessKeyId\":\"AKIDTEST\"}") == 0);
        cred_http_resp_free(&rs);
        pthread_mutex_lock(&seen_lock);
        CHECK(strcmp(seen_method, methods[i]) == 0);
        CHECK(strcmp(seen_url, "/creds") == 0);
        CHECK(strcmp(seen_auth, "tok-123") == 0);
        CHECK(seen_expect == 0);
        CHECK(seen_len == (body ? strlen(body) : 0) &&
              (!body || memcmp(seen_body, body, seen_len) == 0));
        pthread_mutex_unlock(&seen_lock);
    }
    /* An empty PUT (the IMDSv2 token request) sends an empty body. */
    CHECK(fetch("PUT", "/token", NULL, NULL, 5000, &rs, err, sizeof err) == 0 && rs.status == 200);
    cred_http_resp_free(&rs);
    CHECK(seen_len == 0 && strcmp(seen_method, "PUT") == 0);
    /* Any status is an answer. */
    CHECK(fetch("GET", "/missing", NULL, NULL, 5000, &rs, err, sizeof err) == 0 && rs.status == 404);
    cred_http_resp_free(&rs);
}

static void test_failures(void)
{
    struct cred_http_resp rs;
    char err[CURL_ERROR_SIZE + 64];
    /* Over the credential answers' bound (1 MiB). */
    CHECK(fetch("GET", "/big", NULL, NULL, 5000, &rs, err, sizeof err) == -EIO);
    CHECK(rs.body == NULL && strstr(err, "larger than") != NULL);
    /* A server that does not answer within the time-out. */
    CHECK(fetch("GET", "/slow", NULL, NULL, 300, &rs, err, sizeof err) == -ETIMEDOUT);
    CHECK(rs.body == NULL && err[0] != '\0');
    /* Nothing listening. */
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/x", closed_port());
    struct cred_http_req rq = {.method = "GET", .url = url, .connect_timeout_ms = 2000,
                               .timeout_ms = 2000, .no_proxy = 1};
    CHECK(cred_http(&rq, &rs, err, sizeof err) == -ECONNREFUSED);
    CHECK(rs.body == NULL && err[0] != '\0');
}

/* The transport's own tries: a bounded answer through s3_http_run. */
static void test_run_bound(void)
{
    CURL *c = curl_easy_init();
    REQUIRE(c != NULL);
    char url[128];
    snprintf(url, sizeof url, "%s/big", base);
    struct curl_slist *list = NULL;
    REQUIRE(s3_http_header_list(NULL, 0, &list) == 0 && list != NULL);
    struct s3_http_call call;
    for (int bound = 0; bound < 2; bound++) {
        s3_http_call_init(&call, bound ? 4096 : (size_t)8 << 20, 0);
        struct s3_http_setup su = {.url = url, .method = "GET", .headers = list,
                                   .connect_timeout_ms = 2000, .timeout_ms = 5000};
        REQUIRE(s3_http_setup(c, &su, &call) == 0);
        long status = -1;
        char err[256];
        enum s3_http_fail f = s3_http_run(c, &call, &status, err, sizeof err);
        if (bound) {
            CHECK(f == S3_HTTP_OTHER && call.too_big && status == 0);
            CHECK(strstr(err, "larger than 4096 bytes") != NULL);
        } else {
            CHECK(f == S3_HTTP_OK && status == 200 && call.body.len == (size_t)2 << 20);
        }
        s3_http_call_free(&call);
    }
    s3_http_header_list_free(list);
    curl_easy_cleanup(c);
}

static void test_error_doc(void)
{
    struct s3_xml_error d;
    const char *s3 = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code>"
                     "<Message>Reduce your rate.</Message><RequestId>R1</RequestId></Error>";
    CHECK(s3_xml_parse_error(s3, strlen(s3), &d) == 0);
    CHECK(strcmp(d.code, "SlowDown") == 0 && strcmp(d.message, "Reduce your rate.") == 0 &&
          strcmp(d.request_id, "R1") == 0);
    const char *sts = "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">"
                      "<Error><Type>Sender</Type><Code>AccessDenied</Code>"
                      "<Message>not allowed</Message></Error>"
                      "<RequestId>R2</RequestId></ErrorResponse>";
    CHECK(s3_xml_parse_error(sts, strlen(sts), &d) == 0);
    CHECK(strcmp(d.code, "AccessDenied") == 0 && strcmp(d.message, "not allowed") == 0 &&
          strcmp(d.request_id, "R2") == 0);
    static const char *const not_errors[] = {
        "<ListBucketResult><Error><Code>X</Code></Error></ListBucketResult>",
        "<ErrorResponse><RequestId>R</RequestId></ErrorResponse>",
        "<Error><Code>unclosed",
        "not xml",
        "",
    };
    for (size_t i = 0; i < sizeof not_errors / sizeof not_errors[0]; i++) {
        CHECK(s3_xml_parse_error(not_errors[i], strlen(not_errors[i]), &d) == -EINVAL);
        CHECK(d.code[0] == '\0');
    }
}

int main(void)
{
    cred_global_init();
    start_server();
    test_methods();
    test_failures();
    test_run_bound();
    test_error_doc();
    MHD_stop_daemon(server);
    return failures != 0;
}
