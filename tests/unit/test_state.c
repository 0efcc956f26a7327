/* Unit tests of the state model (fs/state.c): the seed's StateData
 * behaviour, serialization formats, and consistency under threads. */
#include "fs/state.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/check.h"

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
    char *b = NULL;
    REQUIRE(state_to_bytes(st, &b, &len) == 0);
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
    char **keys = NULL;
    REQUIRE(state_keys(st, &keys, &count) == 0);
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
    char **keys = NULL;
    REQUIRE(state_keys(st, &keys, &n) == 0);
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
    char *b = NULL;
    REQUIRE(state_to_bytes(st, &b, &len) == 0);
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
        json_t *v = NULL;
        REQUIRE(state_parse_value(cases[i].in, strlen(cases[i].in), &v, err, sizeof err) == 0);
        REQUIRE(v);
        size_t dlen = 0;
        char *d = NULL;
        REQUIRE(state_dump_value(v, &d, &dlen) == 0);
        REQUIRE(d);
        CHECK(strcmp(d, cases[i].out) == 0 && dlen == strlen(cases[i].out));
        free(d);
        CHECK(state_set(st, "k", v) == 0);
        size_t len = 0;
        char *t = NULL;
        REQUIRE(state_value_text(st, "k", &t, &len) == 0);
        if (strcmp(t, cases[i].out) != 0)
            fprintf(stderr, "case %zu: got %s", i, t);
        CHECK(strcmp(t, cases[i].out) == 0);
        CHECK(len == strlen(t));
        CHECK(state_value_size(st, "k") == (ssize_t)len);
        free(t);
    }
    size_t len;
    char *t = (char *)"";
    CHECK(state_value_text(st, "absent", &t, &len) == -ENOENT && t == NULL);
    CHECK(state_value_size(st, "absent") == -ENOENT);
    state_free(st);
}

static void test_parse_value(void)
{
    static const char *const bad[] = {"", "   ", " \n\t\r ", "{", "1 2",
                                      "nul", "'x'", "[1,]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[200] = "";
        json_t *v = NULL;
        CHECK(state_parse_value(bad[i], strlen(bad[i]), &v, err, sizeof err) == -EINVAL);
        CHECK(v == NULL);
        CHECK(err[0] != '\0');
        json_decref(v);
    }
    /* Length-bounded: bytes past len are not read. */
    json_t *v = NULL;
    CHECK(state_parse_value("12garbage", 2, &v, NULL, 0) == 0);
    CHECK(v && json_integer_value(v) == 12);
    json_decref(v);
    /* Surrounding whitespace is allowed. */
    v = NULL;
    CHECK(state_parse_value("\n [true] \n", 10, &v, NULL, 0) == 0);
    CHECK(v && json_is_array(v) && json_array_size(v) == 1);
    json_decref(v);
}

/* ---- the representation against jansson ---- */

#define JFLAGS (JSON_COMPACT | JSON_ENCODE_ANY)

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t x = rng_state; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

static size_t rnd_below(size_t n) { return (size_t)(rnd() % n); }

/* Keys that need escapes, non-ASCII, and plain ones (some with prefixes in
 * common, so their hashes collide in the low bits now and then). */
static const char *const odd_keys[] = {
    "a", "b", "key", "\xc3\xa9t\xc3\xa9", "\xf0\x9f\x98\x80", "\xe2\x80\xa8",
    "q\"uote", "back\\slash", "new\nline", "tab\there", "\x01\x1f", "\x7f",
    "sl/ash", "sp ace", "\xe6\x97\xa5\xe6\x9c\xac", ".state.json", "-", "",
};

static void rnd_key(char *buf, size_t size)
{
    size_t nodd = sizeof odd_keys / sizeof odd_keys[0];
    size_t pick = rnd_below(nodd + 200);
    if (pick < nodd)
        snprintf(buf, size, "%s", odd_keys[pick]);
    else
        snprintf(buf, size, "k%zu%s", pick - nodd, pick % 3 ? "" : "\xc3\xbc");
}

static json_t *rnd_value(int depth)
{
    static const char *const strs[] = {"", "x", "\xc3\xa9\xe2\x82\xac",
                                       "q\"\\/\b\f\n\r\t", "\x01", "\xf0\x9f\x98\x80"};
    switch (rnd_below(depth > 2 ? 7 : 9)) {
    case 0:
        return json_null();
    case 1:
        return json_boolean(rnd_below(2));
    case 2:
        return json_integer((json_int_t)(rnd() >> rnd_below(64)) *
                            (rnd_below(2) ? 1 : -1));
    case 3: {
        double d = (double)(int64_t)rnd() / (double)(rnd() | 1);
        if (rnd_below(4) == 0)
            d = (double)rnd_below(1000) / 10.0;
        return json_real(d);
    }
    case 4:
        return json_string(strs[rnd_below(sizeof strs / sizeof strs[0])]);
    case 5:
        return json_stringn("a\0b", 3); /* NUL inside: escaped */
    case 6:
        return json_integer((json_int_t)rnd_below(1000));
    case 7: {
        json_t *a = json_array();
        REQUIRE(a);
        for (size_t i = rnd_below(4); i > 0; i--)
            REQUIRE(json_array_append_new(a, rnd_value(depth + 1)) == 0);
        return a;
    }
    default: {
        json_t *o = json_object();
        REQUIRE(o);
        for (size_t i = rnd_below(4); i > 0; i--) {
            char k[64];
            rnd_key(k, sizeof k);
            REQUIRE(json_object_set_new(o, k, rnd_value(depth + 1)) == 0);
        }
        return o;
    }
    }
}

/* The state must serialize exactly like jansson serializes `mirror`, with
 * the same keys, sizes and values. */
static void check_mirror(struct state *st, const json_t *mirror, int full,
                         int line)
{
    char *want = json_dumps(mirror, JFLAGS);
    REQUIRE(want);
    size_t len = 0;
    char *got = NULL;
    REQUIRE(state_to_bytes(st, &got, &len) == 0);
    REQUIRE(got);
    if (strcmp(got, want) != 0 || len != strlen(want)) {
        fprintf(stderr, "line %d: to_bytes\n  got  %s\n  want %s\n", line, got,
                want);
        failures++;
    }
    CHECK(state_bytes_len(st) == strlen(want));
    CHECK(state_count(st) == json_object_size(mirror));
    free(got);
    free(want);
    if (!full)
        return;
    size_t n = 0;
    char **keys = NULL;
    REQUIRE(state_keys(st, &keys, &n) == 0);
    REQUIRE(keys);
    CHECK(n == json_object_size(mirror));
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)mirror, k, v) {
        CHECK(i < n && strcmp(keys[i], k) == 0);
        i++;
        char *vt = json_dumps(v, JFLAGS);
        REQUIRE(vt);
        size_t tlen = 0;
        char *t = NULL;
        REQUIRE(state_value_text(st, k, &t, &tlen) == 0);
        CHECK(tlen == strlen(vt) + 1 && memcmp(t, vt, tlen - 1) == 0 &&
              t[tlen - 1] == '\n' && t[tlen] == '\0');
        CHECK(state_value_size(st, k) == (ssize_t)tlen);
        json_t *back = state_get(st, k);
        CHECK(back && json_equal(back, v));
        json_decref(back);
        CHECK(state_has(st, k) == 1);
        free(t);
        free(vt);
    }
    state_keys_free(keys, n);
}
#define CHECK_MIRROR(st, m, full) check_mirror(st, m, full, __LINE__)

static void test_random_vs_jansson(void)
{
    for (uint64_t seed = 1; seed <= 6; seed++) {
        rng_state = seed * 0x9e3779b97f4a7c15ULL;
        struct state *st = state_new();
        json_t *mirror = json_object();
        REQUIRE(st && mirror);
        for (int step = 0; step < 3000; step++) {
            char k[64], k2[64];
            rnd_key(k, sizeof k);
            size_t op = rnd_below(20);
            if (op < 11) { /* set */
                json_t *v = rnd_value(0);
                REQUIRE(v);
                REQUIRE(json_object_set(mirror, k, v) == 0);
                CHECK(state_set(st, k, v) == 0);
            } else if (op < 15) { /* remove */
                int had = json_object_get(mirror, k) != NULL;
                json_object_del(mirror, k);
                CHECK(state_remove(st, k) == (had ? 0 : -ENOENT));
            } else if (op < 18) { /* rename */
                rnd_key(k2, sizeof k2);
                json_t *v = json_object_get(mirror, k);
                int rc = state_rename(st, k, k2);
                if (!v) {
                    CHECK(rc == -ENOENT);
                } else {
                    CHECK(rc == 0);
                    if (strcmp(k, k2) != 0) {
                        REQUIRE(json_object_set(mirror, k2, v) == 0);
                        json_object_del(mirror, k);
                    }
                }
            } else if (op < 19) { /* get: a copy, not the state's own */
                json_t *got = state_get(st, k);
                json_t *want = json_object_get(mirror, k);
                CHECK((got == NULL) == (want == NULL));
                CHECK(!got || json_equal(got, want));
                if (got && json_is_object(got))
                    json_object_set_new(got, "changed", json_true());
                json_decref(got);
            } else if (rnd_below(30) == 0) { /* rarely: reset */
                state_reset(st);
                json_object_clear(mirror);
            } else { /* from_bytes of the mirror, reordered keys included */
                char *text = json_dumps(mirror, JSON_INDENT(1) | JSON_ENCODE_ANY);
                REQUIRE(text);
                CHECK(state_from_bytes(st, text, strlen(text), NULL, 0) == 0);
                free(text);
            }
            CHECK_MIRROR(st, mirror, step % 50 == 0);
            if (failures > 20)
                break;
        }
        CHECK_MIRROR(st, mirror, 1);
        /* The output loads back into a state unchanged. */
        size_t len;
        char *b = NULL;
        REQUIRE(state_to_bytes(st, &b, &len) == 0);
        REQUIRE(b);
        struct state *st2 = state_new();
        REQUIRE(st2);
        CHECK(state_from_bytes(st2, b, len, NULL, 0) == 0);
        CHECK_MIRROR(st2, mirror, 1);
        free(b);
        state_free(st2);
        state_free(st);
        json_decref(mirror);
    }
}

/* Many keys: the table grows, and removals in the middle of probe runs keep
 * every other key reachable. */
static void test_many_keys(void)
{
    struct state *st = state_new();
    json_t *mirror = json_object();
    REQUIRE(st && mirror);
    char k[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof k, "key-%d", i);
        json_t *v = json_pack("{s:i,s:i}", "p", 1, "i", i);
        REQUIRE(v);
        REQUIRE(json_object_set(mirror, k, v) == 0);
        REQUIRE(state_set(st, k, v) == 0);
    }
    CHECK_MIRROR(st, mirror, 0);
    for (int i = 0; i < 20000; i += 3) {
        snprintf(k, sizeof k, "key-%d", i);
        CHECK(state_remove(st, k) == 0);
        json_object_del(mirror, k);
    }
    for (int i = 0; i < 20000; i++) {
        snprintf(k, sizeof k, "key-%d", i);
        CHECK(state_has(st, k) == (i % 3 != 0));
    }
    /* Re-added keys go to the end. */
    for (int i = 0; i < 300; i += 3) {
        snprintf(k, sizeof k, "key-%d", i);
        REQUIRE(json_object_set_new(mirror, k, json_integer(i)) == 0);
        CHECK(state_set(st, k, json_integer(i)) == 0);
    }
    CHECK_MIRROR(st, mirror, 1);
    state_free(st);
    json_decref(mirror);
}

static void test_sizes_and_from_bytes(void)
{
    struct state *st = state_new();
    REQUIRE(st);
    CHECK(state_bytes_len(st) == 2);
    CHECK(state_set(st, "a", json_integer(1)) == 0);
    CHECK(state_bytes_len(st) == strlen("{\"a\":1}"));
    CHECK(state_set(st, "a", json_string("long")) == 0);
    CHECK(state_bytes_len(st) == strlen("{\"a\":\"long\"}"));
    CHECK(state_set(st, "\xc3\xa9\"", json_real(0.5)) == 0);
    CHECK_BYTES(st, "{\"a\":\"long\",\"\xc3\xa9\\\"\":0.5}");
    CHECK(state_bytes_len(st) == strlen("{\"a\":\"long\",\"\xc3\xa9\\\"\":0.5}"));
    CHECK(state_value_size(st, "\xc3\xa9\"") == 4);
    /* Duplicate keys in the input: the last value, at the first position. */
    const char *dup = "{\"x\":1,\"y\":2,\"x\":3}";
    CHECK(state_from_bytes(st, dup, strlen(dup), NULL, 0) == 0);
    CHECK_BYTES(st, "{\"x\":3,\"y\":2}");
    CHECK_KEYS(st, "x", "y");
    CHECK(state_has(st, "a") == 0);
    CHECK(state_bytes_len(st) == strlen("{\"x\":3,\"y\":2}"));
    /* After the swap the state works as usual. */
    CHECK(state_set(st, "z", json_null()) == 0);
    CHECK(state_rename(st, "x", "w") == 0);
    CHECK_BYTES(st, "{\"y\":2,\"z\":null,\"w\":3}");
    /* Escapes as jansson writes them, in keys and values. */
    const char *esc = "{\"\\u0001\\u001f\\\"\\\\/\\b\\f\\n\\r\\t\\u2028\":"
                      "\"\\u007f\\ud83d\\ude00\"}";
    CHECK(state_from_bytes(st, esc, strlen(esc), NULL, 0) == 0);
    json_error_t e;
    json_t *o = json_loads(esc, 0, &e);
    REQUIRE(o);
    char *want = json_dumps(o, JFLAGS);
    REQUIRE(want);
    CHECK_BYTES(st, want);
    free(want);
    json_decref(o);
    /* A value jansson cannot serialize (not UTF-8) is refused, and nothing
     * changes. */
    json_t *bad = json_stringn_nocheck("\xff", 1);
    REQUIRE(bad);
    CHECK(state_set(st, "k", bad) == -ENOMEM);
    CHECK(state_has(st, "k") == 0);
    CHECK(state_set(st, "\xff", json_stringn_nocheck("\xff", 1)) == -EINVAL);
    state_reset(st);
    CHECK(state_bytes_len(st) == 2);
    CHECK_BYTES(st, "{}");
    /* A value stored, then changed by the caller: the state keeps the old. */
    json_t *v = json_pack("{s:i}", "n", 1);
    REQUIRE(v);
    CHECK(state_set(st, "v", json_incref(v)) == 0);
    json_object_set_new(v, "n", json_integer(2));
    json_decref(v);
    CHECK_BYTES(st, "{\"v\":{\"n\":1}}");
    state_free(st);
}

/* Threads adding the same new keys at once: each key once, in order. */
#define RACERS 4
#define RACE_KEYS 200

static struct state *race;

static void *racer(void *arg)
{
    (void)arg;
    for (int i = 0; i < RACE_KEYS; i++) {
        char key[32];
        snprintf(key, sizeof key, "c%d", i);
        REQUIRE(state_set(race, key, json_integer(i)) == 0);
    }
    return NULL;
}

static void test_race_new_keys(void)
{
    for (int round = 0; round < 20; round++) {
        race = state_new();
        REQUIRE(race);
        pthread_t t[RACERS];
        for (int i = 0; i < RACERS; i++)
            REQUIRE(pthread_create(&t[i], NULL, racer, NULL) == 0);
        for (int i = 0; i < RACERS; i++)
            REQUIRE(pthread_join(t[i], NULL) == 0);
        CHECK(state_count(race) == RACE_KEYS);
        size_t n;
        char **keys = NULL;
        REQUIRE(state_keys(race, &keys, &n) == 0);
        REQUIRE(keys);
        for (size_t i = 0; i < n; i++) {
            char key[32];
            snprintf(key, sizeof key, "c%zu", i);
            CHECK(strcmp(keys[i], key) == 0);
        }
        state_keys_free(keys, n);
        size_t len;
        char *b = NULL;
        REQUIRE(state_to_bytes(race, &b, &len) == 0);
        REQUIRE(b);
        CHECK(len == state_bytes_len(race));
        free(b);
        state_free(race);
    }
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
        char *b = NULL;
        REQUIRE(state_to_bytes(shared, &b, &len) == 0);
        REQUIRE(b);
        if (!snapshot_ok(b, len))
            (*bad)++;
        free(b);
        if (state_bytes_len(shared) < 2)
            (*bad)++;
        /* state_value_size and state_keys also run alongside the writers. */
        size_t n;
        char **keys = NULL;
        REQUIRE(state_keys(shared, &keys, &n) == 0);
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
    char *b = NULL;
    REQUIRE(state_to_bytes(shared, &b, &len) == 0);
    REQUIRE(b);
    CHECK(snapshot_ok(b, len));
    free(b);
    /* Each writer's keys appear in the order that writer added them. */
    size_t n;
    char **keys = NULL;
    REQUIRE(state_keys(shared, &keys, &n) == 0);
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

/* The check at each write (state_check_prefix): no prefix of a valid value
 * is ever refused, wherever a write splits it (inside a token, an escape or
 * a UTF-8 character); the whole value comes back complete; bytes that no
 * continuation can make valid are refused. */
static void test_check_prefix(void)
{
    static const char *const valid[] = {
        "true", "false", "null", "0", "-0", "12345", "1.5e-7", "-2E+10", "\"day2.csv\"",
        "\"a\\\\b\\\"c\\u00e9\\ud83d\\ude00\"", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
        "[1, [true, null], {\"k\": \"v\"}]", "{\"a\": {\"b\": [1, 2.25, \"x\"]}}",
        "  \"padded\"\n", "[]", "{}", "\"\"",
    };
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
        size_t n = strlen(valid[i]);
        for (size_t cut = 0; cut <= n; cut++) {
            json_t *v = NULL;
            char why[160] = "";
            int r = state_check_prefix(valid[i], cut, 0, &v, why, sizeof why);
            if (r < 0)
                fprintf(stderr, "prefix %zu of %s refused: %s\n", cut, valid[i], why);
            CHECK(r >= 0);
            CHECK((r == 1) == (v != NULL));
            if (cut == n)
                CHECK(r == 1);
            json_decref(v);
        }
    }
    static const char *const impossible[] = {
        "day2.csv\n", "x\n", "1 2", "\"a\" \"b\"", "{\"a\":1}}", "01", "tru\n",
        "[1,]", "{\"a\" ,", "{\"a\" \"b\"", "\"\\q\"", "\"a\nb\"", "NaN\n", "nul,", "\xff\"",
    };
    for (size_t i = 0; i < sizeof impossible / sizeof impossible[0]; i++) {
        json_t *v = NULL;
        char why[160] = "";
        int r = state_check_prefix(impossible[i], strlen(impossible[i]), 0, &v, why,
                                   sizeof why);
        if (r != -EINVAL)
            fprintf(stderr, "%s not refused (%d)\n", impossible[i], r);
        CHECK(r == -EINVAL && v == NULL && why[0]);
    }
    /* .state.json: the first byte must open an object. */
    json_t *v = NULL;
    CHECK(state_check_prefix(" [1]", 4, 1, &v, NULL, 0) == -EINVAL);
    CHECK(state_check_prefix(" {\"a\"", 5, 1, &v, NULL, 0) == 0);
    CHECK(state_check_prefix("{\"a\":1}", 7, 1, &v, NULL, 0) == 1 && v);
    json_decref(v);
}

int main(void)
{
    test_seed_example();
    test_order();
    test_rename();
    test_from_bytes();
    test_value_text();
    test_parse_value();
    test_check_prefix();
    test_random_vs_jansson();
    test_many_keys();
    test_sizes_and_from_bytes();
    test_threads();
    test_race_new_keys();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    puts("test_state: ok");
    return 0;
}
