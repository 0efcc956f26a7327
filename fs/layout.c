/* Amorphic's object layout (README, "The tree" and "Semantics"). Keys are
 * handled as raw bytes here; percent-encoding for the wire is the S3 client's
 * business. */
#include "fs/layout.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DATE_TAG "upload_date="
#define SUFFIX_COMPLETED "_completed.json"
#define SUFFIX_RUNNING "_running.json"

static const char *kind_suffix(enum upload_kind kind)
{
    return kind == UPLOAD_COMPLETED ? SUFFIX_COMPLETED : SUFFIX_RUNNING;
}

char *layout_dataset_prefix(const struct layout *l)
{
    char *s;
    if (asprintf(&s, "%s/%s/", l->domain, l->dataset) < 0)
        return NULL;
    return s;
}

char *layout_upload_key(const struct layout *l, const char *job,
                        enum upload_kind kind, int64_t epoch)
{
    char *s;
    if (asprintf(&s, "%s/%s/" DATE_TAG "%" PRId64 "/%s/%s/%s%s", l->domain,
                 l->dataset, epoch, l->user, l->file_type, job,
                 kind_suffix(kind)) < 0)
        return NULL;
    return s;
}

static int has_suffix(const char *s, size_t len, const char *suffix,
                      size_t *stem_len)
{
    size_t n = strlen(suffix);
    if (len < n || memcmp(s + len - n, suffix, n) != 0)
        return 0;
    *stem_len = len - n;
    return 1;
}

/* Finds the first directory segment (not the last segment) of rest that is
 * upload_date=<1+ ASCII digits>. */
static int find_date(const char *rest, const char *last, const char **start,
                     size_t *len)
{
    const size_t tag = strlen(DATE_TAG);
    const char *seg = rest;
    while (seg < last) {
        const char *end = strchr(seg, '/'); /* exists: seg lies before last */
        size_t n = (size_t)(end - seg);
        if (n > tag && memcmp(seg, DATE_TAG, tag) == 0) {
            size_t i = tag;
            while (i < n && seg[i] >= '0' && seg[i] <= '9')
                i++;
            if (i == n) {
                *start = seg + tag;
                *len = n - tag;
                return 1;
            }
        }
        seg = end + 1;
    }
    return 0;
}

int layout_match(const struct layout *l, const char *key, int match_any_kind,
                 char **job, enum upload_kind *kind, const char **date_start,
                 size_t *date_len)
{
    size_t dlen = strlen(l->domain), slen = strlen(l->dataset);
    if (strncmp(key, l->domain, dlen) != 0 || key[dlen] != '/' ||
        strncmp(key + dlen + 1, l->dataset, slen) != 0 ||
        key[dlen + 1 + slen] != '/')
        return 0;
    const char *rest = key + dlen + 1 + slen + 1;

    const char *slash = strrchr(rest, '/');
    if (!slash)
        return 0; /* no room for an upload_date directory */
    const char *last = slash + 1;
    size_t last_len = strlen(last);

    size_t stem = 0;
    enum upload_kind k;
    if (has_suffix(last, last_len, SUFFIX_COMPLETED, &stem))
        k = UPLOAD_COMPLETED;
    else if ((match_any_kind || l->resume_running) &&
             has_suffix(last, last_len, SUFFIX_RUNNING, &stem))
        k = UPLOAD_RUNNING;
    else
        return 0;
    /* A job is a directory name: never empty, ".", or "..". */
    if (stem == 0 || (stem == 1 && last[0] == '.') ||
        (stem == 2 && last[0] == '.' && last[1] == '.'))
        return 0;

    const char *ds;
    size_t dl;
    if (!find_date(rest, last, &ds, &dl))
        return 0;

    char *name = strndup(last, stem);
    if (!name)
        return -ENOMEM;
    *job = name;
    *kind = k;
    *date_start = ds;
    *date_len = dl;
    return 1;
}

static int sign(int v) { return (v > 0) - (v < 0); }

/* Compares two strings of ASCII digits as unbounded non-negative numbers. */
static int digits_cmp(const char *a, const char *b)
{
    a = a ? a : "";
    b = b ? b : "";
    while (*a == '0')
        a++;
    while (*b == '0')
        b++;
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb)
        return la > lb ? 1 : -1;
    return sign(strcmp(a, b));
}

static int str_cmp(const char *a, const char *b)
{
    return sign(strcmp(a ? a : "", b ? b : ""));
}

int layout_candidate_cmp(const struct candidate *a, const struct candidate *b)
{
    int c = digits_cmp(a->upload_date, b->upload_date);
    if (c)
        return c;
    if (a->last_modified_ms != b->last_modified_ms)
        return a->last_modified_ms > b->last_modified_ms ? 1 : -1;
    if (a->kind != b->kind)
        return a->kind == UPLOAD_COMPLETED ? 1 : -1;
    c = str_cmp(a->key, b->key);
    if (c)
        return c;
    return str_cmp(a->bucket, b->bucket);
}

int layout_date_cmp(const char *a, const char *b) { return digits_cmp(a, b); }

void layout_candidate_clear(struct candidate *c)
{
    if (!c)
        return;
    free(c->bucket);
    free(c->key);
    free(c->upload_date);
    memset(c, 0, sizeof *c);
}
