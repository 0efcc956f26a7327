/* The key-file commit path (fs/state.c): the bytes written to MNT/job/KEY
 * are parsed by state_parse_value and, when they are one JSON value,
 * stored with state_set. Properties:
 *  - an input that does not parse (empty or all whitespace included) leaves
 *    the old value in place and says why (err non-empty);
 *  - after a commit, state_value_size == the length of state_value_text,
 *    which is strlen of it (no embedded NUL) and ends in exactly one "\n";
 *  - that text parses back to a value json_equal to the committed one, and
 *    serializes to the same text again (stable);
 *  - the input, used as a file name, is a key exactly when it is valid
 *    UTF-8 (state_set answers -EINVAL otherwise, and changes nothing). */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "fs/state.h"
#include "tests/fuzz/fuzz_check.h"

#define OLD_TEXT "{\"old\":[1,2.5,\"x\"]}\n"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    json_object_seed(1); /* same hash layout on every run */
    return 0;
}

/* Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, <= U+10FFFF. */
static int utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t extra;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            extra = 1, cp = c & 0x1f, min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            extra = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            extra = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i - 1 < extra)
            return 0;
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += extra + 1;
    }
    return 1;
}

static void check_text(struct state *st, const char *key, const json_t *want)
{
    size_t len = 0;
    char *text = NULL;
    FUZZ_CHECK(state_value_text(st, key, &text, &len) == 0);
    ssize_t size = state_value_size(st, key);
    FUZZ_CHECK(size >= 2);
    FUZZ_CHECK((size_t)size == len);
    FUZZ_CHECK(strlen(text) == len);
    FUZZ_CHECK(text[len - 1] == '\n');
    FUZZ_CHECK(text[len - 2] != '\n');

    char err[JSON_ERROR_TEXT_LENGTH];
    json_t *back = NULL;
    FUZZ_CHECK(state_parse_value(text, len, &back, err, sizeof err) == 0);
    FUZZ_CHECK(back != NULL);
    FUZZ_CHECK(json_equal(back, want));
    size_t len2 = 0;
    char *again = NULL;
    FUZZ_CHECK(state_dump_value(back, &again, &len2) == 0);
    FUZZ_CHECK(again != NULL);
    FUZZ_CHECK(len2 == len && memcmp(again, text, len) == 0);
    free(again);
    json_decref(back);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct state *st = state_new();
    FUZZ_CHECK(st != NULL);
    char err[JSON_ERROR_TEXT_LENGTH];
    json_t *old = NULL;
    FUZZ_CHECK(state_parse_value(OLD_TEXT, strlen(OLD_TEXT), &old, err, sizeof err) == 0);
    FUZZ_CHECK(old != NULL);
    FUZZ_CHECK(state_set(st, "k", json_incref(old)) == 0);

    /* The commit: write(data), close(). */
    err[0] = '\0';
    json_t *v = NULL;
    int v_rc = state_parse_value((const char *)data, size, &v, err, sizeof err);
    FUZZ_CHECK(v_rc == 0 ? v != NULL : v_rc == -EINVAL && v == NULL);
    size_t ws = 0;
    while (ws < size && (data[ws] == ' ' || data[ws] == '\t' ||
                         data[ws] == '\n' || data[ws] == '\r'))
        ws++;
    if (ws == size)
        FUZZ_CHECK(v == NULL); /* empty is not a value: callers decide */
    if (!v) {
        FUZZ_CHECK(err[0] != '\0');
        json_t *kept = state_get(st, "k");
        FUZZ_CHECK(kept != NULL && json_equal(kept, old));
        json_decref(kept);
        check_text(st, "k", old);
    } else {
        FUZZ_CHECK(state_set(st, "k", json_incref(v)) == 0);
        FUZZ_CHECK(state_count(st) == 1);
        check_text(st, "k", v);
        json_decref(v);
    }
    json_decref(old);

    /* The input as a file name (at most NAME_MAX bytes, up to a NUL). */
    char name[256];
    size_t n = size < sizeof name - 1 ? size : sizeof name - 1;
    memcpy(name, data, n);
    name[n] = '\0';
    n = strlen(name);
    size_t before = state_count(st);
    int had = state_has(st, name);
    int rc = state_set(st, name, json_null());
    if (utf8_valid((const unsigned char *)name, n)) {
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(state_has(st, name));
        FUZZ_CHECK(state_count(st) == before + (had ? 0 : 1));
        size_t len = 0;
        char *text = NULL;
        FUZZ_CHECK(state_value_text(st, name, &text, &len) == 0 && len == 5 &&
                   strcmp(text, "null\n") == 0);
        free(text);
        char *all = NULL;
        FUZZ_CHECK(state_to_bytes(st, &all, &len) == 0);
        FUZZ_CHECK(all != NULL && strlen(all) == len);
        free(all);
    } else {
        FUZZ_CHECK(rc == -EINVAL);
        FUZZ_CHECK(!state_has(st, name));
        FUZZ_CHECK(state_count(st) == before);
    }
    state_free(st);
    return 0;
}
