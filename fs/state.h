/* The state model (amorphicutils' StateData): an ordered map from key to
 * JSON value, keys in the order they were first added. Every function is
 * safe under concurrent threads; each call is atomic with respect to the
 * others, so a snapshot (state_to_bytes) never mixes two writes. */
#ifndef BOOKMARKFS_FS_STATE_H
#define BOOKMARKFS_FS_STATE_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

struct state;

struct state *state_new(void);
void state_free(struct state *st);

/* add_element: sets key to value (steals the reference, even on failure).
 * An existing key keeps its position. 0 or -ENOMEM; -EINVAL when key is
 * not valid UTF-8 (JSON cannot hold it). */
int state_set(struct state *st, const char *key, json_t *value);

/* New reference to the value of key, or NULL when absent. */
json_t *state_get(struct state *st, const char *key);

/* 1 when key is present, else 0. */
int state_has(struct state *st, const char *key);

/* remove_element: 0 or -ENOENT. */
int state_remove(struct state *st, const char *key);

/* Moves the value of `from` to `to` in one step, replacing `to` if present
 * (keeping to's position), else appending. 0 or -ENOENT / -ENOMEM
 * (-EINVAL when `to` is not valid UTF-8). */
int state_rename(struct state *st, const char *from, const char *to);

/* reset: removes every key. */
void state_reset(struct state *st);

size_t state_count(struct state *st);

/* to_bytes: the whole state as one compact JSON object, malloc'd, with its
 * length in *len (no trailing newline, NUL-terminated). NULL on ENOMEM. */
char *state_to_bytes(struct state *st, size_t *len);

/* from_bytes: replaces every key with those of the JSON object in buf, in
 * one step. -EINVAL (and nothing changed) when buf is not a JSON object;
 * err (may be NULL) receives jansson's reason. */
int state_from_bytes(struct state *st, const char *buf, size_t len, char *err,
                     size_t errlen);

/* The value of key as compact JSON plus "\n", malloc'd, length in *len.
 * NULL with errno ENOENT / ENOMEM. */
char *state_value_text(struct state *st, const char *key, size_t *len);

/* Length of state_value_text(key) without building it, or -ENOENT. */
ssize_t state_value_size(struct state *st, const char *key);

/* Snapshot of the keys in order: a malloc'd array of malloc'd strings. */
char **state_keys(struct state *st, size_t *count);
void state_keys_free(char **keys, size_t count);

/* Deepest nesting of one value (jansson reads documents up to 2048 levels,
 * and the state object adds one). */
#define STATE_VALUE_DEPTH_MAX 2047

/* Parses one JSON value (any type, surrounding whitespace allowed) from buf.
 * Values nested deeper than STATE_VALUE_DEPTH_MAX are refused.
 * Empty or all-whitespace input is NOT valid here (callers decide). Returns
 * a new reference, or NULL with jansson's reason in err. */
json_t *state_parse_value(const char *buf, size_t len, char *err, size_t errlen);

/* Serializes value as compact JSON plus "\n" (same format as
 * state_value_text). */
char *state_dump_value(const json_t *value, size_t *len);

#endif
