/* The state model (amorphicutils' StateData): an ordered map from key to
 * JSON value, keys in the order they were first added. Every function is
 * safe under concurrent threads; each call is atomic with respect to the
 * others, so a snapshot (state_to_bytes) never mixes two writes.
 *
 * Values are stored as their compact JSON text (serialized once, by
 * state_set), and the to_bytes text is cached, so reading sizes and texts
 * is cheap and the state holds no jansson trees. */
#ifndef BOOKMARKFS_FS_STATE_H
#define BOOKMARKFS_FS_STATE_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

struct state;

struct state *state_new(void);
void state_free(struct state *st);

/* add_element: sets key to value (steals the reference, even on failure).
 * An existing key keeps its position. 0 or -ENOMEM (also when jansson
 * cannot serialize value); -EINVAL when key is not valid UTF-8 (JSON
 * cannot hold it). The value is serialized here and not kept: changing it
 * afterwards does not change the state. */
int state_set(struct state *st, const char *key, json_t *value);

/* set_text: like state_set, with the value given as its compact JSON text
 * (from state_value_compact), whose ownership passes to the state. */
int state_set_text(struct state *st, const char *key, char *text, size_t len);

/* The value of key, parsed from its stored text: a new value owned by the
 * caller, or NULL when absent (or on ENOMEM, or when the value is nested
 * deeper than jansson's parser reads; see STATE_VALUE_DEPTH_MAX). */
json_t *state_get(struct state *st, const char *key);

/* 1 when key is present, else 0. */
int state_has(struct state *st, const char *key);

/* A key's mtime: its last change (set, rename keeps it), read into *t, or
 * with set, set from *t (touch). 0 or -ENOENT. */
int state_mtime(struct state *st, const char *key, struct timespec *t, int set);

/* remove_element: 0 or -ENOENT. */
int state_remove(struct state *st, const char *key);

/* Moves the value of `from` to `to` in one step, replacing `to` if present
 * (keeping to's position), else appending. 0 or -ENOENT / -ENOMEM
 * (-EINVAL when `to` is not valid UTF-8). */
int state_rename(struct state *st, const char *from, const char *to);

/* reset: removes every key. */
void state_reset(struct state *st);

size_t state_count(struct state *st);

/* to_bytes: the whole state as one compact JSON object, malloc'd into *out,
 * with its length in *len (no trailing newline, NUL-terminated; len may be
 * NULL). 0 or -ENOMEM. */
int state_to_bytes(struct state *st, char **out, size_t *len);

/* Length of state_to_bytes' text without building it (O(1)). */
size_t state_bytes_len(struct state *st);

/* from_bytes: replaces every key with those of the JSON object in buf, in
 * one step. -EINVAL (and nothing changed) when buf is not a JSON object;
 * err (may be NULL) receives jansson's reason. -ENOMEM (nothing changed)
 * when memory runs out. */
int state_from_bytes(struct state *st, const char *buf, size_t len, char *err,
                     size_t errlen);

/* The value of key as compact JSON plus "\n" into *text (malloc'd, NUL
 * after it), its length in *len (len may be NULL). 0, -ENOENT or -ENOMEM. */
int state_value_text(struct state *st, const char *key, char **text, size_t *len);

/* Length of state_value_text(key) without building it (O(1)), or
 * -ENOENT. */
ssize_t state_value_size(struct state *st, const char *key);

/* Snapshot of the keys in order: a malloc'd array of malloc'd strings in
 * *keys (non-NULL even for an empty state), their number in *count. 0 or
 * -ENOMEM. */
int state_keys(struct state *st, char ***keys, size_t *count);
void state_keys_free(char **keys, size_t count);

/* The reason given for a whole state that is JSON but not an object (the
 * metrics tell it from invalid JSON). */
#define STATE_NOT_AN_OBJECT "not a JSON object"

/* Deepest nesting of one value (jansson reads documents up to 2048 levels,
 * and the state object adds one). */
#define STATE_VALUE_DEPTH_MAX 2047

/* Parses one JSON value (any type, surrounding whitespace allowed) from buf.
 * Values nested deeper than STATE_VALUE_DEPTH_MAX are refused.
 * Empty or all-whitespace input is NOT valid here (callers decide). 0 with
 * a new reference in *value; -EINVAL with jansson's reason in err (may be
 * NULL); -ENOMEM. */
int state_parse_value(const char *buf, size_t len, json_t **value, char *err,
                      size_t errlen);

/* What the first len bytes of a value (or, with object, of a .state.json
 * document) written so far allow: 1 when they are one complete value, which
 * *value then holds (a new reference, depth checked as state_parse_value
 * does); 0 when more bytes may still make them valid (or they are all
 * whitespace); -EINVAL with jansson's reason in err when no bytes that
 * follow can (an invalid token before the end, bytes after a complete
 * value, a first byte that cannot start an object). */
int state_check_prefix(const char *buf, size_t len, int object, json_t **value,
                       char *err, size_t errlen);

/* Serializes value as compact JSON plus "\n" (same format as
 * state_value_text), malloc'd into *out, length in *len (may be NULL).
 * 0 or -ENOMEM. */
int state_dump_value(const json_t *value, char **out, size_t *len);

/* The compact JSON text of value, as the state keeps it (no newline),
 * malloc'd into *out, length in *len (may be NULL). 0 or -ENOMEM. */
int state_value_compact(const json_t *value, char **out, size_t *len);

#endif
