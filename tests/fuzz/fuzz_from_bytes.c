/* state_from_bytes (fs/state.c), the write path of MNT/job/.state.json, on
 * a state that already holds some keys. Properties:
 *  - -EINVAL leaves the state byte for byte as it was (to_bytes before ==
 *    to_bytes after) and says why; nothing else but 0 is answered;
 *  - on success to_bytes parses back to an object json_equal to the input,
 *    with the keys in the same order as state_keys, each key's
 *    state_value_text consistent with state_value_size and with its value;
 *  - a second from_bytes of that output is a fixed point (same bytes). */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <jansson.h>

#include "fs/state.h"
#include "tests/fuzz/fuzz_check.h"

static const char initial[] =
    "{\"a\":1,\"b\":[true,null,-2.5],\"c\":{\"x\":\"y\"},"
    "\"\xc3\xbc\":\"\xc3\xa9\\u0000\",\"e\":\"\"}";

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    json_object_seed(1);
    return 0;
}

static void check_consistent(struct state *st, const char *bytes, size_t len)
{
    json_error_t jerr;
    json_t *obj = json_loadb(bytes, len, JSON_ALLOW_NUL, &jerr);
    FUZZ_CHECK(obj != NULL && json_is_object(obj));
    FUZZ_CHECK(json_object_size(obj) == state_count(st));

    size_t nkeys = 0;
    char **keys = NULL;
    FUZZ_CHECK(state_keys(st, &keys, &nkeys) == 0);
    FUZZ_CHECK(keys != NULL);
    FUZZ_CHECK(nkeys == json_object_size(obj));
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        FUZZ_CHECK(i < nkeys && strcmp(keys[i], k) == 0);
        size_t tlen = 0;
        char *text = NULL;
        FUZZ_CHECK(state_value_text(st, k, &text, &tlen) == 0 && strlen(text) == tlen);
        FUZZ_CHECK(state_value_size(st, k) == (ssize_t)tlen);
        json_t *back = NULL;
        FUZZ_CHECK(state_parse_value(text, tlen, &back, NULL, 0) == 0);
        FUZZ_CHECK(back != NULL && json_equal(back, v));
        json_decref(back);
        free(text);
        i++;
    }
    state_keys_free(keys, nkeys);
    json_decref(obj);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct state *st = state_new();
    FUZZ_CHECK(st != NULL);
    char err[JSON_ERROR_TEXT_LENGTH];
    FUZZ_CHECK(state_from_bytes(st, initial, sizeof initial - 1, err,
                                sizeof err) == 0);
    size_t before_len = 0;
    char *before = NULL;
    FUZZ_CHECK(state_to_bytes(st, &before, &before_len) == 0);
    FUZZ_CHECK(before != NULL);

    err[0] = '\0';
    int rc = state_from_bytes(st, (const char *)data, size, err, sizeof err);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    size_t after_len = 0;
    char *after = NULL;
    FUZZ_CHECK(state_to_bytes(st, &after, &after_len) == 0);
    FUZZ_CHECK(after != NULL && strlen(after) == after_len);

    if (rc == -EINVAL) {
        FUZZ_CHECK(err[0] != '\0');
        FUZZ_CHECK(after_len == before_len &&
                   memcmp(after, before, before_len) == 0);
    } else {
        json_error_t jerr;
        json_t *in = json_loadb((const char *)data, size, JSON_ALLOW_NUL, &jerr);
        FUZZ_CHECK(in != NULL && json_is_object(in));
        json_t *out = json_loadb(after, after_len, JSON_ALLOW_NUL, &jerr);
        FUZZ_CHECK(out != NULL && json_equal(in, out));
        json_decref(in);
        json_decref(out);
        check_consistent(st, after, after_len);

        FUZZ_CHECK(state_from_bytes(st, after, after_len, NULL, 0) == 0);
        size_t again_len = 0;
        char *again = NULL;
        FUZZ_CHECK(state_to_bytes(st, &again, &again_len) == 0);
        FUZZ_CHECK(again != NULL && again_len == after_len &&
                   memcmp(again, after, after_len) == 0);
        free(again);
    }
    free(before);
    free(after);
    state_free(st);
    return 0;
}
