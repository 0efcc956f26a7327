/* The local journal (README, "The local journal"): every committed change to
 * a job's state is appended here before close() returns, replayed on top of
 * the store at the next mount, and compacted away once the job is uploaded.
 *
 * One directory per mount identity under the cache dir, named by the hex
 * SHA-256 of the identity string; in it `journal` (append-only records),
 * `lock` (flock: one daemon per identity) and `identity` (for humans).
 * Directories are 0700, files 0600.
 *
 * File: an 16-byte header, then records:
 *   u32 payload length (little-endian)
 *   8 bytes: SHA-256(length bytes || payload), first 8 bytes
 *   payload: one compact JSON object
 *     {"seq":N,"op":"set","job":J,"key":K,"value":V}
 *     {"seq":N,"op":"remove","job":J,"key":K}
 *     {"seq":N,"op":"rename","job":J,"key":FROM,"to":TO}
 *     {"seq":N,"op":"replace","job":J,"text":"<the .state.json bytes>"}
 *     {"seq":N,"op":"base","job":J,"bucket":B,"key":K}
 *     {"seq":N,"op":"base","job":J,"text":"<a whole state>"}
 * A job's records begin with a base: the whole state its changes stand on,
 * a stored object (bucket and key) or the text itself (README, "The local
 * journal"). Records written before bases existed have none.
 * A pad (PAD_MAGIC in place of the checksum, fs/journal.c) is dropped
 * records left in place for want of room to copy the rest: reading skips it.
 * seq grows with every record. Reading stops at the first record that is
 * short, fails its checksum, does not parse or breaks the sequence; the file
 * is cut back to the valid prefix and the loss is logged.
 *
 * Thread-safe: one mutex guards the file and its index. Callers that must
 * keep the journal's order equal to the order in which they apply changes
 * hold journal_lock() around both (journal_append_locked then apply). */
#ifndef BOOKMARKFS_FS_JOURNAL_H
#define BOOKMARKFS_FS_JOURNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct journal;

enum journal_op { JOURNAL_SET, JOURNAL_REMOVE, JOURNAL_RENAME, JOURNAL_REPLACE,
                  JOURNAL_BASE };

struct journal_record {
    uint64_t seq;        /* set by append; read back by journal_each */
    enum journal_op op;
    const char *job;
    const char *key;     /* set, remove; rename: the old name */
    const char *to;      /* rename: the new name */
    json_t *value;       /* set, as journal_each reads it back */
    const char *value_text; /* set, to append: the value's compact JSON text */
    size_t value_len;
    const char *text;    /* replace: the bytes written to .state.json; base: the
                          * state, when it is not a stored object */
    size_t text_len;
    const char *bucket;  /* base: the stored object (with key), or NULL */
};

#define JOURNAL_HEADER "bookmarkfs-jnl1\n"
#define JOURNAL_HEADER_LEN 16
#define JOURNAL_RECORD_HEAD 12 /* length + checksum */

/* The directory name of an identity: 64 hex digits plus NUL. */
void journal_identity_hash(const char *identity, char out[65]);

/* Opens (creating as needed) the journal of `identity` under cache_dir, and
 * reads it; a torn or corrupt tail is cut off and logged. 0 with the
 * journal in *out, or a negative errno with one sentence in err: the
 * cause's errno (cache dir not creatable, not ours: -EPERM; journal used by
 * another mount: -EBUSY; I/O error: -EIO; -ENOMEM). */
int journal_open(const char *cache_dir, const char *identity, struct journal **out,
                 char *err, size_t errlen);
void journal_close(struct journal *jn);

/* Path of the journal file (for messages and tests). */
const char *journal_path(const struct journal *jn);

void journal_lock(struct journal *jn);
/* 0 when taken, else EBUSY: another thread holds it. */
int journal_trylock(struct journal *jn);
void journal_unlock(struct journal *jn);

/* Caller holds the lock. Appends one record (write(), no fsync) and sets
 * rec->seq. On failure nothing of the record stays in the file; returns
 * -EINVAL (not representable: a name that is not UTF-8), -ENOMEM, or the
 * write's -errno (-ENOSPC, -EIO, ...). */
int journal_append_locked(struct journal *jn, struct journal_record *rec);

/* Caller holds the lock: takes back the record just appended (when
 * applying it failed). */
int journal_undo_locked(struct journal *jn);

/* Caller holds the lock: seq of the last record, 0 when none yet. */
uint64_t journal_last_seq_locked(const struct journal *jn);

/* fdatasync of the journal: everything appended so far survives power loss. */
int journal_sync(struct journal *jn);

/* Calls fn with each record of `job`, oldest first, under the lock (fn must
 * not call back into the journal). Stops when fn returns non-zero and
 * returns that; -EIO when a record cannot be read back. */
int journal_each(struct journal *jn, const char *job,
                 int (*fn)(const struct journal_record *rec, void *arg), void *arg);

/* Calls fn with the last base record of `job` (under the lock, as
 * journal_each), if it has one; returns 0 when it has none, else fn's
 * result, or -EIO when the record cannot be read back. */
int journal_last_base(struct journal *jn, const char *job,
                      int (*fn)(const struct journal_record *rec, void *arg), void *arg);

/* Drops the records of `job` with seq <= upto: the file is rewritten (temp
 * file, fsync, rename), or cut back in place when they are its tail, or,
 * with no room for the copy, they become pads in place. 0 or -errno (the
 * journal is unchanged then). */
int journal_compact(struct journal *jn, const char *job, uint64_t upto);

/* Like journal_compact, and the job's dropped records give way to `base`
 * (a JOURNAL_BASE record, its seq that of the first dropped record) when
 * records of the job are kept or `always`. *base_seq: the base's seq, 0
 * when none was written. */
int journal_compact_base(struct journal *jn, const char *job, uint64_t upto,
                         const struct journal_record *base, int always,
                         uint64_t *base_seq);

/* Calls fn(job, number of records that are changes, not bases) once for
 * each job with records, in the order of their first record. */
int journal_jobs(struct journal *jn, int (*fn)(const char *job, size_t n, void *arg),
                 void *arg);

/* Number of records of `job`. */
size_t journal_count(struct journal *jn, const char *job);

/* Number of records of `job` that are changes (not bases). */
size_t journal_changes(struct journal *jn, const char *job);
/* The same, with the journal lock held by the caller. */
size_t journal_changes_locked(struct journal *jn, const char *job);

#endif
