/* A fault-injecting store for the tests: a decorator over any store that
 * passes every call through, counts the calls, and on request fails the
 * Nth list, get, put or delete with a given errno, or holds it (the call
 * waits, before or after it reaches the store underneath, until the test
 * releases it) to build races. Safe from any thread, as store.h asks. */
#ifndef BOOKMARKFS_STORE_FAULTY_H
#define BOOKMARKFS_STORE_FAULTY_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* What a fault applies to: list is list_page and list_from (each page one
 * call), get is get and get_info, put is put and put_if. */
enum faulty_op { FAULTY_LIST, FAULTY_GET, FAULTY_PUT, FAULTY_DEL, FAULTY_OPS };

/* Wraps inner, which it owns from then on (destroyed with it), copying its
 * kind and limits. 0 or -ENOMEM (inner is destroyed then too). */
int faulty_new(struct store *inner, struct store **out);

/* The store underneath (for its own functions, such as store_dir_reads). */
struct store *faulty_inner(struct store *st);

/* Calls fn with the bucket, key and body of every put (and put_if) that
 * goes on to the store underneath, before it does (NULL: none). */
void faulty_watch_puts(struct store *st,
                       void (*fn)(const char *bucket, const char *key, const void *body,
                                  size_t len, void *arg),
                       void *arg);

/* The calls of op so far, failed and held ones included. */
uint64_t faulty_calls(struct store *st, enum faulty_op op);

/* From the nth call of op counted from now (1: the next one), `times`
 * calls (0: every one from then on) fail with err (a negative errno)
 * without reaching the store underneath. Replaces an earlier fault of op;
 * nth 0 removes it. */
void faulty_fail(struct store *st, enum faulty_op op, unsigned nth, unsigned times,
                 int err);

/* faulty_fail with the whole error a store tells (as->err the errno; the
 * S3 code, request id and message as an S3 store would fill them). */
void faulty_fail_as(struct store *st, enum faulty_op op, unsigned nth, unsigned times,
                    const struct store_error *as);

/* As faulty_fail for puts (and put_ifs), but each goes on to the store
 * underneath, whose write lands, and then fails with err (a negative
 * errno) and res->ambiguous set: an answer lost after the write, as a
 * time-out can leave it. */
void faulty_lose(struct store *st, unsigned nth, unsigned times, int err);

/* The nth call of op counted from now (1: the next one) waits until
 * faulty_release: before it reaches the store underneath, or with `after`
 * once the store underneath has answered (its answer is then returned).
 * One hold at a time over all ops. */
void faulty_hold(struct store *st, enum faulty_op op, unsigned nth, int after);

/* Waits until the held call is waiting: 0, or -ETIMEDOUT after timeout_ms. */
int faulty_wait_held(struct store *st, long timeout_ms);

/* Lets the held call go on (and any hold not reached yet is dropped). */
void faulty_release(struct store *st);

#endif
