/* The Amorphic object layout (README, "The tree" and "Semantics"): upload
 * keys, and which stored objects get_or_create considers and which one wins.
 * Pure functions. */
#ifndef BOOKMARKFS_FS_LAYOUT_H
#define BOOKMARKFS_FS_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

struct layout {
    const char *domain;
    const char *dataset;
    const char *user;
    const char *file_type;
    int resume_running; /* --resume-from=running */
};

enum upload_kind { UPLOAD_RUNNING = 0, UPLOAD_COMPLETED = 1 };

/* "<domain>/<dataset>/", malloc'd. */
char *layout_dataset_prefix(const struct layout *l);

/* "<domain>/<dataset>/upload_date=<epoch>/<user>/<file_type>/<job>_<kind>.json",
 * malloc'd; NULL on ENOMEM. */
char *layout_upload_key(const struct layout *l, const char *job,
                        enum upload_kind kind, int64_t epoch);

/* A stored object that get_or_create may load. */
struct candidate {
    char *bucket;
    char *key;
    char *upload_date;       /* the digits of the upload_date=<digits> segment */
    int64_t last_modified_ms;
    enum upload_kind kind;
};

/* Decides whether `key` is a candidate under this layout: it begins with the
 * dataset prefix, has a segment upload_date=<one or more digits> (the first
 * such segment counts), and its last segment is exactly <job>_completed.json
 * (or <job>_running.json when resume_running). On a match returns 1 and sets
 * *job (malloc'd job name), *kind, *date_start and *date_len (the digits,
 * inside key). Returns 0 when not a candidate, -ENOMEM on failure.
 * match_any_kind=1 accepts both kinds regardless of resume_running (used to
 * list the jobs that have objects in the store). */
int layout_match(const struct layout *l, const char *key, int match_any_kind,
                 char **job, enum upload_kind *kind, const char **date_start,
                 size_t *date_len);

/* Orders candidates: >0 when a is newer than b. Greatest upload_date
 * (numerically, any number of digits), then greatest LastModified, then
 * completed over running, then the greater key and bucket (byte order), so
 * the choice is deterministic. */
int layout_candidate_cmp(const struct candidate *a, const struct candidate *b);

/* Compares two upload_date digit strings numerically: <0, 0, >0. */
int layout_date_cmp(const char *a, const char *b);

void layout_candidate_clear(struct candidate *c);

#endif
