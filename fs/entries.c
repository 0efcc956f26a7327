#include "fs/entries.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fs/history.h"
#include "fs/blocking.h"
#include "fs/metrics.h"
#include "fs/scratch.h"
#include "util/log.h"
#include "util/strmap.h"

/* Serializing or listing more keys than this takes a millisecond or more. */
#define LARGE_STATE 10000

struct entries {
    struct jobs *jobs;
    struct history *history; /* MNT/<job>/.history/ */
    uid_t uid;
    gid_t gid;
    struct timespec mounted;
    char **scratch; /* --scratch: NULL-terminated fnmatch(3) patterns */
    /* Open files: a release may never come (the request loop ends first). */
    pthread_mutex_t open_lock;
    struct entries_handle **open; /* each knows its slot */
    size_t nopen, open_cap;
};

/* What a name inside a job directory is. */
enum etype { E_KEY, E_SCRATCH, E_STATE, E_RUNNING, E_COMPLETED, E_STATUS, E_READOUT };

static const char STATE_FILE[] = ".state.json";
/* The root's read-only status file (observability). */
static const char STATUS_FILE[] = ".status";

/* The temp, backup and probe files tools make beside the file they edit
 * (--scratch; README, "Scratch files"). */
static int is_tool_scratch(const struct entries *e, const char *name)
{
    char **pat = e->scratch;
    for (size_t i = 0; pat && pat[i]; i++)
        if (fnmatch(pat[i], name, 0) == 0)
            return 1;
    return 0;
}

static enum etype classify(const struct entries *e, const char *name)
{
    if (strcmp(name, "running") == 0)
        return E_RUNNING;
    if (strcmp(name, "completed") == 0)
        return E_COMPLETED;
    if (strcmp(name, STATE_FILE) == 0)
        return E_STATE;
    if (strcmp(name, STATUS_FILE) == 0)
        return E_READOUT; /* the job's read-out */
    return name[0] == '.' || is_tool_scratch(e, name) ? E_SCRATCH : E_KEY;
}

static void patterns_free(char **pat)
{
    for (size_t i = 0; pat && pat[i]; i++)
        free(pat[i]);
    free(pat);
}

/* Splits a '/'-separated pattern list (--scratch). */
static int patterns_split(const char *list, char ***out)
{
    size_t n = 1;
    for (const char *c = list; *c; c++)
        n += *c == '/';
    char **pat = calloc(n + 1, sizeof *pat);
    if (!pat)
        return -ENOMEM;
    size_t k = 0;
    for (const char *c = list; *c;) {
        size_t len = strcspn(c, "/");
        if (len && !(pat[k++] = strndup(c, len))) {
            patterns_free(pat);
            return -ENOMEM;
        }
        c += len;
        if (*c)
            c++;
    }
    *out = pat;
    return 0;
}

int entries_new(struct jobs *jobs, uid_t uid, gid_t gid, const char *scratch_list,
                struct entries **out)
{
    struct entries *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    e->jobs = jobs;
    e->uid = uid;
    e->gid = gid;
    clock_gettime(CLOCK_REALTIME, &e->mounted);
    int rc = patterns_split(scratch_list ? scratch_list : "", &e->scratch);
    if (rc == 0)
        rc = history_new(jobs->store, jobs->index, &e->history);
    if (rc == 0 && pthread_mutex_init(&e->open_lock, NULL) != 0)
        rc = -ENOMEM;
    if (rc < 0) {
        history_free(e->history);
        patterns_free(e->scratch);
        free(e);
        return rc;
    }
    *out = e;
    return 0;
}

static int is_control(enum etype t) { return t == E_RUNNING || t == E_COMPLETED; }

static enum upload_kind control_kind(enum etype t)
{
    return t == E_COMPLETED ? UPLOAD_COMPLETED : UPLOAD_RUNNING;
}

/* running, completed and .state.json are always there, but can be removed
 * (rm -rf of a job, tar -x replacing them): then they are absent from the
 * job until a create (O_CREAT) or a rename brings them back; nothing else
 * changes (README, "Control files"). */
static int is_virtual(enum etype t) { return is_control(t) || t == E_STATE; }

static int is_hidden(struct job *job, enum etype t)
{
    pthread_mutex_lock(&job->lock);
    int h = (job->hidden >> t) & 1;
    pthread_mutex_unlock(&job->lock);
    return h;
}

/* Sets or clears; returns whether it was hidden. */
static int set_hidden(struct job *job, enum etype t, int on)
{
    pthread_mutex_lock(&job->lock);
    int was = (job->hidden >> t) & 1;
    if (on)
        job->hidden |= 1u << t;
    else
        job->hidden &= ~(1u << t);
    pthread_mutex_unlock(&job->lock);
    return was;
}

/* A path split into its job and entry: depth 0 is the root, 1 a job, 2 an
 * entry of a job. */
struct fspath {
    int depth;
    char job[256];
    char name[256];
};

static int parse_path(const char *path, struct fspath *p)
{
    p->depth = 0;
    p->job[0] = p->name[0] = '\0';
    const char *s = path;
    while (*s == '/')
        s++;
    if (!*s)
        return 0;
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (n > 255)
        return -ENAMETOOLONG;
    memcpy(p->job, s, n);
    p->job[n] = '\0';
    p->depth = 1;
    if (!slash)
        return 0;
    s = slash + 1;
    if (!*s)
        return 0;
    slash = strchr(s, '/');
    n = slash ? (size_t)(slash - s) : strlen(s);
    if (n > 255)
        return -ENAMETOOLONG;
    if (slash && slash[1])
        return -ENOENT; /* nothing lives below an entry */
    memcpy(p->name, s, n);
    p->name[n] = '\0';
    p->depth = 2;
    return 0;
}

/* Only the mount's owner (and root) changes anything; with -o allow_other
 * others may read. This is what the modes shown (0644, 0755) say; checking
 * it here spares the kernel's default_permissions, which would fetch the
 * attributes of every path component on every open. */
static int may_change(const struct entries *e, uid_t caller)
{
    return caller == 0 || caller == e->uid;
}

/* parse_path for the operations that change something. */
static int parse_change(const struct entries *e, uid_t caller, const char *path,
                        struct fspath *p)
{
    return may_change(e, caller) ? parse_path(path, p) : -EACCES;
}

static int is_status(const struct fspath *p)
{
    return p->depth == 1 && strcmp(p->job, STATUS_FILE) == 0;
}

/* Names go into JSON (keys) and S3 object keys: both need UTF-8. */
static int is_valid_utf8(const char *name)
{
    json_t *s = json_string(name);
    json_decref(s);
    return s != NULL;
}

static int get_job(struct entries *e, const char *name, struct job **job)
{
    if (strcmp(name, STATUS_FILE) == 0)
        return -ENOTDIR; /* a file, not a job */
    if (name[0] == '.')
        return -ENOENT; /* dot-names at the root are not jobs (README, "Jobs") */
    return jobs_get(e->jobs, name, 0, job);
}

static void put_job(struct entries *e, struct job *job) { jobs_unref(e->jobs, job); }

/* The first change to a job takes this mount's lease on it (README,
 * "Leases"): EBUSY when another mount holds it. */
static int claim(struct entries *e, struct job *job) { return jobs_claim(e->jobs, job); }

/* ---- scratch files (fs/scratch.h) */

/* Puts r into the job's map (the map takes a reference it already has),
 * dropping whatever was there. Caller holds the job lock. */
static int scratch_install(struct job *job, const char *name, struct scratch *r)
{
    void *old = NULL;
    int rc = strmap_put(job->scratch, name, r, &old);
    if (rc == 0)
        scratch_unref(old);
    return rc;
}

/* A copy of the scratch file's bytes into *text (malloc'd, room for one
 * byte more); with ref, a reference to it too (scratch_unref it), taken
 * even when the copy fails. 0, -ENOENT or -ENOMEM. */
static int scratch_copy(struct job *job, const char *name, char **text, size_t *len,
                        struct scratch **ref)
{
    pthread_mutex_lock(&job->lock);
    struct scratch *r = strmap_get(job->scratch, name);
    int rc = r ? 0 : -ENOENT;
    if (r && ref) {
        r->refs++;
        *ref = r;
    }
    if (r && (*text = malloc(r->len + 1))) {
        memcpy(*text, r->data ? r->data : "", r->len);
        *len = r->len;
    } else if (r) {
        rc = -ENOMEM;
    }
    pthread_mutex_unlock(&job->lock);
    return rc;
}

/* ---- open files */

struct entries_handle {
    size_t slot; /* in e->open, every open file, for the shutdown */
    struct entries *e;
    enum etype type;
    struct job *job;
    char *name;
    pthread_mutex_t lock;
    char *buf; /* keys and .state.json: the bytes while open */
    size_t len, cap;
    int dirty;
    int append;
    int created;     /* a new key, pending until committed or released */
    int failed;      /* a commit of this new key failed: it never existed */
    int sequential;  /* written only at its end since it was empty */
    int refused;     /* a write made the bytes impossible as JSON */
    struct timespec made; /* a close of this open made the new key null then */
    json_t *parsed;  /* the bytes as one complete value, while unchanged */
    struct scratch *scratch;
};

/* The most bytes an entry of type t may hold (README, "Bad input"). */
static size_t value_max(enum etype t)
{
    return t == E_STATE ? ENTRIES_STATE_TEXT_MAX : ENTRIES_KEY_VALUE_MAX;
}

static int bytes_write(char **data, size_t *len, size_t *cap, const char *src,
                       size_t size, off_t off, size_t limit)
{
    if (off < 0)
        return -EINVAL;
    if ((uint64_t)off + size > limit)
        return -EFBIG;
    size_t end = (size_t)off + size;
    if (end > *cap) {
        size_t c = *cap ? *cap : 256;
        while (c < end)
            c *= 2;
        char *b = realloc(*data, c);
        if (!b)
            return -ENOMEM;
        *data = b;
        *cap = c;
    }
    if ((size_t)off > *len)
        memset(*data + *len, 0, (size_t)off - *len);
    memcpy(*data + off, src, size);
    if (end > *len)
        *len = end;
    return (int)size;
}

/* Sets the length to size, zero-filling what it adds (truncate(2)). */
static int bytes_resize(char **data, size_t *len, size_t *cap, off_t size, size_t limit)
{
    if ((size_t)size <= *len) {
        *len = (size_t)size;
        return 0;
    }
    char zero = 0;
    int rc = bytes_write(data, len, cap, &zero, 1, size - 1, limit);
    return rc < 0 ? rc : 0;
}

static int commit_key(struct entries *e, struct job *job, const char *key,
                      const char *buf, size_t len, json_t *parsed);
static int commit_created(struct entries_handle *h);

/* Caller holds h->lock. */
static void pending_leave(struct entries_handle *h)
{
    if (!h->created)
        return;
    h->created = 0;
    pthread_mutex_lock(&h->job->lock);
    intptr_t n = (intptr_t)strmap_get(h->job->pending, h->name);
    if (n > 1)
        strmap_put(h->job->pending, h->name, (void *)(n - 1), NULL);
    else if (n == 1)
        strmap_remove(h->job->pending, h->name);
    pthread_mutex_unlock(&h->job->lock);
}

/* Takes the job reference. */
static int handle_new(struct entries *e, enum etype type, struct job *job,
                      const char *name, struct entries_handle **out)
{
    char *copy = strdup(name);
    struct entries_handle *h = copy ? calloc(1, sizeof *h) : NULL;
    if (!h || pthread_mutex_init(&h->lock, NULL) != 0) {
        free(copy);
        free(h);
        return -ENOMEM;
    }
    h->name = copy;
    h->type = type;
    h->e = e;
    h->job = job;
    pthread_mutex_lock(&e->open_lock);
    if (e->nopen == e->open_cap) {
        size_t cap = e->open_cap ? e->open_cap * 2 : 64;
        struct entries_handle **v = realloc(e->open, cap * sizeof *v);
        if (v) {
            e->open = v;
            e->open_cap = cap;
        }
    }
    int added = e->nopen < e->open_cap;
    if (added) {
        h->slot = e->nopen;
        e->open[e->nopen++] = h;
    }
    pthread_mutex_unlock(&e->open_lock);
    if (!added) {
        pthread_mutex_destroy(&h->lock);
        free(h->name);
        free(h);
        return -ENOMEM;
    }
    *out = h;
    return 0;
}

void entries_close_all(struct entries *e)
{
    for (;;) {
        pthread_mutex_lock(&e->open_lock);
        struct entries_handle *h = e->nopen ? e->open[e->nopen - 1] : NULL;
        pthread_mutex_unlock(&e->open_lock);
        if (!h)
            break;
        entries_close(h); /* as its release would have */
    }
}

void entries_free(struct entries *e)
{
    if (!e)
        return;
    entries_close_all(e);
    free(e->open);
    pthread_mutex_destroy(&e->open_lock);
    history_free(e->history);
    patterns_free(e->scratch);
    free(e);
}

void entries_close(struct entries_handle *h)
{
    if (!h)
        return;
    struct entries *e = h->e;
    pthread_mutex_lock(&e->open_lock);
    struct entries_handle *last = e->open[--e->nopen];
    e->open[h->slot] = last; /* the last one takes its slot */
    last->slot = h->slot;
    pthread_mutex_unlock(&e->open_lock);
    /* A new key that no close or fsync committed (the loop ended first)
     * holds null, as its close would have made it. */
    if (h->created && !h->failed && commit_created(h) != 0)
        log_error("job '%s' key '%s': cannot create it", h->job->name, h->name);
    if (h->scratch) {
        pthread_mutex_lock(&h->job->lock);
        scratch_unref(h->scratch);
        pthread_mutex_unlock(&h->job->lock);
    }
    pending_leave(h);
    if (h->job)
        put_job(e, h->job);
    pthread_mutex_destroy(&h->lock);
    json_decref(h->parsed);
    free(h->name);
    free(h->buf);
    free(h);
}

/* ---- commits: what close() of a key or .state.json does */

/* A change the journal refused (jobs_set_key and the like): -ENOSPC for a full
 * disk, -EIO for the rest (fs/jobs.h). */
static int journal_refused(int rc) { return rc == -EIO || rc == -ENOSPC; }

static int all_space(const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r')
            return 0;
    return 1;
}

/* A value refused (README, "Errors a user can see"): logged, and counted
 * in .status with the job, key and reason. */
static void refused(struct entries *e, struct job *job, const char *key, const char *why)
{
    log_error("job '%s' key '%s': not one JSON value (%s); old value kept", job->name,
              key, why);
    jobs_note_refused(e->jobs, job->name, key, why);
}

/* The same for a .state.json written that is not a JSON object. */
static void state_refused(struct entries *e, struct job *job, const char *why)
{
    log_error("job '%s' .state.json: not a JSON object (%s); state kept", job->name,
              why);
    jobs_note_refused(e->jobs, job->name, STATE_FILE, why);
}

/* parsed: the value already parsed from buf (stolen), or NULL. */
static int commit_key(struct entries *e, struct job *job, const char *key,
                      const char *buf, size_t len, json_t *parsed)
{
    json_t *v = parsed;
    if (v) {
        /* parsed at the write that completed it */
    } else if (all_space(buf, len)) {
        v = json_null(); /* closed with no content */
    } else {
        char why[160];
        int rc = state_parse_value(buf, len, &v, why, sizeof why);
        if (rc == -EINVAL)
            refused(e, job, key, why);
        if (rc < 0)
            return rc;
    }
    int rc = jobs_set_key(e->jobs, job, key, v); /* journaled, then applied */
    if (rc == 0)
        jobs_key_written(job, key); /* and touched */
    else if (journal_refused(rc))
        log_error("job '%s' key '%s': the journal cannot take the change; old value "
                  "kept",
                  job->name, key);
    if (journal_refused(rc))
        metrics_refused(job->name, METRICS_REFUSED_JOURNAL);
    return rc;
}

/* A key created and closed (or fsynced) with no content holds null from
 * that close on (README, "Key files"), unless a writer gave it a value
 * meanwhile. It stops being pending either way. */
static int commit_created(struct entries_handle *h)
{
    int rc = jobs_create_key(h->e->jobs, h->job, h->name, &h->made);
    if (rc == 0)
        jobs_key_written(h->job, h->name); /* and touched */
    else
        log_error("job '%s' key '%s': the journal cannot take the new key; it is not "
                  "created",
                  h->job->name, h->name);
    return rc;
}

/* The first value of a key that a close of this open created as null (a
 * shell's redirection closes a duplicate before it writes) is refused: the
 * key does not exist, as for any new key whose first value is refused
 * (README, "Key files"), unless another writer changed it meanwhile. */
static void uncreate(struct entries_handle *h)
{
    if (h->made.tv_sec == 0 && h->made.tv_nsec == 0)
        return;
    if (jobs_uncreate_key(h->e->jobs, h->job, h->name, &h->made) < 0)
        log_error("job '%s' key '%s': the journal cannot take back the new key; it "
                  "stays null",
                  h->job->name, h->name);
    h->made = (struct timespec){0};
}

static int commit_state(struct entries *e, struct job *job, const char *buf, size_t len)
{
    char why[160] = "";
    int rc = jobs_replace_state(e->jobs, job, buf, len, why, sizeof why);
    if (journal_refused(rc))
        log_error("job '%s' .state.json: the journal cannot take the change; state "
                  "kept",
                  job->name);
    if (rc == -EINVAL)
        state_refused(e, job, why);
    if (journal_refused(rc))
        metrics_refused(job->name, METRICS_REFUSED_JOURNAL);
    if (rc == 0)
        jobs_touch(job);
    return rc;
}

/* ---- attributes */

static void fill_dir(const struct entries *e, struct stat *st, const struct timespec *t)
{
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    st->st_uid = e->uid;
    st->st_gid = e->gid;
    st->st_mtim = st->st_ctim = st->st_atim = *t;
}

static void fill_file(const struct entries *e, struct stat *st, off_t size,
                      const struct timespec *t)
{
    st->st_mode = S_IFREG | 0644;
    st->st_nlink = 1;
    st->st_size = size;
    st->st_blksize = 4096;
    st->st_blocks = (size + 511) / 512;
    st->st_uid = e->uid;
    st->st_gid = e->gid;
    st->st_mtim = st->st_ctim = st->st_atim = *t;
}

/* A key created and not yet closed reads as null (the value it gets when
 * closed with no content), but is not part of the state until then. */
static const char PENDING_TEXT[] = "null\n";

static int is_key_pending(struct job *job, const char *name)
{
    pthread_mutex_lock(&job->lock);
    int pending = strmap_get(job->pending, name) != NULL;
    pthread_mutex_unlock(&job->lock);
    return pending;
}

/* The text of a key, or of a pending key: *text malloc'd. */
static int key_text(struct job *job, const char *name, char **text, size_t *len)
{
    int rc = state_value_text(job->state, name, text, len);
    if (rc != -ENOENT)
        return rc;
    if (!is_key_pending(job, name))
        return -ENOENT;
    if (!(*text = strdup(PENDING_TEXT)))
        return -ENOMEM;
    *len = strlen(*text);
    return 0;
}

/* The size of an entry into *size: 0, -ENOENT or -ENOMEM. Caller holds a
 * job reference. */
static int entry_size(struct entries *e, struct job *job, const char *name, enum etype t,
                      off_t *size)
{
    size_t len = 0;
    *size = 0;
    switch (t) {
    case E_STATUS:
        return -ENOENT; /* never inside a job */
    case E_READOUT: {
        char *text = jobs_readout_text(e->jobs, job, &len);
        if (!text)
            return -ENOMEM;
        free(text);
        *size = (off_t)len;
        return 0;
    }
    case E_RUNNING:
    case E_COMPLETED:
        /* Read empty: a copy of a job holds empty control files, and
         * copying them back uploads nothing. */
        return is_hidden(job, t) ? -ENOENT : 0;
    case E_STATE:
        if (is_hidden(job, t))
            return -ENOENT;
        *size = (off_t)state_bytes_len(job->state) + 1; /* plus the newline */
        return 0;
    case E_SCRATCH: {
        pthread_mutex_lock(&job->lock);
        struct scratch *r = strmap_get(job->scratch, name);
        if (r)
            *size = (off_t)r->len;
        pthread_mutex_unlock(&job->lock);
        return r ? 0 : -ENOENT;
    }
    case E_KEY: {
        ssize_t n = state_value_size(job->state, name);
        if (n >= 0 || !is_key_pending(job, name)) {
            *size = n >= 0 ? (off_t)n : 0;
            return n >= 0 ? 0 : -ENOENT;
        }
        *size = (off_t)strlen(PENDING_TEXT);
        return 0;
    }
    }
    return -ENOENT;
}

/* Does `name` exist in the job? */
static int entry_exists(struct entries *e, struct job *job, const char *name)
{
    off_t size;
    return entry_size(e, job, name, classify(e, name), &size) == 0;
}

/* ---- .history: the job's stored states, read-only (README, "History and
 * rewind"; fs/history.h). Not listed in the job: no copy of the job
 * carries it. */

/* kind: 1, the directory; 2, its entry `entry` (history_path). */
static int histdir_getattr(struct entries *e, const char *jobname, const char *entry,
                           int kind, struct stat *st)
{
    struct job *job;
    int rc = get_job(e, jobname, &job);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&job->lock);
    struct timespec t = job->mtime;
    pthread_mutex_unlock(&job->lock);
    put_job(e, job);
    if (kind == 1) {
        fill_dir(e, st, &t);
        st->st_mode = S_IFDIR | 0555;
        return 0;
    }
    struct index_object o;
    if ((rc = history_find(e->history, jobname, entry, &o)) < 0)
        return rc;
    t.tv_sec = (time_t)(o.c.last_modified_ms / 1000);
    t.tv_nsec = (long)(o.c.last_modified_ms % 1000) * 1000000;
    fill_file(e, st, (off_t)o.size, &t);
    st->st_mode = S_IFREG | 0444;
    layout_candidate_clear(&o.c);
    return 0;
}

/* Upload order (the order of layout_candidate_cmp), which is also the names'. */
static int histdir_list(struct entries *e, const char *jobname, struct strlist *names)
{
    struct job *job;
    int rc = get_job(e, jobname, &job);
    if (rc < 0)
        return rc;
    put_job(e, job);
    if ((rc = strlist_add(names, ".")) < 0 || (rc = strlist_add(names, "..")) < 0)
        return rc;
    return history_list(e->history, jobname, names);
}

/* Read-only: the object's body, fetched at open. */
static int histdir_open(struct entries *e, const char *jobname, const char *entry,
                        int flags, struct entries_handle **out)
{
    if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))
        return -EROFS;
    struct job *job;
    int rc = get_job(e, jobname, &job);
    if (rc < 0)
        return rc;
    struct index_object o;
    if ((rc = history_find(e->history, jobname, entry, &o)) < 0) {
        put_job(e, job);
        return rc;
    }
    struct entries_handle *h;
    if ((rc = handle_new(e, E_READOUT, job, entry, &h)) < 0) { /* read-only bytes */
        layout_candidate_clear(&o.c);
        put_job(e, job);
        return rc;
    }
    size_t len = 0;
    rc = history_fetch(e->history, jobname, &o, &h->buf, &len);
    layout_candidate_clear(&o.c);
    if (rc < 0) {
        entries_close(h);
        return rc;
    }
    h->len = h->cap = len;
    *out = h;
    return 0;
}

/* What an operation that would change .history or an entry of it gets. */
static int history_refuses(const char *path, int dir_errno)
{
    char job[256], entry[256];
    int k = history_path(path, job, entry);
    if (k < 0)
        return k;
    return k == 1 ? dir_errno : k == 2 ? -EROFS : 0;
}

/* The prologue of the operations that change an entry: what .history/
 * refuses (dir_errno for the directory itself), EACCES for others than the
 * owner, then the path. */
static int change_prologue(const struct entries *e, uid_t caller, const char *path,
                           int dir_errno, struct fspath *p)
{
    int hr = history_refuses(path, dir_errno);
    if (hr)
        return hr;
    if (!may_change(e, caller))
        return -EACCES;
    return parse_path(path, p);
}

/* change_prologue for the operations on an entry of a job (truncate,
 * unlink): the root's .status is EPERM, a directory EISDIR. */
static int entry_prologue(const struct entries *e, uid_t caller, const char *path,
                          struct fspath *p)
{
    int rc = change_prologue(e, caller, path, -EISDIR, p);
    if (rc < 0)
        return rc;
    if (is_status(p))
        return -EPERM;
    return p->depth < 2 ? -EISDIR : 0;
}

int entries_getattr(struct entries *e, const char *path, struct entries_handle *h,
                    struct stat *st)
{
    char hjob[256], hentry[256];
    int hk = history_path(path, hjob, hentry);
    if (hk < 0)
        return hk;
    if (hk > 0) {
        memset(st, 0, sizeof *st);
        return histdir_getattr(e, hjob, hentry, hk, st);
    }

    struct fspath p;
    int rc = parse_path(path, &p);
    if (rc < 0)
        return rc;
    memset(st, 0, sizeof *st);
    if (p.depth == 0) {
        fill_dir(e, st, &e->mounted);
        return 0;
    }
    if (is_status(&p)) {
        size_t len = 0;
        char *text = jobs_status_text(e->jobs, &len);
        if (!text)
            return -ENOMEM;
        free(text);
        fill_file(e, st, (off_t)len, &e->mounted);
        st->st_mode = S_IFREG | 0444;
        return 0;
    }
    struct job *job;
    if (h) {
        job = h->job;
        jobs_ref(e->jobs, job);
    } else if ((rc = get_job(e, p.job, &job)) < 0) {
        return rc;
    }
    pthread_mutex_lock(&job->lock);
    struct timespec t = job->mtime;
    pthread_mutex_unlock(&job->lock);
    if (p.depth == 1) {
        fill_dir(e, st, &t);
        put_job(e, job);
        return 0;
    }
    enum etype type = classify(e, p.name);
    off_t size = 0;
    if (h && (h->type == E_KEY || h->type == E_STATE)) {
        pthread_mutex_lock(&h->lock);
        size = (off_t)h->len; /* what this open file holds */
        pthread_mutex_unlock(&h->lock);
    } else {
        rc = entry_size(e, job, p.name, type, &size);
    }
    /* A key's and a scratch file's mtime is its own last change (so
     * editors see no change behind their back, and ls -t orders keys);
     * the other entries show the job's. */
    if (rc == 0 && type == E_KEY)
        (void)state_mtime(job->state, p.name, &t, 0); /* pending: the job's */
    if (rc == 0 && type == E_SCRATCH) {
        pthread_mutex_lock(&job->lock);
        struct scratch *r = strmap_get(job->scratch, p.name);
        if (r)
            t = r->mtime;
        pthread_mutex_unlock(&job->lock);
    }
    put_job(e, job);
    if (rc < 0)
        return rc;
    fill_file(e, st, size, &t);
    if (type == E_READOUT)
        st->st_mode = S_IFREG | 0444;
    return 0;
}

/* Permissions are the mount's (private to its owner unless allow_other);
 * chmod and chown are accepted so that cp -p and editors work. */
int entries_chattr(struct entries *e, uid_t caller, const char *path,
                   struct entries_handle *h)
{
    int hr = history_refuses(path, -EROFS);
    if (hr)
        return hr;
    if (!may_change(e, caller))
        return -EACCES;
    struct stat st;
    return entries_getattr(e, path, h, &st);
}

/* ---- directories */

struct list_ctx {
    struct strlist *names;
    struct state *state; /* pending keys: skip those the state has */
};

static int list_each(const char *key, void *value, void *arg)
{
    (void)value;
    struct list_ctx *lc = arg;
    if (lc->state && state_has(lc->state, key))
        return 0;
    return strlist_add(lc->names, key) < 0 ? -ENOMEM : 0;
}

/* The root's .status and jobs. */
static int list_root(struct entries *e, struct strlist *names)
{
    json_t *jobs;
    int rc = jobs_list_names(e->jobs, &jobs);
    if (rc < 0)
        return rc;
    rc = strlist_add(names, STATUS_FILE);
    size_t i;
    json_t *v;
    json_array_foreach(jobs, i, v) {
        if (rc == 0)
            rc = strlist_add(names, json_string_value(v));
    }
    json_decref(jobs);
    return rc;
}

/* The names of a directory, in the order readdir gives them: the root's
 * .status and jobs, or a job's control files, its keys in insertion order,
 * keys created and still open for their first write (listed like the empty
 * files they are, unless the state has them already), and scratch files. */
static int list_dir(struct entries *e, const struct fspath *p, struct strlist *names)
{
    int rc = 0;
    static const char *const dots[] = {".", ".."};
    for (size_t i = 0; i < 2 && rc == 0; i++)
        rc = strlist_add(names, dots[i]);
    if (rc < 0)
        return rc;
    if (p->depth == 0)
        return list_root(e, names);
    struct job *job;
    if ((rc = get_job(e, p->job, &job)) < 0)
        return rc;
    if (state_count(job->state) > LARGE_STATE)
        blocking_may_block(); /* copying many names */
    /* Not the job's .status: read by name, never copied with the job. */
    static const char *const fixed[] = {"running", "completed", STATE_FILE};
    static const enum etype fixed_type[] = {E_RUNNING, E_COMPLETED, E_STATE};
    for (size_t i = 0; i < 3 && rc == 0; i++)
        if (!is_hidden(job, fixed_type[i]))
            rc = strlist_add(names, fixed[i]);
    size_t n = 0;
    char **keys = NULL;
    if (rc == 0)
        rc = state_keys(job->state, &keys, &n);
    for (size_t i = 0; i < n; i++) {
        if (rc == 0)
            rc = strlist_take(names, keys[i]); /* taken, or freed */
        else
            free(keys[i]);
    }
    free(keys);
    if (rc == 0) {
        struct list_ctx lc = {.names = names, .state = job->state};
        pthread_mutex_lock(&job->lock);
        rc = strmap_each(job->pending, list_each, &lc);
        lc.state = NULL;
        if (rc == 0)
            rc = strmap_each(job->scratch, list_each, &lc);
        pthread_mutex_unlock(&job->lock);
    }
    put_job(e, job);
    return rc;
}

int entries_opendir(struct entries *e, const char *path)
{
    (void)e;
    char hjob[256], hentry[256];
    int hk = history_path(path, hjob, hentry);
    if (hk < 0)
        return hk;
    struct fspath p;
    int rc = hk == 1 ? 0 : parse_path(path, &p);
    if (rc < 0)
        return rc;
    if (hk == 2 || (hk == 0 && p.depth == 2))
        return -ENOTDIR;
    return 0;
}

int entries_list(struct entries *e, const char *path, struct strlist *names)
{
    struct fspath p;
    int rc = parse_path(path, &p);
    if (rc < 0)
        return rc;
    char hjob[256], hentry[256];
    if (history_path(path, hjob, hentry) == 1)
        return histdir_list(e, hjob, names);
    return list_dir(e, &p, names);
}

/* Refused at mkdir rather than at every upload: the longest key an upload
 * of this job can get (completed, the largest epoch) must fit S3's limit,
 * and its last segment the store's (a file name, on the dir store). */
static int job_name_fits(struct entries *e, const char *job)
{
    char *key = layout_upload_key(&e->jobs->layout, job, UPLOAD_COMPLETED, INT64_MAX);
    if (!key)
        return -ENOMEM;
    size_t seg_max = e->jobs->store->max_segment;
    int fits = strlen(key) <= STORE_KEY_MAX &&
               (!seg_max || strlen(strrchr(key, '/') + 1) <= seg_max);
    free(key);
    return fits ? 0 : -ENAMETOOLONG;
}

int entries_mkdir(struct entries *e, uid_t caller, const char *path)
{
    struct fspath p;
    int rc = change_prologue(e, caller, path, -EEXIST, &p);
    if (rc)
        return rc;
    if (p.depth != 1)
        return p.depth == 0 ? -EEXIST : -EPERM;
    if (is_status(&p))
        return -EEXIST;
    if (p.job[0] == '.')
        return -EPERM; /* not a job: git init MNT makes no job ".git" */
    if (!is_valid_utf8(p.job))
        return -EILSEQ;
    /* Control characters are refused: S3 listings without encoding-type=url
     * (which some servers ignore) cannot carry them (README, "Errors"). */
    for (const unsigned char *c = (const unsigned char *)p.job; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            return -EINVAL;
    if ((rc = job_name_fits(e, p.job)) < 0)
        return rc;
    struct job *job = NULL;
    rc = jobs_get(e->jobs, p.job, 1, &job);
    if (rc == 0 && (rc = claim(e, job)) < 0)
        jobs_forget(e->jobs, p.job); /* held elsewhere: not created here */
    if (job)
        put_job(e, job);
    return rc;
}

int entries_rmdir(struct entries *e, uid_t caller, const char *path)
{
    char hjob[256], hentry[256];
    int hk = history_path(path, hjob, hentry);
    if (hk)
        return hk < 0 ? hk : hk == 1 ? -EROFS : -ENOTDIR;
    struct fspath p;
    int rc = parse_change(e, caller, path, &p);
    if (rc < 0)
        return rc;
    if (p.depth == 0)
        return -EBUSY;
    if (p.depth == 2) {
        struct job *job;
        if ((rc = get_job(e, p.job, &job)) < 0)
            return rc;
        off_t size;
        rc = entry_size(e, job, p.name, classify(e, p.name), &size);
        put_job(e, job);
        return rc < 0 ? rc : -ENOTDIR;
    }
    rc = jobs_forget(e->jobs, p.job);
    if (rc == -ENOENT) {
        /* A job only in the store: nothing to forget locally. */
        struct job *job;
        if ((rc = get_job(e, p.job, &job)) < 0)
            return rc;
        put_job(e, job);
        rc = jobs_forget(e->jobs, p.job);
    }
    return rc;
}

/* ---- files */

static int open_status(struct entries *e, int flags, int create,
                       struct entries_handle **out)
{
    if (create)
        return -EEXIST;
    if ((flags & O_ACCMODE) != O_RDONLY)
        return -EACCES; /* read-only, for root too */
    struct entries_handle *h;
    int rc = handle_new(e, E_STATUS, NULL, STATUS_FILE, &h);
    if (rc < 0)
        return rc;
    h->buf = jobs_status_text(e->jobs, &h->len);
    if (!h->buf) {
        entries_close(h);
        return -ENOMEM;
    }
    h->cap = h->len;
    *out = h;
    return 0;
}

/* The job's read-out: read-only, for root too. */
static int open_readout(struct entries_handle *h, int acc, int create)
{
    if (create)
        return -EEXIST;
    if (acc != O_RDONLY)
        return -EACCES;
    size_t len = 0;
    h->buf = jobs_readout_text(h->e->jobs, h->job, &len);
    h->len = h->cap = len;
    return h->buf ? 0 : -ENOMEM;
}

/* O_TRUNC empties this descriptor's bytes; nothing is committed until
 * something is written (shells flush a duplicate first). */
static int open_state(struct entries_handle *h, int trunc)
{
    if (trunc)
        return 0;
    struct job *job = h->job;
    if (state_count(job->state) > LARGE_STATE)
        blocking_may_block(); /* a long serialization */
    size_t len = 0;
    int rc = state_to_bytes(job->state, &h->buf, &len);
    if (rc < 0)
        return rc;
    h->cap = len + 1;
    h->buf[len] = '\n';
    h->len = len + 1;
    return 0;
}

/* A key created by this open is pending (listed, read as null) until its
 * close commits it (README, "Key files"). */
static int open_key(struct entries_handle *h, int create, int trunc)
{
    struct job *job = h->job;
    if (create && !state_has(job->state, h->name)) {
        if (!is_valid_utf8(h->name))
            return -EILSEQ;
        pthread_mutex_lock(&job->lock);
        intptr_t n = (intptr_t)strmap_get(job->pending, h->name);
        int rc = strmap_put(job->pending, h->name, (void *)(n + 1), NULL);
        pthread_mutex_unlock(&job->lock);
        if (rc == 0)
            h->created = 1;
        return rc;
    }
    if (trunc) /* the old value is not needed */
        return state_has(job->state, h->name) || is_key_pending(job, h->name) ? 0
                                                                              : -ENOENT;
    size_t len = 0;
    int rc = key_text(job, h->name, &h->buf, &len);
    h->len = h->cap = len;
    return rc;
}

static int open_scratch(struct entries_handle *h, int create, int trunc)
{
    struct job *job = h->job;
    int rc = 0;
    pthread_mutex_lock(&job->lock);
    struct scratch *r = strmap_get(job->scratch, h->name);
    if (!r && create) {
        if ((rc = scratch_new(&r)) == 0 && (rc = scratch_install(job, h->name, r)) < 0)
            scratch_unref(r);
        if (rc < 0) {
            r = NULL;
            rc = -ENOMEM;
        }
    } else if (!r) {
        rc = -ENOENT;
    }
    if (r) {
        if (trunc) {
            r->len = 0;
            clock_gettime(CLOCK_REALTIME, &r->mtime);
        }
        r->refs++;
        h->scratch = r;
    }
    pthread_mutex_unlock(&job->lock);
    return rc;
}

static int open_entry(struct entries *e, uid_t caller, const char *path, int flags,
                      int create, struct entries_handle **out, int *noflush)
{
    struct fspath p;
    int rc = parse_path(path, &p);
    if (rc < 0)
        return rc;
    if (p.depth == 0)
        return -EISDIR;
    if (is_status(&p)) {
        *noflush = 1; /* read-only: nothing to do at close */
        return open_status(e, flags, create, out);
    }
    if (p.depth == 1)
        return -EISDIR;
    struct job *job;
    if ((rc = get_job(e, p.job, &job)) < 0)
        return rc;
    enum etype type = classify(e, p.name);
    struct entries_handle *h;
    if ((rc = handle_new(e, type, job, p.name, &h)) < 0) {
        put_job(e, job);
        return rc;
    }
    int acc = flags & O_ACCMODE;
    if (acc != O_RDONLY && !may_change(e, caller)) {
        entries_close(h);
        return -EACCES;
    }
    if ((acc != O_RDONLY || create) && type != E_SCRATCH && type != E_READOUT &&
        type != E_STATUS && (rc = claim(e, job)) < 0) {
        entries_close(h);
        return rc;
    }
    int trunc = (flags & O_TRUNC) && acc != O_RDONLY;
    h->append = (flags & O_APPEND) != 0;
    /* A removed running, completed or .state.json is back with a create;
     * a .state.json created so starts empty, as with O_TRUNC. */
    if (is_virtual(type) && is_hidden(job, type)) {
        if (!create)
            rc = -ENOENT;
        else
            set_hidden(job, type, 0);
        if (type == E_STATE)
            trunc = 1;
    }
    switch (type) {
    case E_STATUS:
        break; /* opened by open_status() */
    case E_READOUT:
        rc = open_readout(h, acc, create);
        break;
    case E_RUNNING:
    case E_COMPLETED:
        break; /* they read empty; a write uploads */
    case E_STATE:
        if (rc == 0)
            rc = open_state(h, trunc);
        break;
    case E_KEY:
        rc = open_key(h, create, trunc);
        break;
    case E_SCRATCH:
        rc = open_scratch(h, create, trunc);
        break;
    }
    if (rc < 0) {
        entries_close(h);
        return rc;
    }
    h->sequential = 1; /* empty, or the committed text: writes at its end are checked */
    /* A reader commits nothing at close, nor does a control file (it
     * uploads in write()) or a scratch file, so no flush is needed: one
     * request less per read or commit. A key created by this open is
     * committed at its close, read-only or not. */
    *noflush = (acc == O_RDONLY && !h->created) || is_control(type) || type == E_SCRATCH;
    *out = h;
    return 0;
}

int entries_open(struct entries *e, uid_t caller, const char *path, int flags,
                 struct entries_handle **out, int *noflush)
{
    char hjob[256], hentry[256];
    int hk = history_path(path, hjob, hentry);
    if (hk < 0)
        return hk;
    if (hk == 1)
        return -EISDIR;
    if (hk == 2) {
        *noflush = 1;
        return histdir_open(e, hjob, hentry, flags, out);
    }
    /* The kernel opens only names it holds, possibly from its cache: a name
     * gone since (a .state.json replace removed it) is ESTALE, on which the
     * kernel looks the name up afresh and retries the open once, as a
     * create when O_CREAT was given. ENOENT here would reach the caller,
     * and `echo 1 > key` would fail. */
    int rc = open_entry(e, caller, path, flags, 0, out, noflush);
    return rc == -ENOENT ? -ESTALE : rc;
}

int entries_create(struct entries *e, uid_t caller, const char *path, int flags,
                   struct entries_handle **out, int *noflush)
{
    struct fspath p;
    int rc = change_prologue(e, caller, path, -EISDIR, &p);
    if (rc)
        return rc;
    if (p.depth != 2)
        return -EPERM; /* only files inside a job */
    return open_entry(e, caller, path, flags, 1, out, noflush);
}

/* Copies out what buf holds from off on. */
static int bytes_read(const char *data, size_t len, char *buf, size_t size, off_t off)
{
    size_t n = (size_t)off >= len ? 0 : len - (size_t)off;
    if (n > size)
        n = size;
    if (n)
        memcpy(buf, data + off, n);
    return (int)n;
}

int entries_read(struct entries_handle *h, char *buf, size_t size, off_t off)
{
    if (off < 0)
        return -EINVAL;
    int n;
    if (h->type == E_SCRATCH) {
        pthread_mutex_lock(&h->job->lock);
        n = bytes_read(h->scratch->data, h->scratch->len, buf, size, off);
        pthread_mutex_unlock(&h->job->lock);
        return n;
    }
    pthread_mutex_lock(&h->lock);
    n = bytes_read(h->buf, h->len, buf, size, off);
    pthread_mutex_unlock(&h->lock);
    return n;
}

/* The write() that makes a key's bytes (or .state.json's) impossible as
 * JSON fails with EINVAL, so that shells and print() report it (README,
 * "Key files"); the close() then fails too and commits nothing. Checked
 * while the file was written only at its end since it was opened empty or
 * with its committed text (O_APPEND), and holds at most CHECK_MAX bytes: a
 * value written in one go is parsed once, here, and the close commits that
 * parse. Larger values are checked at close only. Caller holds h->lock;
 * returns rc or -EINVAL. */
#define CHECK_MAX (64 * 1024)

static int check_written(struct entries_handle *h, int rc)
{
    if (!h->sequential || h->len > CHECK_MAX)
        return rc;
    char why[160] = "";
    json_t *v = NULL;
    int r = state_check_prefix(h->buf, h->len, h->type == E_STATE, &v, why, sizeof why);
    if (r == 1 && h->type == E_KEY)
        h->parsed = v;
    else
        json_decref(v);
    if (r != -EINVAL)
        return rc;
    h->refused = 1;
    h->dirty = 0;
    if (h->type == E_STATE) {
        state_refused(h->e, h->job, why);
    } else {
        refused(h->e, h->job, h->name, why);
        /* A new key whose first value is refused never exists. */
        pending_leave(h);
        h->failed = 1;
        uncreate(h);
    }
    return -EINVAL;
}

int entries_write(struct entries_handle *h, const char *data, size_t size, off_t off)
{
    int rc;
    switch (h->type) {
    case E_RUNNING:
    case E_COMPLETED:
        /* update()/complete(): the bytes do not matter, the upload does. */
        rc = jobs_upload(h->e->jobs, h->job, control_kind(h->type));
        return rc < 0 ? rc : (int)size;
    case E_STATUS:
    case E_READOUT:
        return -EBADF; /* opened read-only */
    case E_SCRATCH: {
        pthread_mutex_lock(&h->job->lock);
        struct scratch *r = h->scratch;
        if (h->append)
            off = (off_t)r->len;
        rc = bytes_write(&r->data, &r->len, &r->cap, data, size, off,
                         value_max(E_SCRATCH));
        clock_gettime(CLOCK_REALTIME, &r->mtime);
        pthread_mutex_unlock(&h->job->lock);
        return rc;
    }
    case E_KEY:
    case E_STATE:
        break;
    }
    pthread_mutex_lock(&h->lock);
    if (h->refused) {
        pthread_mutex_unlock(&h->lock);
        return -EINVAL;
    }
    if (h->append)
        off = (off_t)h->len;
    if (off != (off_t)h->len)
        h->sequential = 0; /* holes or overwrites: only the close can tell */
    rc = bytes_write(&h->buf, &h->len, &h->cap, data, size, off,
                     value_max(h->type));
    if (rc >= 0) {
        h->dirty = 1;
        json_decref(h->parsed);
        h->parsed = NULL;
        rc = check_written(h, rc);
    }
    pthread_mutex_unlock(&h->lock);
    if (rc == -EFBIG)
        metrics_refused(h->job->name, METRICS_REFUSED_TOO_LARGE);
    return rc;
}

/* Commits what an open key holds. Caller holds h->lock. */
static int commit_key_handle(struct entries_handle *h)
{
    int rc = 0;
    if (h->refused) {
        rc = -EINVAL; /* refused at its write, and counted there */
    } else if (h->dirty) {
        rc = commit_key(h->e, h->job, h->name, h->buf ? h->buf : "", h->len, h->parsed);
        h->parsed = NULL; /* taken */
        h->dirty = 0;
        if (rc == -EINVAL)
            uncreate(h);
        h->made = (struct timespec){0}; /* a value of its own now, or none */
        /* In the state now, or refused: a new key whose first value was
         * refused does not exist, from the failed close on (not from the
         * asynchronous release). */
        pending_leave(h);
        if (rc != 0)
            h->failed = 1;
    } else if (h->created) {
        rc = commit_created(h);
        pending_leave(h);
        if (rc != 0)
            h->failed = 1;
    }
    return rc;
}

/* Commits what an open key or .state.json holds. Caller holds h->lock. */
static int commit_handle(struct entries_handle *h)
{
    int rc = 0;
    switch (h->type) {
    case E_STATUS:
    case E_READOUT:
        break; /* read-only */
    case E_KEY:
        rc = commit_key_handle(h);
        break;
    case E_STATE:
        if (h->refused)
            rc = -EINVAL;
        else if (h->dirty && (rc = commit_state(h->e, h->job, h->buf, h->len)) == 0)
            h->dirty = 0;
        break;
    case E_RUNNING:
    case E_COMPLETED:
    case E_SCRATCH:
        /* Control files upload in write(), truncate() and utimens(), where
         * the error reaches the caller. An O_TRUNC open is not an upload:
         * shells close a duplicate of the descriptor before writing, so
         * uploading at that flush would upload twice. */
        break;
    }
    return rc;
}

int entries_commit(struct entries_handle *h)
{
    pthread_mutex_lock(&h->lock);
    int rc = commit_handle(h);
    pthread_mutex_unlock(&h->lock);
    return rc;
}

/* fsync commits what the file holds (as close would) and makes the journal
 * durable: the change then survives power loss too. */
int entries_fsync(struct entries *e, struct entries_handle *h)
{
    int rc = h ? entries_commit(h) : 0;
    if (rc == 0)
        rc = jobs_sync(e->jobs);
    return rc;
}

/* Truncate the text of an entry that is not open, then commit it. */
static int truncate_entry(struct entries *e, struct job *job, const char *name,
                          enum etype type, off_t size)
{
    if (size < 0)
        return -EINVAL;
    if (type == E_READOUT)
        return -EPERM;
    if (is_virtual(type) && is_hidden(job, type))
        return -ENOENT;
    if (is_control(type))
        return jobs_upload(e->jobs, job, control_kind(type));
    if (type == E_SCRATCH) {
        pthread_mutex_lock(&job->lock);
        struct scratch *r = strmap_get(job->scratch, name);
        int rc = -ENOENT;
        if (r) {
            rc = bytes_resize(&r->data, &r->len, &r->cap, size, value_max(E_SCRATCH));
            clock_gettime(CLOCK_REALTIME, &r->mtime);
        }
        pthread_mutex_unlock(&job->lock);
        return rc;
    }
    size_t len = 0;
    char *text = NULL;
    int rc = 0;
    if (type == E_STATE && (rc = state_to_bytes(job->state, &text, &len)) < 0)
        return rc;
    if (type != E_STATE && (rc = state_value_text(job->state, name, &text, &len)) < 0)
        return rc;
    if (type == E_STATE)
        text[len++] = '\n'; /* over the NUL: the file's own last byte */
    size_t cap = len;
    rc = bytes_resize(&text, &len, &cap, size,
                          value_max(type));
    if (rc == 0)
        rc = type == E_STATE ? commit_state(e, job, text, len)
                             : commit_key(e, job, name, text, len, NULL);
    free(text);
    return rc;
}

/* ftruncate of an open key or .state.json: its bytes, committed at close. */
static int truncate_handle(struct entries_handle *h, off_t size)
{
    if (size < 0)
        return -EINVAL;
    pthread_mutex_lock(&h->lock);
    int rc = bytes_resize(&h->buf, &h->len, &h->cap, size,
                          value_max(h->type));
    if (rc == 0) {
        h->dirty = 1;
        json_decref(h->parsed);
        h->parsed = NULL;
        /* Emptied: written afresh, checked afresh. */
        h->sequential = size == 0;
        if (size == 0)
            h->refused = 0;
    }
    pthread_mutex_unlock(&h->lock);
    return rc;
}

int entries_truncate(struct entries *e, uid_t caller, const char *path,
                     struct entries_handle *h, off_t size)
{
    struct fspath p;
    int rc = entry_prologue(e, caller, path, &p);
    if (rc < 0)
        return rc;
    if (h && (h->type == E_KEY || h->type == E_STATE))
        return truncate_handle(h, size);
    struct job *job;
    if ((rc = get_job(e, p.job, &job)) < 0)
        return rc;
    enum etype type = classify(e, p.name);
    if (type == E_KEY || type == E_STATE)
        rc = claim(e, job);
    if (rc == 0)
        rc = truncate_entry(e, job, p.name, type, size);
    put_job(e, job);
    return rc;
}

int entries_unlink(struct entries *e, uid_t caller, const char *path)
{
    struct fspath p;
    int rc = entry_prologue(e, caller, path, &p);
    if (rc < 0)
        return rc;
    struct job *job;
    if ((rc = get_job(e, p.job, &job)) < 0)
        return rc;
    enum etype type = classify(e, p.name);
    switch (type) {
    case E_STATUS:
    case E_READOUT:
        rc = -EPERM;
        break;
    case E_RUNNING:
    case E_COMPLETED:
    case E_STATE:
        /* Removing one changes nothing but its presence (rm -rf of a job,
         * tar -x over it): the state stays, nothing is uploaded. */
        rc = set_hidden(job, type, 1) ? -ENOENT : 0;
        break;
    case E_KEY:
        if (state_has(job->state, p.name) && (rc = claim(e, job)) < 0)
            break;
        rc = jobs_remove_key(e->jobs, job, p.name);
        if (rc == -ENOENT) {
            pthread_mutex_lock(&job->lock);
            if (strmap_get(job->pending, p.name))
                rc = -EBUSY; /* being created: it exists once closed */
            pthread_mutex_unlock(&job->lock);
        }
        break;
    case E_SCRATCH: {
        pthread_mutex_lock(&job->lock);
        struct scratch *r = strmap_remove(job->scratch, p.name);
        rc = r ? 0 : -ENOENT;
        scratch_unref(r);
        pthread_mutex_unlock(&job->lock);
        break;
    }
    }
    /* A scratch file is no part of the state: its removal leaves the job's
     * mtime, which .state.json shows, as it was (vim's probe and swap
     * files would otherwise make every save of .state.json a conflict). */
    if (rc == 0 && type != E_SCRATCH)
        jobs_touch(job);
    put_job(e, job);
    return rc;
}

/* rename onto .state.json (os.replace of a whole state, rsync's temp
 * file): from_bytes with the file's bytes, like a write; the source is gone
 * (a key source is replaced with the rest of the state). A scratch file
 * renamed onto running or completed (rsync -a restoring a copy): the
 * scratch file goes, nothing is uploaded (README, "Control files"). */
static int rename_onto_virtual(struct entries *e, struct job *job, const char *from,
                               enum etype tf, enum etype tt, unsigned int flags)
{
    if (!entry_exists(e, job, from))
        return -ENOENT;
    if ((flags & RENAME_NOREPLACE) && !is_hidden(job, tt))
        return -EEXIST;
    int rc = 0;
    if (tt == E_STATE) {
        size_t len = 0;
        char *text = NULL;
        if (tf == E_KEY) {
            if ((rc = state_value_text(job->state, from, &text, &len)) < 0)
                return rc;
        } else if ((rc = scratch_copy(job, from, &text, &len, NULL)) < 0) {
            return rc;
        }
        rc = commit_state(e, job, text, len);
        free(text);
    }
    if (rc == 0 && tf == E_SCRATCH) {
        pthread_mutex_lock(&job->lock);
        scratch_unref(strmap_remove(job->scratch, from));
        pthread_mutex_unlock(&job->lock);
    }
    if (rc == 0) {
        set_hidden(job, tt, 0);
        jobs_touch(job);
    }
    return rc;
}

/* key -> scratch: its text becomes bytes. A tool's backup (sed -i.bak,
 * vim, cp --backup): uploads wait a moment for the key's new value
 * (README, "Scratch files"). */
static int rename_key_to_scratch(struct entries *e, struct job *job, const char *from,
                                 const char *to)
{
    size_t len = 0;
    char *text = NULL;
    int rc = state_value_text(job->state, from, &text, &len);
    if (rc < 0)
        return rc;
    struct scratch *r;
    if (scratch_new(&r) < 0) {
        free(text);
        return -ENOMEM;
    }
    r->data = text;
    r->len = r->cap = len;
    /* The key leaves the state first (journaled); then its text is
     * installed as the scratch file. */
    if (jobs_key_moved(job, from) < 0) {
        scratch_unref(r);
        return -ENOMEM;
    }
    rc = jobs_remove_key(e->jobs, job, from);
    pthread_mutex_lock(&job->lock);
    if (rc == 0)
        rc = scratch_install(job, to, r);
    if (rc < 0)
        scratch_unref(r);
    pthread_mutex_unlock(&job->lock);
    if (rc < 0)
        jobs_key_written(job, from); /* not moved after all */
    return rc;
}

/* scratch -> key: the write-then-rename idiom. */
static int rename_scratch_to_key(struct entries *e, struct job *job, const char *from,
                                 const char *to)
{
    char *copy = NULL;
    size_t len = 0;
    struct scratch *r = NULL;
    int rc = scratch_copy(job, from, &copy, &len, &r);
    if (rc == -ENOENT)
        return rc;
    if (rc == 0)
        rc = commit_key(e, job, to, copy, len, NULL); /* takes the job lock itself */
    free(copy);
    pthread_mutex_lock(&job->lock);
    if (rc == 0 && strmap_get(job->scratch, from) == r)
        scratch_unref(strmap_remove(job->scratch, from));
    scratch_unref(r);
    pthread_mutex_unlock(&job->lock);
    return rc;
}

static int rename_in_job(struct entries *e, struct job *job, const char *from,
                         const char *to, unsigned int flags)
{
    enum etype tf = classify(e, from), tt = classify(e, to);
    if (tf != E_KEY && tf != E_SCRATCH)
        return entry_exists(e, job, from) ? -EPERM : -ENOENT;
    if (tt == E_STATE || (is_control(tt) && tf == E_SCRATCH))
        return rename_onto_virtual(e, job, from, tf, tt, flags);
    if (tt != E_KEY && tt != E_SCRATCH)
        return -EPERM;
    if (!entry_exists(e, job, from))
        return -ENOENT;
    if ((flags & RENAME_NOREPLACE) && entry_exists(e, job, to))
        return -EEXIST;
    if (strcmp(from, to) == 0)
        return 0;
    if (!is_valid_utf8(to))
        return -EILSEQ;
    int rc = 0;
    if ((tf == E_KEY || tt == E_KEY) && (rc = claim(e, job)) < 0)
        return rc;
    if (tf == E_KEY && tt == E_KEY) {
        rc = jobs_rename_key(e->jobs, job, from, to);
        if (rc == 0)
            jobs_key_written(job, to);
    } else if (tf == E_KEY) {
        rc = rename_key_to_scratch(e, job, from, to);
    } else if (tt == E_KEY) {
        rc = rename_scratch_to_key(e, job, from, to);
    } else {
        pthread_mutex_lock(&job->lock);
        struct scratch *r = strmap_remove(job->scratch, from);
        if (!r) {
            rc = -ENOENT;
        } else if ((rc = scratch_install(job, to, r)) < 0) {
            strmap_put(job->scratch, from, r, NULL);
        }
        pthread_mutex_unlock(&job->lock);
    }
    if (rc == 0 && (tf == E_KEY || tt == E_KEY)) /* scratch to scratch: no change */
        jobs_touch(job);
    return rc;
}

int entries_rename(struct entries *e, uid_t caller, const char *from, const char *to,
                   unsigned int flags)
{
    int hr = history_refuses(from, -EROFS);
    if (!hr)
        hr = history_refuses(to, -EROFS);
    if (hr)
        return hr;
    if (!may_change(e, caller))
        return -EACCES;
    struct fspath a, b;
    int rc = parse_path(from, &a);
    if (rc == 0)
        rc = parse_path(to, &b);
    if (rc < 0)
        return rc;
    if (flags & RENAME_EXCHANGE)
        return -EINVAL;
    if (a.depth == 0 || b.depth == 0)
        return -EBUSY;
    if (a.depth == 1 || b.depth == 1)
        return a.depth == b.depth ? -EPERM : (a.depth == 1 ? -ENOTDIR : -EISDIR);
    if (strcmp(a.job, b.job) != 0)
        return -EXDEV; /* mv falls back to copy and unlink */
    struct job *job;
    if ((rc = get_job(e, a.job, &job)) < 0)
        return rc;
    rc = rename_in_job(e, job, a.name, b.name, flags);
    put_job(e, job);
    return rc;
}

/* utimens of an entry that exists. */
static int utimens_entry(struct entries *e, struct job *job, const char *name,
                         const struct timespec tv[2])
{
    enum etype t = classify(e, name);
    struct timespec now, m = tv[1];
    clock_gettime(CLOCK_REALTIME, &now);
    if (m.tv_nsec == UTIME_NOW)
        m = now;
    int rc = 0;
    if (is_control(t)) {
        /* touch (the current time) is update()/complete(); explicit
         * times, as cp -a, tar -x and rsync -a set them when they
         * restore a copy, are not (README, "Control files"). */
        if (tv[1].tv_nsec == UTIME_NOW)
            rc = jobs_upload(e->jobs, job, control_kind(t));
    } else if (tv[1].tv_nsec == UTIME_OMIT) {
        /* the access time only: not kept */
    } else if (t == E_KEY) {
        rc = state_mtime(job->state, name, &m, 1);
        if (rc == -ENOENT)
            rc = 0; /* pending: its close sets it */
    } else if (t == E_SCRATCH) {
        pthread_mutex_lock(&job->lock);
        struct scratch *r = strmap_get(job->scratch, name);
        if (r)
            r->mtime = m;
        pthread_mutex_unlock(&job->lock);
    }
    return rc;
}

int entries_utimens(struct entries *e, uid_t caller, const char *path,
                    const struct timespec tv[2])
{
    struct fspath p;
    int rc = change_prologue(e, caller, path, -EROFS, &p);
    if (rc < 0 || p.depth == 0)
        return rc;
    if (is_status(&p))
        return -EPERM;
    struct job *job;
    if ((rc = get_job(e, p.job, &job)) < 0)
        return rc;
    if (p.depth == 2)
        rc = entry_exists(e, job, p.name) ? utimens_entry(e, job, p.name, tv) : -ENOENT;
    put_job(e, job);
    return rc;
}

/* Links and device nodes: EPERM, but EROFS in .history, where nothing is
 * created (README, "Errors a user can see"). */
int entries_mknod(struct entries *e, const char *path)
{
    (void)e;
    int hr = history_refuses(path, -EROFS);
    return hr ? hr : -EPERM;
}
