/* util/textbuf: appends across the switch from the inline block to the
 * heap, take() with extra room, and its use as a json_dump_callback sink. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tests/unit/check.h"
#include "util/textbuf.h"

static void test_growth(void)
{
    struct textbuf b;
    textbuf_init(&b);
    char expect[5000];
    /* 5,000 bytes in pieces of 7: crosses the inline size and several
     * doublings; every byte is where it was put. */
    for (size_t i = 0; i < sizeof expect; i++)
        expect[i] = (char)('a' + (i * 7919) % 26);
    for (size_t off = 0; off < sizeof expect; off += 7) {
        size_t n = sizeof expect - off < 7 ? sizeof expect - off : 7;
        REQUIRE(textbuf_put(expect + off, n, &b) == 0);
        CHECK(b.len == off + n);
        CHECK(b.cap > b.len); /* room for a NUL */
    }
    CHECK(b.heap == 1);
    CHECK(memcmp(b.p, expect, sizeof expect) == 0);
    size_t len = b.len;
    char *out;
    REQUIRE(textbuf_take(&b, 3, &out) == 0 && out != NULL);
    CHECK(len == sizeof expect);
    CHECK(memcmp(out, expect, len) == 0 && out[len] == '\0');
    memcpy(out + len, "xyz", 3); /* the extra room is usable (ASan checks) */
    CHECK(b.len == 0 && b.heap == 0);
    free(out);
}

static void test_small_take_and_reserve(void)
{
    struct textbuf b;
    textbuf_init(&b);
    REQUIRE(textbuf_put("ab", 2, &b) == 0);
    CHECK(b.heap == 0); /* still inline */
    char *out;
    REQUIRE(textbuf_take(&b, 0, &out) == 0 && out != NULL);
    CHECK(strcmp(out, "ab") == 0);
    free(out);
    textbuf_init(&b);
    REQUIRE(textbuf_reserve(&b, 100000) == 0);
    CHECK(b.cap >= 100001 && b.len == 0);
    CHECK(textbuf_reserve(&b, (size_t)-1) == -ENOMEM); /* refused, b intact */
    CHECK(b.cap >= 100001);
    textbuf_free(&b);
    CHECK(b.len == 0 && b.p == b.small);
}

static void test_json_sink(void)
{
    json_t *v = json_pack("{s:i, s:[s, n]}", "epoch", 156234987, "files", "a\"b", NULL);
    REQUIRE(v != NULL);
    struct textbuf b;
    textbuf_init(&b);
    REQUIRE(json_dump_callback(v, textbuf_put, &b, JSON_COMPACT) == 0);
    char *want = json_dumps(v, JSON_COMPACT);
    REQUIRE(want != NULL);
    CHECK(b.len == strlen(want) && memcmp(b.p, want, b.len) == 0);
    free(want);
    textbuf_free(&b);
    json_decref(v);
}

/* A secret buffer moves by hand (never realloc), so it can wipe what it
 * leaves: the blocks it gave up are checked through a malloc that hands
 * back the same block (glibc reuses a freed chunk of the same size at
 * once); the bytes checked are past the allocator's own bookkeeping. */
static void test_secret(void)
{
    struct textbuf b;
    textbuf_init_secret(&b);
    char piece[300];
    memset(piece, 'S', sizeof piece);
    REQUIRE(textbuf_put(piece, 100, &b) == 0);
    CHECK(b.heap == 0 && b.secret == 1);
    REQUIRE(textbuf_put(piece, sizeof piece, &b) == 0); /* leaves small[] */
    CHECK(b.heap == 1 && b.len == 400);
    for (size_t i = 0; i < sizeof b.small; i++)
        CHECK(b.small[i] == 0); /* the inline block was wiped */
    char *block = b.p;
    size_t cap = b.cap;
    REQUIRE(textbuf_reserve(&b, cap) == 0); /* moves the heap block */
    CHECK(b.p != block && b.len == 400 && memcmp(b.p, piece, 300) == 0);
    char *again = malloc(cap);
    REQUIRE(again != NULL);
    if (again == block)
        for (size_t i = 64; i < 400; i++)
            CHECK(again[i] == 0);
    free(again);
    char *out;
    REQUIRE(textbuf_take(&b, 0, &out) == 0);
    CHECK(strlen(out) == 400 && out[0] == 'S' && b.len == 0 && b.secret == 1);
    explicit_bzero(out, 400);
    free(out);
    REQUIRE(textbuf_put(piece, 10, &b) == 0);
    textbuf_free(&b);
    for (size_t i = 0; i < sizeof b.small; i++)
        CHECK(b.small[i] == 0);
}

int main(void)
{
    test_secret();
    test_growth();
    test_small_take_and_reserve();
    test_json_sink();
    return failures != 0;
}
