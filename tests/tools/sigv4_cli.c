/* Test tool: signs requests given as JSON lines on stdin with s3/sigv4.c and
 * prints one JSON line per request on stdout.
 *
 * In:  {"method","host","path","query":[[k,v],...],"headers":[[k,v],...],
 *       "payload_hash","region","time":epoch,"access_key","secret_key",
 *       "session_token"}   ("service" optional; "session_token" may be null)
 * Out: {"canonical_request","string_to_sign","signature","authorization",
 *       "encoded_path","encoded_query","amz_date","send_headers"}
 *      or {"error": "..."} for a request that could not be signed.
 * Exit status: 0, or 1 when stdin or stdout failed. */
#include "s3/sigv4.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static const char *opt_string(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Converts [[k, v], ...] into pairs (pointing into the JSON). Returns 0, or
 * -1 when the shape is wrong or memory ran out. */
static int get_pairs(json_t *obj, const char *key, struct sigv4_pair **out,
                     size_t *nout)
{
    *out = NULL;
    *nout = 0;
    json_t *arr = json_object_get(obj, key);
    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return -1;
    size_t n = json_array_size(arr);
    if (n == 0)
        return 0;
    struct sigv4_pair *p = calloc(n, sizeof *p);
    if (!p)
        return -1;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(arr, i);
        json_t *k = json_array_get(e, 0);
        json_t *v = json_array_get(e, 1);
        if (!json_is_array(e) || json_array_size(e) != 2 ||
            !json_is_string(k) || !json_is_string(v)) {
            free(p);
            return -1;
        }
        p[i].name = json_string_value(k);
        p[i].value = json_string_value(v);
    }
    *out = p;
    *nout = n;
    return 0;
}

static json_t *error_obj(const char *msg)
{
    return json_pack("{s:s}", "error", msg);
}

static json_t *sign_one(json_t *in)
{
    if (!json_is_object(in))
        return error_obj("not a JSON object");
    json_t *t = json_object_get(in, "time");
    if (!json_is_integer(t))
        return error_obj("time must be an integer");

    struct sigv4_request req = {
        .method = opt_string(in, "method"),
        .host = opt_string(in, "host"),
        .path = opt_string(in, "path"),
        .payload_hash = opt_string(in, "payload_hash"),
        .region = opt_string(in, "region"),
        .service = opt_string(in, "service"),
        .now = (time_t)json_integer_value(t),
    };
    struct sigv4_credentials creds = {
        .access_key = opt_string(in, "access_key"),
        .secret_key = opt_string(in, "secret_key"),
        .session_token = opt_string(in, "session_token"),
    };
    struct sigv4_pair *query = NULL, *headers = NULL;
    if (get_pairs(in, "query", &query, &req.nquery) != 0 ||
        get_pairs(in, "headers", &headers, &req.nheaders) != 0) {
        free(query);
        return error_obj("query and headers must be [[name, value], ...]");
    }
    req.query = query;
    req.headers = headers;

    struct sigv4_signed s;
    int rc = sigv4_sign(&req, &creds, &s);
    free(query);
    free(headers);
    if (rc != 0)
        return error_obj(rc == -ENOMEM ? "ENOMEM" : "EINVAL");

    json_t *sent = json_array();
    for (size_t i = 0; sent && i < s.nsend_headers; i++) {
        if (json_array_append_new(sent, json_string(s.send_headers[i])) != 0) {
            json_decref(sent);
            sent = NULL;
        }
    }
    json_t *out = NULL;
    if (sent)
        out = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}",
                        "canonical_request", s.canonical_request,
                        "string_to_sign", s.string_to_sign,
                        "signature", s.signature,
                        "authorization", s.authorization,
                        "encoded_path", s.encoded_path,
                        "encoded_query", s.encoded_query,
                        "amz_date", s.amz_date,
                        "send_headers", sent);
    sigv4_signed_free(&s);
    return out;
}

int main(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int status = 0;
    while ((len = getline(&line, &cap, stdin)) != -1) {
        if (len > 0 && line[len - 1] == '\n')
            line[--len] = '\0';
        if (len == 0)
            continue;
        json_error_t err;
        json_t *in = json_loadb(line, (size_t)len, 0, &err);
        json_t *out = in ? sign_one(in) : error_obj(err.text);
        json_decref(in);
        char *text = out ? json_dumps(out, JSON_COMPACT | JSON_ENSURE_ASCII)
                         : NULL;
        json_decref(out);
        if (!text) {
            fprintf(stderr, "sigv4_cli: out of memory\n");
            status = 1;
            break;
        }
        int w = printf("%s\n", text);
        free(text);
        if (w < 0 || fflush(stdout) != 0) {
            perror("sigv4_cli: stdout");
            status = 1;
            break;
        }
    }
    if (ferror(stdin)) {
        perror("sigv4_cli: stdin");
        status = 1;
    }
    free(line);
    return status;
}
