/* Unit tests of the state model (fs/state.c): the seed's StateData
 * behaviour, serialization formats, and consistency under threads. */
#include "fs/state.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            failures++;                                                      \
        }                                                                    \
    } while (0)

/* Fatal when the test cannot meaningfully go on. */
#define REQUIRE(cond)                                                        \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: required: %s\n", __FILE__, __LINE__,     \
                    #cond);                                                  \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
    REQUIRE(v != NULL);
    return v;
}

/* to_bytes must equal `expect` exactly. */
static void check_bytes(struct state *st, const char *expect, int line)
{
    size_t len = 0;
    char *b = state_to_bytes(st, &len);
    REQUIRE(b != NULL);
    if (strcmp(b, expect) != 0 || len != strlen(expect)) {
        fprintf(stderr, "line %d: to_bytes %s (len %zu), expected %s\n", line,
                b, len, expect);
        failures++;
    }
    free(b);
}
#define CHECK_BYTES(st, expect) check_bytes(st, expect, __LINE__)

static void check_keys(struct state *st, const char *const *expect, size_t n,
                       int line)
{
    size_t count = 0;
    char **keys = state_keys(st, &count);
    REQUIRE(keys != NULL);
    int ok = count == n;
    for (size_t i = 0; ok && i < n; i++)
        ok = strcmp(keys[i], expect[i]) == 0;
    if (!ok) {
        fprintf(stderr, "line %d: keys differ (count %zu, expected %zu)\n",
                line, count, n);
        failures++;
    }
    CHECK(state_count(st) == n);
    state_keys_free(keys, count);
}
#define CHECK_KEYS(st, ...)                                                  \
    do {                                                                     \
        static const char *const ks_[] = {__VA_ARGS__};                      \
        check_keys(st, ks_, sizeof ks_ / sizeof ks_[0], __LINE__);           \
    } while (0)

static void test_seed_example(void)
{
    struct state *st = state_new();
    REQUIRE(st);
    CHECK_BYTES(st, "{}");
    CHECK(state_set(st, "DatasetId", parse("{\"epoch_time\": 156234987}")) == 0);
    CHECK_BYTES(st, "{\"DatasetId\":{\"epoch_time\":156234987}}");
    CHECK(state_has(st, "DatasetId") == 1);
    CHECK(state_has(st, "Other") == 0);
    json_t *v = state_get(st, "DatasetId");
    REQUIRE(v);
    CHECK(json_integer_value(json_object_get(v, "epoch_time")) == 156234987);
    json_decref(v);
    CHECK(state_get(st, "Other") == NULL);
    state_free(st);
}

static void test_order(void)
{
    struct state *st = state_new();
    REQUIRE(st);
    CHECK(state_set(st, "b", json_integer(1)) == 0);
    CHECK(state_set(st, "a", json_integer(2)) == 0);
    CHECK(state_set(st, "c", json_integer(3)) == 0);
    CHECK_KEYS(st, "b", "a", "c");
    /* Updating keeps the first-added position. */
    CHECK(state_set(st, "b", json_string("x")) == 0);
    CHECK(state_set(st, "a", json_null()) == 0);
    CHECK_KEYS(st, "b", "a", "c");
    CHECK_BYTES(st, "{\"b\":\"x\",\"a\":null,\"c\":3}");
    /* Remove then re-add moves the key to the end. */
    CHECK(state_remove(st, "b") == 0);
    CHECK(state_remove(st, "b") == -ENOENT);
    CHECK(state_set(st, "b", json_true()) == 0);
    CHECK_KEYS(st, "a", "c", "b");
    CHECK_BYTES(st, "{\"a\":null,\"c\":3,\"b\":true}");
    /* set with a failed constructor (NULL) is an error, not a crash. */
    CHECK(state_set(st, "d", NULL) < 0);
    CHECK(state_has(st, "d") == 0);
    /* Keys that are not UTF-8 cannot be JSON. */
    CHECK(state_set(st, "\xff\xfe", json_integer(1)) == -EINVAL);
    CHECK_KEYS(st, "a", "c", "b");
    state_reset(st);
    CHECK(state_count(st) == 0);
    CHECK_BYTES(st, "{}");
    size_t n = 99;
    char **keys = state_keys(st, &n);
    CHECK(keys != NULL && n == 0);
    state_keys_free(keys, n);
    state_free(st);
}

static void test_rename(void)
{
    struct state *st = state_new();
    REQUIRE(st);
    CHECK(state_set(st, "a", json_integer(1)) == 0);
    CHECK(state_set(st, "b", json_integer(2)) == 0);
    CHECK(state_set(st, "c", json_integer(3)) == 0);
    /* Over an existing key: to keeps its position, from disappears. */
    CHECK(state_rename(st, "c", "a") == 0);
    CHECK_BYTES(st, "{\"a\":3,\"b\":2}");
    /* To a new key: appended. */
    CHECK(state_rename(st, "a", "z") == 0);
    CHECK_BYTES(st, "{\"b\":2,\"z\":3}");
    /* Onto itself: nothing changes. */
    CHECK(state_rename(st, "b", "b") == 0);
    CHECK_BYTES(st, "{\"b\":2,\"z\":3}");
    CHECK(state_rename(st, "missing", "b") == -ENOENT);
    CHECK_BYTES(st, "{\"b\":2,\"z\":3}");
    CHECK(state_rename(st, "b", "\xc3") == -EINVAL);
    CHECK_BYTES(st, "{\"b\":2,\"z\":3}");
    state_free(st);
}

static void test_from_bytes(void)
{
    struct state *st = state_new();
    REQUIRE(st);
    CHECK(state_set(st, "keep", json_integer(7)) == 0);
    static const char *const bad[] = {
        "[1,2]", "\"str\"", "42", "null", "garbage", "{\"a\":1", "",
        "{\"a\":1} trailing",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[200] = "";
        CHECK(state_from_bytes(st, bad[i], strlen(bad[i]), err, sizeof err) ==
              -EINVAL);
        CHECK(err[0] != '\0');
        CHECK_BYTES(st, "{\"keep\":7}");
    }
    CHECK(state_from_bytes(st, "[]", 2, NULL, 0) == -EINVAL);

    const char *obj = " {\"y\": [1, 2, {\"k\": \"v\"}], \"x\": \"\\u00e9\"}\n";
    CHECK(state_from_bytes(st, obj, strlen(obj), NULL, 0) == 0);
    CHECK_BYTES(st, "{\"y\":[1,2,{\"k\":\"v\"}],\"x\":\"\xc3\xa9\"}");
    CHECK_KEYS(st, "y", "x");
    /* Round trip: the bytes of one state load into another unchanged. */
    size_t len;
    char *b = state_to_bytes(st, &len);
    REQUIRE(b);
    struct state *st2 = state_new();
    REQUIRE(st2);
    CHECK(state_from_bytes(st2, b, len, NULL, 0) == 0);
    CHECK_BYTES(st2, b);
    free(b);
    /* A NUL inside a string survives (escaped on output). */
    const char *nul = "{\"n\":\"a\\u0000b\"}";
    CHECK(state_from_bytes(st2, nul, strlen(nul), NULL, 0) == 0);
    CHECK_BYTES(st2, nul);
    state_free(st2);
    CHECK(state_from_bytes(st, "{}", 2, NULL, 0) == 0);
    CHECK(state_count(st) == 0);
    state_free(st);
}

static void test_value_text(void)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"1", "1\n"},
        {" -12 ", "-12\n"},
        {"true", "true\n"},
        {"null", "null\n"},
        {"\"s\"", "\"s\"\n"},
        {"\"\xe2\x82\xac \\u00fc \xf0\x9f\x98\x80\"",
         "\"\xe2\x82\xac \xc3\xbc \xf0\x9f\x98\x80\"\n"},
        {"{ \"a\" : [ 1 , { \"b\" : null } ] , \"c\" : {} }",
         "{\"a\":[1,{\"b\":null}],\"c\":{}}\n"},
        {"[]", "[]\n"},
        {"\"q\\\"\\\\\\n\"", "\"q\\\"\\\\\\n\"\n"},
        {"1.5", "1.5\n"},
    };
    struct state *st = state_new();
    REQUIRE(st);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[200];
        json_t *v = state_parse_value(cases[i].in, strlen(cases[i].in), err,
                                      sizeof err);
        REQUIRE(v);
        size_t dlen = 0;
        char *d = state_dump_value(v, &dlen);
        REQUIRE(d);
        CHECK(strcmp(d, cases[i].out) == 0 && dlen == strlen(cases[i].out));
        free(d);
        CHECK(state_set(st, "k", v) == 0);
        size_t len = 0;
        char *t = state_value_text(st, "k", &len);
        REQUIRE(t);
        if (strcmp(t, cases[i].out) != 0)
            fprintf(stderr, "case %zu: got %s", i, t);
        CHECK(strcmp(t, cases[i].out) == 0);
        CHECK(len == strlen(t));
        CHECK(state_value_size(st, "k") == (ssize_t)len);
        free(t);
    }
    errno = 0;
    size_t len;
    CHECK(state_value_text(st, "absent", &len) == NULL && errno == ENOENT);
    CHECK(state_value_size(st, "absent") == -ENOENT);
    state_free(st);
}

static void test_parse_value(void)
{
    static const char *const bad[] = {"", "   ", " \n\t\r ", "{", "1 2",
                                      "nul", "'x'", "[1,]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[200] = "";
        json_t *v = state_parse_value(bad[i], strlen(bad[i]), err, sizeof err);
        CHECK(v == NULL);
        CHECK(err[0] != '\0');
        json_decref(v);
    }
    /* Length-bounded: bytes past len are not read. */
    json_t *v = state_parse_value("12garbage", 2, NULL, 0);
    CHECK(v && json_integer_value(v) == 12);
    json_decref(v);
    /* Surrounding whitespace is allowed. */
    v = state_parse_value("\n [true] \n", 10, NULL, 0);
    CHECK(v && json_is_array(v) && json_array_size(v) == 1);
    json_decref(v);
}

/* ---- concurrency ---- */

#define WRITERS 4
#define PER_WRITER 300

static struct state *shared;
static int writers_done;
static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;

static void *writer(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < PER_WRITER; i++) {
        char key[32];
        snprintf(key, sizeof key, "w%d-%d", id, i);
        /* Each value names its own key, so a reader can tell whose it is. */
        json_t *v = json_pack("{s:i,s:i,s:s}", "writer", id, "seq", i, "key",
                              key);
        REQUIRE(v);
        REQUIRE(state_set(shared, key, v) == 0);
        if (i % 3 == 0) {
            /* Overwrite with the same shape: a snapshot sees one or the other. */
            REQUIRE(state_set(shared, key,
                              json_pack("{s:i,s:i,s:s}", "writer", id, "seq",
                                        i, "key", key)) == 0);
        }
    }
    pthread_mutex_lock(&done_lock);
    writers_done++;
    pthread_mutex_unlock(&done_lock);
    return NULL;
}

static int snapshot_ok(const char *buf, size_t len)
{
    json_error_t e;
    json_t *o = json_loadb(buf, len, 0, &e);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return 0;
    }
    int ok = 1;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        int id, seq;
        if (sscanf(k, "w%d-%d", &id, &seq) != 2 ||
            json_integer_value(json_object_get(v, "writer")) != id ||
            json_integer_value(json_object_get(v, "seq")) != seq ||
            !json_is_string(json_object_get(v, "key")) ||
            strcmp(json_string_value(json_object_get(v, "key")), k) != 0)
            ok = 0;
    }
    json_decref(o);
    return ok;
}

static void *reader(void *arg)
{
    int *bad = arg;
    int snapshots = 0;
    for (;;) {
        pthread_mutex_lock(&done_lock);
        int done = writers_done == WRITERS;
        pthread_mutex_unlock(&done_lock);
        size_t len;
        char *b = state_to_bytes(shared, &len);
        REQUIRE(b);
        if (!snapshot_ok(b, len))
            (*bad)++;
        free(b);
        /* state_value_size and state_keys also run alongside the writers. */
        size_t n;
        char **keys = state_keys(shared, &n);
        REQUIRE(keys);
        for (size_t i = 0; i < n; i += 50)
            if (state_value_size(shared, keys[i]) <= 0)
                (*bad)++;
        state_keys_free(keys, n);
        snapshots++;
        if (done && snapshots > 1)
            break;
    }
    return NULL;
}

static void test_threads(void)
{
    shared = state_new();
    REQUIRE(shared);
    pthread_t w[WRITERS], r;
    int bad = 0;
    REQUIRE(pthread_create(&r, NULL, reader, &bad) == 0);
    for (int i = 0; i < WRITERS; i++)
        REQUIRE(pthread_create(&w[i], NULL, writer, (void *)(intptr_t)i) == 0);
    for (int i = 0; i < WRITERS; i++)
        REQUIRE(pthread_join(w[i], NULL) == 0);
    REQUIRE(pthread_join(r, NULL) == 0);
    CHECK(bad == 0);
    CHECK(state_count(shared) == WRITERS * PER_WRITER);
    size_t len;
    char *b = state_to_bytes(shared, &len);
    REQUIRE(b);
    CHECK(snapshot_ok(b, len));
    free(b);
    /* Each writer's keys appear in the order that writer added them. */
    size_t n;
    char **keys = state_keys(shared, &n);
    REQUIRE(keys);
    int next[WRITERS] = {0};
    for (size_t i = 0; i < n; i++) {
        int id, seq;
        REQUIRE(sscanf(keys[i], "w%d-%d", &id, &seq) == 2);
        REQUIRE(id >= 0 && id < WRITERS);
        CHECK(seq == next[id]);
        next[id] = seq + 1;
    }
    state_keys_free(keys, n);
    state_free(shared);
}

int main(void)
{
    test_seed_example();
    test_order();
    test_rename();
    test_from_bytes();
    test_value_text();
    test_parse_value();
    test_threads();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    puts("test_state: ok");
    return 0;
}
