/* The state model: each value is kept as its compact JSON text (serialized
 * once, when it is set), each key with its JSON-escaped form, in entries
 * linked in insertion order and indexed by an open-addressing hash table
 * (linear probing, backward-shift deletion). The serialized whole state
 * (to_bytes) is cached and rebuilt lazily after a change by joining the
 * pieces: '{' key ':' value ',' ... '}', the very bytes jansson's
 * json_dumps of the equivalent object gives with DUMP_FLAGS. One mutex
 * guards everything; serializing and parsing happen outside it where the
 * API allows. */
#include "fs/state.h"

/* Documents from this size on give their parse memory back at once. */
#define LARGE_DOCUMENT ((size_t)1 << 20)

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "util/hash.h"
#include "util/textbuf.h"

/* Compact, UTF-8 kept as is (no \u escapes for non-ASCII). */
#define DUMP_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY)
#define LOAD_FLAGS (JSON_ALLOW_NUL)

struct entry {
    struct entry *prev, *next; /* insertion order */
    char *text;                /* the value, compact JSON, NUL-terminated */
    size_t text_len;
    size_t key_len; /* the key at data[0], NUL-terminated */
    size_t esc_len; /* its JSON string form at data[key_len + 1], too */
    uint64_t hash;
    struct timespec mtime; /* its last change (README, "Key files") */
    char data[];
};

/* The entries of one state; moved as a whole by from_bytes and reset. */
struct index {
    struct entry **slots; /* NULL or cap slots, cap a power of two */
    size_t cap;
    size_t count;
    struct entry *head, *tail;
    size_t pieces; /* sum over entries of esc_len + 1 + text_len */
};

struct state {
    pthread_mutex_t lock;
    struct index ix;
    char *body; /* cached to_bytes text when body_ok, NUL-terminated */
    size_t body_cap;
    int body_ok;
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

static void set_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen > 0)
        snprintf(err, errlen, "%s", msg);
}

/* ---- serialization into malloc'd text ---- */

/* Compact JSON of v (one pass) in a malloc'd buffer with room for `extra`
 * more bytes and a NUL; its length in *len. NULL when jansson cannot
 * serialize v or on ENOMEM. */
static char *dump_text(const json_t *v, size_t extra, size_t *len)
{
    struct textbuf b;
    textbuf_init(&b);
    if (json_dump_callback(v, textbuf_put, &b, DUMP_FLAGS) != 0 || b.len == 0) {
        textbuf_free(&b);
        return NULL;
    }
    size_t n = b.len;
    char *out;
    if (textbuf_take(&b, extra, &out) == 0)
        *len = n;
    return out;
}

/* ---- the index ---- */

static uint64_t hash_key(const char *key, size_t len)
{
    return hash_mix(hash_fnv1a(key, len));
}

static size_t piece_len(const struct entry *e)
{
    return e->esc_len + 1 + e->text_len;
}

static const char *entry_esc(const struct entry *e)
{
    return e->data + e->key_len + 1;
}

static void entry_free(struct entry *e)
{
    if (e) {
        free(e->text);
        free(e);
    }
}

/* A new entry for key (no value yet: text NULL). The key's JSON form comes
 * from jansson; `check` validates UTF-8 first (keys from the parser are
 * valid already). 0, -EINVAL (not UTF-8) or -ENOMEM. */
static int entry_new(const char *key, size_t key_len, uint64_t hash, int check,
                     struct entry **out)
{
    *out = NULL;
    json_t *s = check ? json_stringn(key, key_len)
                      : json_stringn_nocheck(key, key_len);
    if (!s) {
        /* jansson reports invalid UTF-8 like an allocation failure; probe
         * again with the check skipped to tell the two apart. */
        if (!check)
            return -ENOMEM;
        json_t *probe = json_stringn_nocheck(key, key_len);
        json_decref(probe);
        return probe ? -EINVAL : -ENOMEM;
    }
    /* Serialized on the stack (spilling to the heap for long keys), then
     * copied into the entry: one allocation for a short key. */
    struct textbuf b;
    textbuf_init(&b);
    int dumped = json_dump_callback(s, textbuf_put, &b, DUMP_FLAGS);
    json_decref(s);
    size_t esc_len = b.len;
    struct entry *e = NULL;
    if (dumped == 0 && esc_len > 0 &&
        key_len <= SIZE_MAX / 2 - sizeof *e - esc_len - 2)
        e = malloc(sizeof *e + key_len + 1 + esc_len + 1);
    if (e) {
        e->prev = e->next = NULL;
        e->text = NULL;
        e->text_len = 0;
        e->key_len = key_len;
        e->esc_len = esc_len;
        e->hash = hash;
        clock_gettime(CLOCK_REALTIME, &e->mtime);
        memcpy(e->data, key, key_len);
        e->data[key_len] = '\0';
        memcpy(e->data + key_len + 1, b.p, esc_len);
        e->data[key_len + 1 + esc_len] = '\0';
    }
    textbuf_free(&b);
    if (!e)
        return -ENOMEM;
    *out = e;
    return 0;
}

static struct entry *ix_lookup(const struct index *ix, const char *key,
                               size_t key_len, uint64_t hash)
{
    if (ix->cap == 0)
        return NULL;
    size_t mask = ix->cap - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        struct entry *e = ix->slots[i];
        if (!e)
            return NULL;
        if (e->hash == hash && e->key_len == key_len &&
            memcmp(e->data, key, key_len) == 0)
            return e;
    }
}

static void slot_put(struct entry **slots, size_t cap, struct entry *e)
{
    size_t mask = cap - 1;
    size_t i = e->hash & mask;
    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = e;
}

/* Room for one more entry (load factor at most 3/4). 0 or -ENOMEM. */
static int ix_reserve(struct index *ix)
{
    if ((ix->count + 1) <= ix->cap / 4 * 3)
        return 0;
    if (ix->cap > SIZE_MAX / 2 / sizeof *ix->slots)
        return -ENOMEM;
    size_t cap = ix->cap ? ix->cap * 2 : 16;
    struct entry **slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (struct entry *e = ix->head; e; e = e->next)
        slot_put(slots, cap, e);
    free(ix->slots);
    ix->slots = slots;
    ix->cap = cap;
    return 0;
}

/* Appends e (with its text) after ix_reserve succeeded. */
static void ix_append(struct index *ix, struct entry *e)
{
    slot_put(ix->slots, ix->cap, e);
    e->prev = ix->tail;
    e->next = NULL;
    if (ix->tail)
        ix->tail->next = e;
    else
        ix->head = e;
    ix->tail = e;
    ix->count++;
    ix->pieces += piece_len(e);
}

/* Takes e out of the table and the order; the caller frees it. */
static void ix_unlink(struct index *ix, struct entry *e)
{
    size_t mask = ix->cap - 1;
    size_t i = e->hash & mask;
    while (ix->slots[i] != e)
        i = (i + 1) & mask;
    /* Backward-shift deletion: move later entries of the probe run into the
     * hole unless their home slot lies cyclically in (hole, j]. */
    for (size_t j = i;;) {
        j = (j + 1) & mask;
        struct entry *m = ix->slots[j];
        if (!m)
            break;
        size_t k = m->hash & mask;
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            ix->slots[i] = m;
            i = j;
        }
    }
    ix->slots[i] = NULL;

    if (e->prev)
        e->prev->next = e->next;
    else
        ix->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        ix->tail = e->prev;
    e->prev = e->next = NULL;
    ix->count--;
    ix->pieces -= piece_len(e);
}

static void ix_free(struct index *ix)
{
    struct entry *e = ix->head;
    while (e) {
        struct entry *next = e->next;
        entry_free(e);
        e = next;
    }
    free(ix->slots);
    memset(ix, 0, sizeof *ix);
}

/* Replaces e's text; returns the old one for the caller to free. */
static char *ix_replace_text(struct index *ix, struct entry *e, char *text,
                             size_t text_len)
{
    char *old = e->text;
    ix->pieces = ix->pieces - e->text_len + text_len;
    e->text = text;
    e->text_len = text_len;
    clock_gettime(CLOCK_REALTIME, &e->mtime);
    return old;
}

/* Length of the to_bytes text: '{' '}', the pieces and n - 1 commas. */
static size_t bytes_len_locked(const struct state *st)
{
    return 2 + st->ix.pieces + (st->ix.count ? st->ix.count - 1 : 0);
}

static void body_drop(struct state *st)
{
    free(st->body);
    st->body = NULL;
    st->body_cap = 0;
    st->body_ok = 0;
}

/* Makes the cached body current. 0 or -ENOMEM. */
static int body_build_locked(struct state *st)
{
    if (st->body_ok)
        return 0;
    size_t n = bytes_len_locked(st);
    /* Reuse the buffer unless it is too small or much too big. */
    if (st->body_cap < n + 1 || st->body_cap / 2 > n + 1 + 4096) {
        body_drop(st);
        st->body = malloc(n + 1);
        if (!st->body)
            return -ENOMEM;
        st->body_cap = n + 1;
    }
    char *p = st->body;
    *p++ = '{';
    for (const struct entry *e = st->ix.head; e; e = e->next) {
        if (e != st->ix.head)
            *p++ = ',';
        memcpy(p, entry_esc(e), e->esc_len);
        p += e->esc_len;
        *p++ = ':';
        memcpy(p, e->text, e->text_len);
        p += e->text_len;
    }
    *p++ = '}';
    *p = '\0';
    st->body_ok = 1;
    return 0;
}

/* ---- the API ---- */

struct state *state_new(void)
{
    struct state *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    if (pthread_mutex_init(&st->lock, NULL) != 0) {
        free(st);
        return NULL;
    }
    return st;
}

void state_free(struct state *st)
{
    if (!st)
        return;
    ix_free(&st->ix);
    free(st->body);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

/* Takes the state's lock and finds key's entry (NULL when absent); the
 * caller unlocks. */
static struct entry *lock_lookup(struct state *st, const char *key)
{
    size_t key_len = strlen(key);
    uint64_t h = hash_key(key, key_len);
    lock(st);
    return ix_lookup(&st->ix, key, key_len, h);
}

/* Sets key to text (owned). The key's entry is made outside the lock when
 * the key turns out to be new; a second look then settles a race. */
static int put_text(struct state *st, const char *key, char *text,
                    size_t text_len)
{
    size_t key_len = strlen(key);
    uint64_t h = hash_key(key, key_len);
    char *old = NULL;

    lock(st);
    struct entry *e = ix_lookup(&st->ix, key, key_len, h);
    if (e) {
        old = ix_replace_text(&st->ix, e, text, text_len);
        st->body_ok = 0;
        unlock(st);
        free(old);
        return 0;
    }
    unlock(st);

    struct entry *fresh;
    int rc = entry_new(key, key_len, h, 1, &fresh);
    if (rc < 0) {
        free(text);
        return rc;
    }
    lock(st);
    e = ix_lookup(&st->ix, key, key_len, h);
    if (e) { /* added meanwhile by another thread */
        old = ix_replace_text(&st->ix, e, text, text_len);
        st->body_ok = 0;
    } else if ((rc = ix_reserve(&st->ix)) == 0) {
        fresh->text = text;
        fresh->text_len = text_len;
        ix_append(&st->ix, fresh);
        fresh = NULL;
        st->body_ok = 0;
    } else {
        old = text;
    }
    unlock(st);
    free(old);
    entry_free(fresh);
    return rc;
}

int state_set(struct state *st, const char *key, json_t *value)
{
    if (!value)
        return -ENOMEM; /* a failed json_* constructor upstream */
    size_t text_len;
    char *text = dump_text(value, 0, &text_len);
    json_decref(value);
    if (!text) {
        /* An invalid key is still reported as such. */
        json_t *probe = json_string(key);
        json_decref(probe);
        return probe ? -ENOMEM : -EINVAL;
    }
    return put_text(st, key, text, text_len);
}

int state_set_text(struct state *st, const char *key, char *text, size_t len)
{
    if (!text)
        return -ENOMEM;
    return put_text(st, key, text, len);
}

json_t *state_get(struct state *st, const char *key)
{
    json_t *v = NULL;
    struct entry *e = lock_lookup(st, key);
    if (e) {
        json_error_t jerr;
        v = json_loadb(e->text, e->text_len, JSON_DECODE_ANY | LOAD_FLAGS,
                       &jerr);
    }
    unlock(st);
    return v;
}

int state_mtime(struct state *st, const char *key, struct timespec *t, int set)
{
    struct entry *e = lock_lookup(st, key);
    if (e && set)
        e->mtime = *t;
    else if (e)
        *t = e->mtime;
    unlock(st);
    return e ? 0 : -ENOENT;
}

int state_has(struct state *st, const char *key)
{
    int has = lock_lookup(st, key) != NULL;
    unlock(st);
    return has;
}

int state_remove(struct state *st, const char *key)
{
    struct entry *e = lock_lookup(st, key);
    if (e) {
        ix_unlink(&st->ix, e);
        st->body_ok = 0;
    }
    unlock(st);
    entry_free(e);
    return e ? 0 : -ENOENT;
}

int state_rename(struct state *st, const char *from, const char *to)
{
    size_t from_len = strlen(from), to_len = strlen(to);
    uint64_t fh = hash_key(from, from_len), th = hash_key(to, to_len);
    /* to's entry, made before the lock; used only when to is new. */
    struct entry *fresh = NULL;
    int fresh_rc = entry_new(to, to_len, th, 1, &fresh);

    int rc = 0;
    struct entry *gone = NULL;
    char *old = NULL;
    lock(st);
    struct entry *e = ix_lookup(&st->ix, from, from_len, fh);
    struct entry *t;
    if (!e) {
        rc = -ENOENT;
    } else if (strcmp(from, to) == 0) {
        rc = 0;
    } else if ((t = ix_lookup(&st->ix, to, to_len, th)) != NULL) {
        /* to keeps its position and takes from's value. */
        old = ix_replace_text(&st->ix, t, e->text, e->text_len);
        t->mtime = e->mtime; /* a rename keeps the mtime */
        ix_unlink(&st->ix, e);
        e->text = NULL;
        gone = e;
        st->body_ok = 0;
    } else if (fresh_rc < 0) {
        rc = fresh_rc;
    } else if ((rc = ix_reserve(&st->ix)) == 0) {
        ix_unlink(&st->ix, e);
        fresh->text = e->text;
        fresh->text_len = e->text_len;
        fresh->mtime = e->mtime;
        e->text = NULL;
        ix_append(&st->ix, fresh);
        fresh = NULL;
        gone = e;
        st->body_ok = 0;
    }
    unlock(st);
    free(old);
    entry_free(gone);
    entry_free(fresh);
    return rc;
}

void state_reset(struct state *st)
{
    lock(st);
    struct index old = st->ix;
    memset(&st->ix, 0, sizeof st->ix);
    body_drop(st);
    unlock(st);
    ix_free(&old);
}

size_t state_count(struct state *st)
{
    lock(st);
    size_t n = st->ix.count;
    unlock(st);
    return n;
}

int state_to_bytes(struct state *st, char **out, size_t *len)
{
    char *buf = NULL;
    lock(st);
    if (body_build_locked(st) == 0) {
        size_t n = bytes_len_locked(st);
        buf = malloc(n + 1);
        if (buf) {
            memcpy(buf, st->body, n + 1);
            if (len)
                *len = n;
        }
    }
    unlock(st);
    if (!buf)
        return -ENOMEM;
    *out = buf;
    return 0;
}

size_t state_bytes_len(struct state *st)
{
    lock(st);
    size_t n = bytes_len_locked(st);
    unlock(st);
    return n;
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
        set_err(err, errlen, STATE_NOT_AN_OBJECT);
        return -EINVAL;
    }
    /* Converted outside the lock; the swap itself is a few stores. The
     * parser refuses NUL in object keys, so strlen is the key's length. */
    struct index nix;
    memset(&nix, 0, sizeof nix);
    int rc = 0;
    for (void *it = json_object_iter(obj); it;
         it = json_object_iter_next(obj, it)) {
        const char *k = json_object_iter_key(it);
        size_t key_len = strlen(k);
        struct entry *e;
        if ((rc = entry_new(k, key_len, hash_key(k, key_len), 0, &e)) < 0)
            break;
        e->text = dump_text(json_object_iter_value(it), 0, &e->text_len);
        if (!e->text || (rc = ix_reserve(&nix)) < 0) {
            entry_free(e);
            rc = -ENOMEM;
            break;
        }
        ix_append(&nix, e);
        /* Done with this value: free its tree now (null is a singleton), so
         * the tree and the entries are not both at their full size. */
        json_object_iter_set_new(obj, it, json_null());
    }
    json_decref(obj);
    if (rc < 0) {
        ix_free(&nix);
        set_err(err, errlen, "out of memory");
        return rc;
    }
    lock(st);
    struct index old = st->ix;
    st->ix = nix;
    body_drop(st);
    unlock(st);
    size_t old_pieces = old.pieces + old.count * sizeof(struct entry);
    ix_free(&old);
    /* A large document's parse tree is freed by now, in many small blocks
     * that malloc would otherwise keep: hand them back to the system. So
     * are the entries of a large state that this one replaced (`{}` written
     * over a million keys). */
    if (len >= LARGE_DOCUMENT || old_pieces >= LARGE_DOCUMENT)
        malloc_trim(0);
    return 0;
}

int state_value_text(struct state *st, const char *key, char **text, size_t *len)
{
    char *buf = NULL;
    int rc = -ENOENT;
    struct entry *e = lock_lookup(st, key);
    if (e) {
        buf = malloc(e->text_len + 2);
        if (buf) {
            memcpy(buf, e->text, e->text_len);
            buf[e->text_len] = '\n';
            buf[e->text_len + 1] = '\0';
            if (len)
                *len = e->text_len + 1;
            rc = 0;
        } else {
            rc = -ENOMEM;
        }
    }
    unlock(st);
    *text = buf;
    return rc;
}

ssize_t state_value_size(struct state *st, const char *key)
{
    ssize_t n = -ENOENT;
    struct entry *e = lock_lookup(st, key);
    if (e)
        n = (ssize_t)e->text_len + 1;
    unlock(st);
    return n;
}

int state_keys(struct state *st, char ***out, size_t *count)
{
    lock(st);
    size_t n = st->ix.count;
    /* One extra slot so an empty state still yields a non-NULL array. */
    char **keys = calloc(n + 1, sizeof *keys);
    size_t i = 0;
    if (keys) {
        for (const struct entry *e = st->ix.head; e; e = e->next) {
            keys[i] = malloc(e->key_len + 1);
            if (!keys[i]) {
                state_keys_free(keys, i);
                keys = NULL;
                break;
            }
            memcpy(keys[i], e->data, e->key_len + 1);
            i++;
        }
    }
    unlock(st);
    if (!keys)
        return -ENOMEM;
    *out = keys;
    *count = i;
    return 0;
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

/* Length of buf without a UTF-8 sequence cut short at its end (a write may
 * end inside a character). */
static size_t whole_utf8(const char *buf, size_t len)
{
    for (size_t back = 1; back <= 3 && back <= len; back++) {
        unsigned char c = (unsigned char)buf[len - back];
        if ((c & 0xC0) == 0x80)
            continue; /* a continuation byte: look further back */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? len - back : len;
    }
    return len;
}

int state_check_prefix(const char *buf, size_t len, int object, json_t **value,
                       char *err, size_t errlen)
{
    *value = NULL;
    size_t i = 0;
    while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' ||
                       buf[i] == '\r'))
        i++;
    if (i == len)
        return 0;
    if (object && buf[i] != '{') {
        set_err(err, errlen, STATE_NOT_AN_OBJECT);
        return -EINVAL;
    }
    size_t whole = whole_utf8(buf, len);
    json_error_t jerr;
    json_t *v = json_loadb(buf, whole, JSON_DECODE_ANY | LOAD_FLAGS, &jerr);
    if (v) {
        if (whole < len || depth_of(v, STATE_VALUE_DEPTH_MAX) > STATE_VALUE_DEPTH_MAX) {
            json_decref(v); /* more to come, or refused at close */
            return 0;
        }
        *value = v;
        return 1;
    }
    enum json_error_code code = json_error_code(&jerr);
    /* A complete value followed by more than whitespace stays so whatever
     * follows; any other error reported before the end of the bytes (an
     * invalid token, byte or escape that more bytes cannot change) too, or
     * at the end when the bytes end with a token that cannot grow (a
     * structural character, a string's closing quote). A token at the very
     * end may still be growing ("tru", "1.", "\u12"). */
    size_t pos = jerr.position >= 0 ? (size_t)jerr.position : whole;
    int last_whole = whole > 0 && whole == len && buf[whole - 1] && strchr("[]{},:\"", buf[whole - 1]);
    if (code == json_error_end_of_input_expected ||
        (code != json_error_premature_end_of_input && code != json_error_out_of_memory &&
         (pos < whole || last_whole))) {
        set_err(err, errlen, jerr.text);
        return -EINVAL;
    }
    return 0;
}

int state_parse_value(const char *buf, size_t len, json_t **value, char *err,
                      size_t errlen)
{
    size_t i = 0;
    /* JSON's own whitespace (RFC 8259), not isspace()'s wider set. */
    while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' ||
                       buf[i] == '\r'))
        i++;
    if (i == len) {
        set_err(err, errlen, "empty input: expected one JSON value");
        return -EINVAL;
    }
    json_error_t jerr;
    json_t *v = json_loadb(buf, len, JSON_DECODE_ANY | LOAD_FLAGS, &jerr);
    if (!v) {
        set_err(err, errlen, jerr.text);
        return json_error_code(&jerr) == json_error_out_of_memory ? -ENOMEM : -EINVAL;
    }
    /* The whole state is one level deeper than a value, and the parser stops
     * at STATE_VALUE_DEPTH_MAX + 1 levels: a deeper value would be accepted
     * here and then make the uploaded state unreadable. */
    if (depth_of(v, STATE_VALUE_DEPTH_MAX) > STATE_VALUE_DEPTH_MAX) {
        json_decref(v);
        set_err(err, errlen, "nested deeper than 2047 levels");
        return -EINVAL;
    }
    *value = v;
    return 0;
}

/* value's compact text, with a "\n" after it when newline is set. */
static int dump_value(const json_t *value, int newline, char **out, size_t *len)
{
    size_t n;
    char *buf = dump_text(value, newline ? 1 : 0, &n);
    if (!buf)
        return -ENOMEM;
    if (newline) {
        buf[n++] = '\n';
        buf[n] = '\0';
    }
    if (len)
        *len = n;
    *out = buf;
    return 0;
}

int state_value_compact(const json_t *value, char **out, size_t *len)
{
    return dump_value(value, 0, out, len);
}

int state_dump_value(const json_t *value, char **out, size_t *len)
{
    return dump_value(value, 1, out, len);
}
