/* Job leases (README, "Leases"): one run at a time per job across mounts
 * and hosts, on the store's conditional writes. A lease is one object per
 * job, <prefix><job>.lease in the LZ bucket, naming its holder; it is
 * created with If-None-Match: *, and renewed, released and taken over with
 * If-Match on the ETag last seen. Expiry is judged by the store's clock
 * (its Date against the object's LastModified), never the local one; a
 * holder counts its lease valid only for --lease-ttl after it sent the
 * renewal the store acknowledged (the monotonic clock). Knows nothing of
 * FUSE or of jobs. */
#ifndef BOOKMARKFS_FS_LEASE_H
#define BOOKMARKFS_FS_LEASE_H

#include <jansson.h>
#include <stddef.h>

#include "store/store.h"

enum lease_mode { LEASE_AUTO = 0, LEASE_ON, LEASE_OFF };

struct lease_config {
    struct store *store;
    const char *bucket;    /* where lease objects live (the LZ bucket) */
    const char *prefix;    /* key prefix of lease objects, "" or ending in '/' */
    long ttl_ms;           /* --lease-ttl */
    long idle_ms;          /* --lease-idle: a held lease unused this long lapses */
    const char *mount;     /* the mount point, to name the holder */
    const char *state_dir; /* where held leases are remembered across a crash
                              (the journal's directory); NULL: nowhere */
};

struct leases;

/* 0 with *out set, or -ENOMEM. Copies what it keeps. */
int leases_new(const struct lease_config *cfg, struct leases **out);
/* Releases every held lease and stops the renewals. */
void leases_free(struct leases *ls);

/* Whether the store honours conditional writes: two racing conditional
 * creates of a probe object must give exactly one winner, and a wrong
 * If-Match must fail. 0 with *honoured 1 or 0 (msg then says how), or a
 * negative errno when the store could not be asked. */
int leases_probe(struct leases *ls, int *honoured, char *msg, size_t msglen);

/* Starts the background renewals. 0 or a negative errno. */
int leases_start(struct leases *ls);

/* Takes (or confirms) this mount's lease on job, before a change.
 * local_changes: the job has changes in this mount not yet uploaded.
 *   0        held; *taken = 1 when taken now (the caller reloads the job
 *            when the store has a newer state), 0 when it was held already
 *   -EBUSY   another holder has it (who names it)
 *   -ESTALE  this mount's lease was taken over while it had local changes
 *            (fenced: who names the new holder); see lease_forget
 *   other    the store failed (who says how) */
int lease_acquire(struct leases *ls, const char *job, int local_changes, int *taken,
                  char *who, size_t wholen);

/* Whether this mount holds job's lease and it is valid (no store request). */
int lease_held(struct leases *ls, const char *job);

/* Releases job's lease (completed, rmdir). Errors are logged. */
void lease_release(struct leases *ls, const char *job);

/* Whether job is fenced (taken over while this mount had local changes). */
int lease_fenced(struct leases *ls, const char *job);

/* Forgets a fenced job's mark: its local changes were dropped. */
void lease_forget(struct leases *ls, const char *job);

/* The lease as the job's read-out shows it (new reference): null when this
 * mount neither holds nor saw one. */
json_t *lease_info(struct leases *ls, const char *job);

/* {"mode", "ttl_seconds", "held": [jobs]} for .status (new reference). */
json_t *leases_status(struct leases *ls);

#endif
