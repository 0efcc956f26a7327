/* The state model: a jansson object (which keeps keys in insertion order,
 * and keeps a key's position when its value is replaced) behind one mutex.
 * Values are treated as immutable once stored, so handing out references
 * (state_get) is safe while other threads replace keys. */
#include "fs/state.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Compact, UTF-8 kept as is (no \u escapes for non-ASCII). */
#define DUMP_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY)
#define LOAD_FLAGS (JSON_ALLOW_NUL)

struct state {
    pthread_mutex_t lock;
    json_t *obj;
};

static void lock(struct state *st)
{
    /* Only fails on misuse (EDEADLK with error-checking mutexes, EINVAL). */
    if (pthread_mutex_lock(&st->lock) != 0)
        abort();
}

static void unlock(struct state *st)
{
    if (pthread_mutex_unlock(&st->lock) != 0)
        abort();
}

/* jansson refuses keys that are not valid UTF-8 and reports that like an
 * allocation failure; tell the two apart so callers can answer EINVAL. */
static int set_failure(const char *key)
{
    json_t *probe = json_string(key);
    if (!probe)
        return -EINVAL;
    json_decref(probe);
    return -ENOMEM;
}

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen > 0)
        snprintf(err, errlen, "%s", msg);
}

struct state *state_new(void)
{
    struct state *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->obj = json_object();
    if (!st->obj) {
        free(st);
        return NULL;
    }
    if (pthread_mutex_init(&st->lock, NULL) != 0) {
        json_decref(st->obj);
        free(st);
        return NULL;
    }
    return st;
}

void state_free(struct state *st)
{
    if (!st)
        return;
    json_decref(st->obj);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

int state_set(struct state *st, const char *key, json_t *value)
{
    if (!value)
        return -ENOMEM; /* a failed json_* constructor upstream */
    lock(st);
    int rc = json_object_set_new(st->obj, key, value);
    unlock(st);
    return rc == 0 ? 0 : set_failure(key);
}

json_t *state_get(struct state *st, const char *key)
{
    lock(st);
    json_t *v = json_incref(json_object_get(st->obj, key));
    unlock(st);
    return v;
}

int state_has(struct state *st, const char *key)
{
    lock(st);
    int has = json_object_get(st->obj, key) != NULL;
    unlock(st);
    return has;
}

int state_remove(struct state *st, const char *key)
{
    lock(st);
    int rc = json_object_del(st->obj, key);
    unlock(st);
    return rc == 0 ? 0 : -ENOENT;
}

int state_rename(struct state *st, const char *from, const char *to)
{
    int rc = 0;
    lock(st);
    json_t *v = json_object_get(st->obj, from);
    if (!v) {
        rc = -ENOENT;
    } else if (strcmp(from, to) != 0) {
        /* Set first: on failure nothing has changed. */
        if (json_object_set(st->obj, to, v) != 0)
            rc = set_failure(to);
        else
            json_object_del(st->obj, from);
    }
    unlock(st);
    return rc;
}

void state_reset(struct state *st)
{
    lock(st);
    json_object_clear(st->obj);
    unlock(st);
}

size_t state_count(struct state *st)
{
    lock(st);
    size_t n = json_object_size(st->obj);
    unlock(st);
    return n;
}

/* Serializes into a malloc'd, NUL-terminated buffer; `nl` appends "\n".
 * json_dumpb with no buffer only measures, so the text is built once. */
static char *dump_alloc(const json_t *v, int nl, size_t *len)
{
    size_t n = json_dumpb(v, NULL, 0, DUMP_FLAGS);
    if (n == 0) {
        errno = ENOMEM;
        return NULL;
    }
    char *buf = malloc(n + 2);
    if (!buf) {
        errno = ENOMEM;
        return NULL;
    }
    if (json_dumpb(v, buf, n, DUMP_FLAGS) != n) {
        free(buf);
        errno = ENOMEM;
        return NULL;
    }
    if (nl)
        buf[n++] = '\n';
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

char *state_to_bytes(struct state *st, size_t *len)
{
    lock(st);
    char *buf = dump_alloc(st->obj, 0, len);
    unlock(st);
    return buf;
}

int state_from_bytes(struct state *st, const char *buf, size_t len, char *err,
                     size_t errlen)
{
    json_error_t jerr;
    json_t *obj = json_loadb(buf, len, LOAD_FLAGS, &jerr);
    if (!obj) {
        set_err(err, errlen, jerr.text);
        return -EINVAL;
    }
    if (!json_is_object(obj)) {
        json_decref(obj);
        set_err(err, errlen, "not a JSON object");
        return -EINVAL;
    }
    /* Parsed outside the lock; the swap itself is one pointer store. */
    lock(st);
    json_t *old = st->obj;
    st->obj = obj;
    unlock(st);
    json_decref(old);
    return 0;
}

char *state_value_text(struct state *st, const char *key, size_t *len)
{
    lock(st);
    json_t *v = json_object_get(st->obj, key);
    char *buf = NULL;
    if (!v)
        errno = ENOENT;
    else
        buf = dump_alloc(v, 1, len);
    unlock(st);
    return buf;
}

ssize_t state_value_size(struct state *st, const char *key)
{
    ssize_t n = -ENOENT;
    lock(st);
    json_t *v = json_object_get(st->obj, key);
    if (v) {
        size_t m = json_dumpb(v, NULL, 0, DUMP_FLAGS);
        n = m == 0 ? -ENOMEM : (ssize_t)m + 1;
    }
    unlock(st);
    return n;
}

char **state_keys(struct state *st, size_t *count)
{
    lock(st);
    size_t n = json_object_size(st->obj);
    /* One extra slot so an empty state still yields a non-NULL array. */
    char **keys = calloc(n + 1, sizeof *keys);
    size_t i = 0;
    if (keys) {
        const char *k;
        json_t *v;
        json_object_foreach(st->obj, k, v) {
            (void)v;
            keys[i] = strdup(k);
            if (!keys[i]) {
                state_keys_free(keys, i);
                keys = NULL;
                break;
            }
            i++;
        }
    }
    unlock(st);
    if (!keys) {
        errno = ENOMEM;
        return NULL;
    }
    *count = i;
    return keys;
}

void state_keys_free(char **keys, size_t count)
{
    if (!keys)
        return;
    for (size_t i = 0; i < count; i++)
        free(keys[i]);
    free(keys);
}

/* Nesting depth of v (a scalar is 1), counted up to `limit + 1` at most. */
static size_t depth_of(const json_t *v, size_t limit)
{
    if (limit == 0)
        return 1;
    size_t deepest = 0;
    if (json_is_object(v)) {
        const char *k;
        json_t *child;
        json_object_foreach((json_t *)v, k, child) {
            size_t d = depth_of(child, limit - 1);
            if (d > deepest)
                deepest = d;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *child;
        json_array_foreach(v, i, child) {
            size_t d = depth_of(child, limit - 1);
            if (d > deepest)
                deepest = d;
        }
    }
    return deepest + 1;
}

json_t *state_parse_value(const char *buf, size_t len, char *err, size_t errlen)
{
    size_t i = 0;
    /* JSON's own whitespace (RFC 8259), not isspace()'s wider set. */
    while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' ||
                       buf[i] == '\r'))
        i++;
    if (i == len) {
        set_err(err, errlen, "empty input: expected one JSON value");
        return NULL;
    }
    json_error_t jerr;
    json_t *v = json_loadb(buf, len, JSON_DECODE_ANY | LOAD_FLAGS, &jerr);
    if (!v) {
        set_err(err, errlen, jerr.text);
        return NULL;
    }
    /* The whole state is one level deeper than a value, and the parser stops
     * at STATE_VALUE_DEPTH_MAX + 1 levels: a deeper value would be accepted
     * here and then make the uploaded state unreadable. */
    if (depth_of(v, STATE_VALUE_DEPTH_MAX) > STATE_VALUE_DEPTH_MAX) {
        json_decref(v);
        set_err(err, errlen, "nested deeper than 2047 levels");
        return NULL;
    }
    return v;
}

char *state_dump_value(const json_t *value, size_t *len)
{
    return dump_alloc(value, 1, len);
}
