#include "fs/ops.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "fs/history.h"
#include "fs/loop.h"
#include "fs/metrics.h"
#include "util/log.h"
#include "util/strlist.h"
#include "util/strmap.h"

/* Serializing or listing more keys than this takes a millisecond or more. */
#define LARGE_STATE 10000

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif
#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

/* What a name inside a job directory is. */
enum etype { E_KEY, E_SCRATCH, E_STATE, E_RUNNING, E_COMPLETED, E_STATUS, E_READOUT };

static const char STATE_FILE[] = ".state.json";
/* The root's read-only status file (observability). */
static const char STATUS_FILE[] = ".status";

static struct fsctx *ctx(void);

/* The temp, backup and probe files tools make beside the file they edit
 * (--scratch; README, "Scratch files"). */
static int tool_scratch(const char *name)
{
    char **pat = ctx()->scratch;
    for (size_t i = 0; pat && pat[i]; i++)
        if (fnmatch(pat[i], name, 0) == 0)
            return 1;
    return 0;
}

static enum etype classify(const char *name)
{
    if (strcmp(name, "running") == 0)
        return E_RUNNING;
    if (strcmp(name, "completed") == 0)
        return E_COMPLETED;
    if (strcmp(name, STATE_FILE) == 0)
        return E_STATE;
    if (strcmp(name, STATUS_FILE) == 0)
        return E_READOUT; /* the job's read-out */
    return name[0] == '.' || tool_scratch(name) ? E_SCRATCH : E_KEY;
}

int ops_scratch_init(struct fsctx *fc, const char *list)
{
    size_t n = 1;
    for (const char *c = list; *c; c++)
        n += *c == '/';
    fc->scratch = calloc(n + 1, sizeof *fc->scratch);
    if (!fc->scratch)
        return -ENOMEM;
    size_t k = 0;
    for (const char *c = list; *c;) {
        size_t len = strcspn(c, "/");
        if (len && !(fc->scratch[k++] = strndup(c, len))) {
            ops_scratch_free(fc);
            return -ENOMEM;
        }
        c += len;
        if (*c)
            c++;
    }
    return 0;
}

void ops_scratch_free(struct fsctx *fc)
{
    for (size_t i = 0; fc->scratch && fc->scratch[i]; i++)
        free(fc->scratch[i]);
    free(fc->scratch);
    fc->scratch = NULL;
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

static int hidden(struct job *job, enum etype t)
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

/* Set once the FUSE loop is over, when no request runs any more. */
static struct fsctx *after_loop;

static struct fsctx *ctx(void)
{
    return after_loop ? after_loop : fuse_get_context()->private_data;
}

/* Only the mount's owner (and root) changes anything; with -o allow_other
 * others may read. This is what the modes shown (0644, 0755) say; checking
 * it here spares the kernel's default_permissions, which would fetch the
 * attributes of every path component on every open. */
static int may_change(void)
{
    uid_t uid = fuse_get_context()->uid;
    return uid == 0 || uid == ctx()->uid;
}

/* parse_path for the operations that change something. */
static int parse_change(const char *path, struct fspath *p)
{
    return may_change() ? parse_path(path, p) : -EACCES;
}

static int is_status(const struct fspath *p)
{
    return p->depth == 1 && strcmp(p->job, STATUS_FILE) == 0;
}

/* Names go into JSON (keys) and S3 object keys: both need UTF-8. */
static int valid_utf8(const char *name)
{
    json_t *s = json_string(name);
    json_decref(s);
    return s != NULL;
}

static int get_job(const char *name, struct job **job)
{
    if (strcmp(name, STATUS_FILE) == 0)
        return -ENOTDIR; /* a file, not a job */
    if (name[0] == '.')
        return -ENOENT; /* dot-names at the root are not jobs (README, "Jobs") */
    return jobs_get(ctx()->jobs, name, 0, job);
}

static void put_job(struct job *job) { job_unref(ctx()->jobs, job); }

/* The first change to a job takes this mount's lease on it (README,
 * "Leases"): EBUSY when another mount holds it. */
static int claim(struct job *job) { return job_claim(ctx()->jobs, job); }

/* ---- scratch files: refcounted so open handles survive unlink/rename. */

struct scratch_ref {
    struct scratch s;
    size_t cap;
    int refs; /* guarded by the job lock */
};

static struct scratch_ref *scratch_new(void)
{
    struct scratch_ref *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->refs = 1;
    clock_gettime(CLOCK_REALTIME, &r->s.mtime);
    return r;
}

/* Caller holds the job lock. */
static void scratch_unref(struct scratch_ref *r)
{
    if (r && --r->refs == 0) {
        free(r->s.data);
        free(r);
    }
}

/* Puts r into the job's map (the map takes a reference it already has),
 * dropping whatever was there. Caller holds the job lock. */
static int scratch_install(struct job *job, const char *name, struct scratch_ref *r)
{
    void *old = NULL;
    int rc = strmap_put(job->scratch, name, r, &old);
    if (rc == 0)
        scratch_unref(old);
    return rc;
}

/* ---- open file handles */

struct handle {
    struct handle *prev, *next; /* every open file, for the shutdown */
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
    struct scratch_ref *scratch;
};

static struct handle *fh(struct fuse_file_info *fi)
{
    return (struct handle *)(uintptr_t)fi->fh;
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

static int commit_key(struct job *job, const char *key, const char *buf, size_t len,
                      json_t *parsed);
static int commit_created(struct handle *h);

/* Caller holds h->lock. */
static void pending_leave(struct handle *h)
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

/* Open files: RELEASE is asynchronous, and a SIGTERM or unmount may end the
 * loop before it arrives for every file. */
static pthread_mutex_t open_lock = PTHREAD_MUTEX_INITIALIZER;
static struct handle *open_files;

static void handle_free(struct handle *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&open_lock);
    if (h->prev)
        h->prev->next = h->next;
    else
        open_files = h->next;
    if (h->next)
        h->next->prev = h->prev;
    pthread_mutex_unlock(&open_lock);
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
        put_job(h->job);
    pthread_mutex_destroy(&h->lock);
    json_decref(h->parsed);
    free(h->name);
    free(h->buf);
    free(h);
}

static struct handle *handle_new(enum etype type, struct job *job, const char *name)
{
    struct handle *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    if (pthread_mutex_init(&h->lock, NULL) != 0) {
        free(h);
        return NULL;
    }
    h->type = type;
    h->name = strdup(name);
    if (!h->name) {
        pthread_mutex_destroy(&h->lock);
        free(h);
        return NULL;
    }
    h->job = job;
    pthread_mutex_lock(&open_lock);
    h->next = open_files;
    if (open_files)
        open_files->prev = h;
    open_files = h;
    pthread_mutex_unlock(&open_lock);
    return h;
}

void ops_release_open_files(struct fsctx *fc)
{
    after_loop = fc;
    while (open_files)
        handle_free(open_files); /* as its RELEASE would have */
}

/* ---- commits: what close() of a key or .state.json does */

static int all_space(const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r')
            return 0;
    return 1;
}

/* A value refused (README, "Errors a user can see"): logged, and counted
 * in .status with the job, key and reason. */
static void refused(struct job *job, const char *key, const char *why)
{
    log_error("job '%s' key '%s': not one JSON value (%s); old value kept", job->name,
              key, why);
    jobs_note_refused(ctx()->jobs, job->name, key, why);
}

/* parsed: the value already parsed from buf (stolen), or NULL. */
static int commit_key(struct job *job, const char *key, const char *buf, size_t len,
                      json_t *parsed)
{
    json_t *v = parsed;
    if (v) {
        /* parsed at the write that completed it */
    } else if (all_space(buf, len)) {
        v = json_null(); /* closed with no content */
    } else {
        char why[160];
        v = state_parse_value(buf, len, why, sizeof why);
        if (!v) {
            refused(job, key, why);
            return -EINVAL;
        }
    }
    int rc = job_set(ctx()->jobs, job, key, v); /* journaled, then applied */
    if (rc == 0)
        job_written(job, key); /* and touched */
    else if (rc == -EIO)
        log_error("job '%s' key '%s': the journal cannot take the change; old value "
                  "kept",
                  job->name, key);
    if (rc == -EIO)
        metrics_refused(job->name, METRICS_REFUSED_JOURNAL);
    return rc;
}

/* A key created and closed (or fsynced) with no content holds null from
 * that close on (README, "Key files"), unless a writer gave it a value
 * meanwhile. It stops being pending either way. */
static int commit_created(struct handle *h)
{
    int rc = job_create(ctx()->jobs, h->job, h->name, &h->made);
    if (rc == 0)
        job_written(h->job, h->name); /* and touched */
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
static void uncreate(struct handle *h)
{
    if (h->made.tv_sec == 0 && h->made.tv_nsec == 0)
        return;
    if (job_uncreate(ctx()->jobs, h->job, h->name, &h->made) < 0)
        log_error("job '%s' key '%s': the journal cannot take back the new key; it "
                  "stays null",
                  h->job->name, h->name);
    h->made = (struct timespec){0};
}

static int commit_state(struct job *job, const char *buf, size_t len)
{
    char why[160] = "";
    int rc = job_replace(ctx()->jobs, job, buf, len, why, sizeof why);
    if (rc == -EIO)
        log_error("job '%s' .state.json: the journal cannot take the change; state "
                  "kept",
                  job->name);
    if (rc == -EINVAL) {
        log_error("job '%s' .state.json: not a JSON object (%s); state kept",
                  job->name, why);
        jobs_note_refused(ctx()->jobs, job->name, STATE_FILE, why);
    }
    if (rc == -EIO)
        metrics_refused(job->name, METRICS_REFUSED_JOURNAL);
    if (rc == 0)
        job_touch(job);
    return rc;
}

/* ---- attributes */

static void fill_dir(struct stat *st, const struct timespec *t)
{
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    st->st_uid = ctx()->uid;
    st->st_gid = ctx()->gid;
    st->st_mtim = st->st_ctim = st->st_atim = *t;
}

static void fill_file(struct stat *st, off_t size, const struct timespec *t)
{
    st->st_mode = S_IFREG | 0644;
    st->st_nlink = 1;
    st->st_size = size;
    st->st_blksize = 4096;
    st->st_blocks = (size + 511) / 512;
    st->st_uid = ctx()->uid;
    st->st_gid = ctx()->gid;
    st->st_mtim = st->st_ctim = st->st_atim = *t;
}

/* A key created and not yet closed reads as null (the value it gets when
 * closed with no content), but is not part of the state until then. */
static const char PENDING_TEXT[] = "null\n";

static int key_pending(struct job *job, const char *name)
{
    pthread_mutex_lock(&job->lock);
    int pending = strmap_get(job->pending, name) != NULL;
    pthread_mutex_unlock(&job->lock);
    return pending;
}

/* The text of a key, or of a pending key; NULL with *rc set. */
static char *key_text(struct job *job, const char *name, size_t *len, int *rc)
{
    char *text = state_value_text(job->state, name, len);
    if (text)
        return text;
    *rc = errno == ENOENT ? -ENOENT : -ENOMEM;
    if (*rc == -ENOENT && key_pending(job, name)) {
        text = strdup(PENDING_TEXT);
        *rc = text ? 0 : -ENOMEM;
        *len = text ? strlen(text) : 0;
    }
    return text;
}

/* Size of an entry, or -ENOENT. Caller holds a job reference. */
static off_t entry_size(struct job *job, const char *name, enum etype t)
{
    size_t len = 0;
    switch (t) {
    case E_STATUS:
        return -ENOENT; /* never inside a job */
    case E_READOUT: {
        char *text = job_readout_text(ctx()->jobs, job, &len);
        if (!text)
            return -ENOMEM;
        free(text);
        return (off_t)len;
    }
    case E_RUNNING:
    case E_COMPLETED:
        /* Read empty: a copy of a job holds empty control files, and
         * copying them back uploads nothing. */
        return hidden(job, t) ? -ENOENT : 0;
    case E_STATE:
        if (hidden(job, t))
            return -ENOENT;
        return (off_t)state_bytes_len(job->state) + 1; /* plus the newline */
    case E_SCRATCH: {
        pthread_mutex_lock(&job->lock);
        struct scratch_ref *r = strmap_get(job->scratch, name);
        off_t n = r ? (off_t)r->s.len : -ENOENT;
        pthread_mutex_unlock(&job->lock);
        return n;
    }
    case E_KEY: {
        ssize_t n = state_value_size(job->state, name);
        if (n >= 0)
            return n;
        return key_pending(job, name) ? (off_t)strlen(PENDING_TEXT) : -ENOENT;
    }
    }
    return -ENOENT;
}

/* ---- .history: the job's stored states, read-only (README, "History and
 * rewind"; fs/history.h). Not listed in the job: no copy of the job
 * carries it. */

static int histdir_getattr(const char *jobname, const char *entry, int kind, struct stat *st)
{
    struct job *job;
    int rc = get_job(jobname, &job);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&job->lock);
    struct timespec t = job->mtime;
    pthread_mutex_unlock(&job->lock);
    put_job(job);
    if (kind == 1) {
        fill_dir(st, &t);
        st->st_mode = S_IFDIR | 0555;
        return 0;
    }
    struct index_object o;
    if ((rc = history_find(ctx()->history, jobname, entry, &o)) < 0)
        return rc;
    t.tv_sec = (time_t)(o.c.last_modified_ms / 1000);
    t.tv_nsec = (long)(o.c.last_modified_ms % 1000) * 1000000;
    fill_file(st, (off_t)o.size, &t);
    st->st_mode = S_IFREG | 0444;
    candidate_clear(&o.c);
    return 0;
}

/* Upload order (the order of candidate_cmp), which is also the names'. */
static int histdir_list(const char *jobname, struct strlist *names)
{
    struct job *job;
    int rc = get_job(jobname, &job);
    if (rc < 0)
        return rc;
    put_job(job);
    if ((rc = strlist_add(names, ".")) < 0 || (rc = strlist_add(names, "..")) < 0)
        return rc;
    return history_list(ctx()->history, jobname, names);
}

/* Read-only: the object's body, fetched at open. */
static int histdir_open(const char *jobname, const char *entry, struct fuse_file_info *fi)
{
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
        return -EROFS;
    struct job *job;
    int rc = get_job(jobname, &job);
    if (rc < 0)
        return rc;
    struct index_object o;
    if ((rc = history_find(ctx()->history, jobname, entry, &o)) < 0) {
        put_job(job);
        return rc;
    }
    struct handle *h = handle_new(E_READOUT, job, entry); /* read-only bytes */
    if (!h) {
        candidate_clear(&o.c);
        put_job(job);
        return -ENOMEM;
    }
    size_t len = 0;
    rc = history_fetch(ctx()->history, jobname, &o, &h->buf, &len);
    candidate_clear(&o.c);
    if (rc < 0) {
        handle_free(h);
        return rc;
    }
    h->len = h->cap = len;
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->direct_io = 1;
    fi->noflush = 1;
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

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    char hjob[256], hentry[256];
    int hk = history_path(path, hjob, hentry);
    if (hk < 0)
        return hk;
    if (hk > 0) {
        memset(st, 0, sizeof *st);
        return histdir_getattr(hjob, hentry, hk, st);
    }

    struct fspath p;
    int rc = parse_path(path, &p);
    if (rc < 0)
        return rc;
    memset(st, 0, sizeof *st);
    if (p.depth == 0) {
        fill_dir(st, &ctx()->mounted);
        return 0;
    }
    if (is_status(&p)) {
        size_t len = 0;
        char *text = jobs_status_text(ctx()->jobs, &len);
        if (!text)
            return -ENOMEM;
        free(text);
        fill_file(st, (off_t)len, &ctx()->mounted);
        st->st_mode = S_IFREG | 0444;
        return 0;
    }
    struct job *job;
    if (fi && fh(fi)) {
        job = fh(fi)->job;
        job_ref(ctx()->jobs, job);
    } else if ((rc = get_job(p.job, &job)) < 0) {
        return rc;
    }
    pthread_mutex_lock(&job->lock);
    struct timespec t = job->mtime;
    pthread_mutex_unlock(&job->lock);
    if (p.depth == 1) {
        fill_dir(st, &t);
        put_job(job);
        return 0;
    }
    enum etype type = classify(p.name);
    off_t size;
    struct handle *h = fi ? fh(fi) : NULL;
    if (h && (h->type == E_KEY || h->type == E_STATE)) {
        pthread_mutex_lock(&h->lock);
        size = (off_t)h->len; /* what this open file holds */
        pthread_mutex_unlock(&h->lock);
    } else {
        size = entry_size(job, p.name, type);
    }
    /* A key's and a scratch file's mtime is its own last change (so
     * editors see no change behind their back, and ls -t orders keys);
     * the other entries show the job's. */
    if (size >= 0 && type == E_KEY)
        (void)state_mtime(job->state, p.name, &t, 0); /* pending: the job's */
    if (size >= 0 && type == E_SCRATCH) {
        pthread_mutex_lock(&job->lock);
        struct scratch_ref *r = strmap_get(job->scratch, p.name);
        if (r)
            t = r->s.mtime;
        pthread_mutex_unlock(&job->lock);
    }
    put_job(job);
    if (size < 0)
        return (int)size;
    fill_file(st, size, &t);
    if (type == E_READOUT)
        st->st_mode = S_IFREG | 0444;
    return 0;
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

/* The names of a directory, in the order readdir gives them: the root's
 * .status and jobs, or a job's control files, its keys in insertion order,
 * keys created and still open for their first write (listed like the empty
 * files they are, unless the state has them already), and scratch files. */
static int list_dir(const struct fspath *p, struct strlist *names)
{
    int rc = 0;
    static const char *const dots[] = {".", ".."};
    for (size_t i = 0; i < 2 && rc == 0; i++)
        rc = strlist_add(names, dots[i]);
    if (rc < 0)
        return rc;
    if (p->depth == 0) {
        int err = 0;
        json_t *jobs = jobs_list_names(ctx()->jobs, &err);
        if (!jobs)
            return err;
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
    struct job *job;
    if ((rc = get_job(p->job, &job)) < 0)
        return rc;
    if (state_count(job->state) > LARGE_STATE)
        loop_may_block(); /* copying many names */
    /* Not the job's .status: read by name, never copied with the job. */
    static const char *const fixed[] = {"running", "completed", STATE_FILE};
    static const enum etype fixed_type[] = {E_RUNNING, E_COMPLETED, E_STATE};
    for (size_t i = 0; i < 3 && rc == 0; i++)
        if (!hidden(job, fixed_type[i]))
            rc = strlist_add(names, fixed[i]);
    size_t n = 0;
    char **keys = rc == 0 ? state_keys(job->state, &n) : NULL;
    if (rc == 0 && !keys && n)
        rc = -ENOMEM;
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
    put_job(job);
    return rc;
}

/* A directory stream keeps the names it lists from its start (or its last
 * rewind) and hands them out by offset: each getdents costs what it
 * returns, not the whole directory (libfuse's own buffering walks its list
 * from the start on every call). */
static int op_opendir(const char *path, struct fuse_file_info *fi)
{
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
    struct strlist *names = calloc(1, sizeof *names);
    if (!names)
        return -ENOMEM;
    fi->fh = (uint64_t)(uintptr_t)names;
    return 0;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
    (void)flags;
    struct strlist *names = (struct strlist *)(uintptr_t)fi->fh;
    if (off < 0)
        return -EINVAL;
    /* The start or a rewind lists afresh; so does a stream whose first
     * read is at an offset (a seekdir to a telldir of another stream). */
    if (off == 0 || names->n == 0) {
        struct fspath p;
        int rc = parse_path(path, &p);
        if (rc < 0)
            return rc;
        strlist_clear(names);
        char hjob[256], hentry[256];
        if (history_path(path, hjob, hentry) == 1)
            rc = histdir_list(hjob, names);
        else
            rc = list_dir(&p, names);
        if (rc < 0) {
            strlist_clear(names);
            return rc;
        }
    }
    for (size_t i = (size_t)off; i < names->n; i++)
        if (filler(buf, names->v[i], NULL, (off_t)(i + 1), 0))
            break; /* the kernel's buffer is full */
    return 0;
}

static int op_releasedir(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    struct strlist *names = (struct strlist *)(uintptr_t)fi->fh;
    if (names) {
        strlist_clear(names);
        free(names);
    }
    return 0;
}

/* Refused at mkdir rather than at every upload: the longest key an upload
 * of this job can get (completed, the largest epoch) must fit S3's limit,
 * and its last segment the store's (a file name, on the dir store). */
static int job_name_fits(const char *job)
{
    char *key = layout_upload_key(&ctx()->jobs->layout, job, UPLOAD_COMPLETED, INT64_MAX);
    if (!key)
        return -ENOMEM;
    size_t seg_max = ctx()->jobs->store->max_segment;
    int fits = strlen(key) <= OBJECT_KEY_MAX &&
               (!seg_max || strlen(strrchr(key, '/') + 1) <= seg_max);
    free(key);
    return fits ? 0 : -ENAMETOOLONG;
}

static int op_mkdir(const char *path, mode_t mode)
{
    int hr = history_refuses(path, -EEXIST);
    if (hr)
        return hr;
    if (!may_change())
        return -EACCES;
    (void)mode;
    struct fspath p;
    int rc = parse_path(path, &p);
    if (rc < 0)
        return rc;
    if (p.depth != 1)
        return p.depth == 0 ? -EEXIST : -EPERM;
    if (is_status(&p))
        return -EEXIST;
    if (p.job[0] == '.')
        return -EPERM; /* not a job: git init MNT makes no job ".git" */
    if (!valid_utf8(p.job))
        return -EILSEQ;
    /* Control characters are refused: S3 listings without encoding-type=url
     * (which some servers ignore) cannot carry them (README, "Errors"). */
    for (const unsigned char *c = (const unsigned char *)p.job; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            return -EINVAL;
    if ((rc = job_name_fits(p.job)) < 0)
        return rc;
    struct job *job = NULL;
    rc = jobs_get(ctx()->jobs, p.job, 1, &job);
    if (rc == 0 && (rc = claim(job)) < 0)
        jobs_forget(ctx()->jobs, p.job); /* held elsewhere: not created here */
    if (job)
        put_job(job);
    return rc;
}

static int op_rmdir(const char *path)
{
    char hjob[256], hentry[256];
    int hk = history_path(path, hjob, hentry);
    if (hk)
        return hk < 0 ? hk : hk == 1 ? -EROFS : -ENOTDIR;
    struct fspath p;
    int rc = parse_change(path, &p);
    if (rc < 0)
        return rc;
    if (p.depth == 0)
        return -EBUSY;
    if (p.depth == 2) {
        struct job *job;
        if ((rc = get_job(p.job, &job)) < 0)
            return rc;
        off_t size = entry_size(job, p.name, classify(p.name));
        put_job(job);
        return size < 0 ? (int)size : -ENOTDIR;
    }
    rc = jobs_forget(ctx()->jobs, p.job);
    if (rc == -ENOENT) {
        /* A job only in the store: nothing to forget locally. */
        struct job *job;
        if ((rc = get_job(p.job, &job)) < 0)
            return rc;
        put_job(job);
        rc = jobs_forget(ctx()->jobs, p.job);
    }
    return rc;
}

/* ---- files */

static int open_status(struct fuse_file_info *fi, int create)
{
    if (create)
        return -EEXIST;
    if ((fi->flags & O_ACCMODE) != O_RDONLY)
        return -EACCES; /* read-only, for root too */
    struct handle *h = handle_new(E_STATUS, NULL, STATUS_FILE);
    if (!h)
        return -ENOMEM;
    h->buf = jobs_status_text(ctx()->jobs, &h->len);
    if (!h->buf) {
        handle_free(h);
        return -ENOMEM;
    }
    h->cap = h->len;
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->direct_io = 1;
    fi->noflush = 1; /* read-only: nothing to do at close */
    return 0;
}

static int open_entry(const char *path, struct fuse_file_info *fi, int create)
{
    struct fspath p;
    int rc = parse_path(path, &p);
    if (rc < 0)
        return rc;
    if (p.depth == 0)
        return -EISDIR;
    if (is_status(&p))
        return open_status(fi, create);
    if (p.depth == 1)
        return -EISDIR;
    struct job *job;
    if ((rc = get_job(p.job, &job)) < 0)
        return rc;
    enum etype type = classify(p.name);
    struct handle *h = handle_new(type, job, p.name);
    if (!h) {
        put_job(job);
        return -ENOMEM;
    }
    int acc = fi->flags & O_ACCMODE;
    if (acc != O_RDONLY && !may_change()) {
        handle_free(h);
        return -EACCES;
    }
    if ((acc != O_RDONLY || create) && type != E_SCRATCH && type != E_READOUT &&
        type != E_STATUS && (rc = claim(job)) < 0) {
        handle_free(h);
        return rc;
    }
    int trunc = (fi->flags & O_TRUNC) && acc != O_RDONLY;
    h->append = (fi->flags & O_APPEND) != 0;
    /* A removed running, completed or .state.json is back with a create;
     * a .state.json created so starts empty, as with O_TRUNC. */
    if (is_virtual(type) && hidden(job, type)) {
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
    case E_READOUT: {
        if (create) {
            rc = -EEXIST;
            break;
        }
        if (acc != O_RDONLY) {
            rc = -EACCES; /* read-only, for root too */
            break;
        }
        size_t len = 0;
        h->buf = job_readout_text(ctx()->jobs, job, &len);
        if (!h->buf)
            rc = -ENOMEM;
        h->len = h->cap = len;
        break;
    }
    case E_RUNNING:
    case E_COMPLETED:
        break; /* they read empty; a write uploads */
    case E_STATE:
        /* O_TRUNC empties this descriptor's bytes; nothing is committed
         * until something is written (shells flush a duplicate first). */
        if (rc == 0 && !trunc) {
            if (state_count(job->state) > LARGE_STATE)
                loop_may_block(); /* a long serialization */
            size_t len = 0;
            h->buf = state_to_bytes(job->state, &len);
            if (!h->buf) {
                rc = -ENOMEM;
                break;
            }
            h->len = len;
            h->cap = len + 1;
            h->buf[len] = '\n';
            h->len = len + 1;
        }
        break;
    case E_KEY: {
        if (create && !state_has(job->state, p.name)) {
            if (!valid_utf8(p.name)) {
                rc = -EILSEQ;
                break;
            }
            pthread_mutex_lock(&job->lock);
            intptr_t n = (intptr_t)strmap_get(job->pending, p.name);
            rc = strmap_put(job->pending, p.name, (void *)(n + 1), NULL);
            pthread_mutex_unlock(&job->lock);
            if (rc == 0)
                h->created = 1;
            break;
        }
        if (trunc) { /* the old value is not needed */
            if (!state_has(job->state, p.name) && !key_pending(job, p.name))
                rc = -ENOENT;
            break;
        }
        size_t len = 0;
        h->buf = key_text(job, p.name, &len, &rc);
        h->len = h->cap = len;
        break;
    }
    case E_SCRATCH: {
        pthread_mutex_lock(&job->lock);
        struct scratch_ref *r = strmap_get(job->scratch, p.name);
        if (!r && create) {
            r = scratch_new();
            if (!r || scratch_install(job, p.name, r) < 0) {
                free(r);
                r = NULL;
                rc = -ENOMEM;
            }
        } else if (!r) {
            rc = -ENOENT;
        }
        if (r) {
            if (trunc) {
                r->s.len = 0;
                clock_gettime(CLOCK_REALTIME, &r->s.mtime);
            }
            r->refs++;
            h->scratch = r;
        }
        pthread_mutex_unlock(&job->lock);
        break;
    }
    }
    if (rc < 0) {
        handle_free(h);
        return rc;
    }
    h->sequential = 1; /* empty, or the committed text: writes at its end are checked */
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->direct_io = 1; /* sizes change at close: never serve stale pages */
    /* A reader commits nothing at close, nor does a control file (it
     * uploads in write()) or a scratch file, so the kernel need not send a
     * FLUSH: one request less per read or commit. A key created by this
     * open is committed at its close, read-only or not. */
    fi->noflush = (acc == O_RDONLY && !h->created) || is_control(type) ||
                  type == E_SCRATCH;
    return 0;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
    char hjob[256], hentry[256];
    int hk = history_path(path, hjob, hentry);
    if (hk < 0)
        return hk;
    if (hk == 1)
        return -EISDIR;
    if (hk == 2)
        return histdir_open(hjob, hentry, fi);
    /* The kernel opens only names it holds, possibly from its cache: a name
     * gone since (a .state.json replace removed it) is ESTALE, on which the
     * kernel looks the name up afresh and retries the open once, as a
     * create when O_CREAT was given. ENOENT here would reach the caller,
     * and `echo 1 > key` would fail. */
    int rc = open_entry(path, fi, 0);
    return rc == -ENOENT ? -ESTALE : rc;
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int hr = history_refuses(path, -EISDIR);
    if (hr)
        return hr;
    if (!may_change())
        return -EACCES;
    (void)mode;
    struct fspath p;
    int rc = parse_path(path, &p);
    if (rc < 0)
        return rc;
    if (p.depth != 2)
        return -EPERM; /* only files inside a job */
    return open_entry(path, fi, 1);
}

static int op_read(const char *path, char *buf, size_t size, off_t off,
                   struct fuse_file_info *fi)
{
    (void)path;
    struct handle *h = fh(fi);
    if (off < 0)
        return -EINVAL;
    if (h->type == E_SCRATCH) {
        pthread_mutex_lock(&h->job->lock);
        struct scratch *s = &h->scratch->s;
        size_t n = (size_t)off >= s->len ? 0 : s->len - (size_t)off;
        if (n > size)
            n = size;
        if (n)
            memcpy(buf, s->data + off, n);
        pthread_mutex_unlock(&h->job->lock);
        return (int)n;
    }
    pthread_mutex_lock(&h->lock);
    size_t n = (size_t)off >= h->len ? 0 : h->len - (size_t)off;
    if (n > size)
        n = size;
    if (n)
        memcpy(buf, h->buf + off, n);
    pthread_mutex_unlock(&h->lock);
    return (int)n;
}

/* The write() that makes a key's bytes (or .state.json's) impossible as
 * JSON fails with EINVAL, so that shells and print() report it (README,
 * "Key files"); the close() then fails too and commits nothing. Checked
 * while the file was written only at its end since it was opened empty or
 * with its committed text (O_APPEND), and holds at most CHECK_MAX bytes: a value written in one go is parsed once, here, and the
 * close commits that parse. Larger values are checked at close only.
 * Caller holds h->lock; returns rc or -EINVAL. */
#define CHECK_MAX (64 * 1024)

static int check_written(struct handle *h, int rc)
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
        log_error("job '%s' .state.json: not a JSON object (%s); state kept",
                  h->job->name, why);
        jobs_note_refused(ctx()->jobs, h->job->name, STATE_FILE, why);
    } else {
        refused(h->job, h->name, why);
        /* A new key whose first value is refused never exists. */
        pending_leave(h);
        h->failed = 1;
        uncreate(h);
    }
    return -EINVAL;
}

static int op_write(const char *path, const char *data, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)path;
    struct handle *h = fh(fi);
    int rc;
    switch (h->type) {
    case E_RUNNING:
    case E_COMPLETED:
        /* update()/complete(): the bytes do not matter, the upload does. */
        rc = job_upload(ctx()->jobs, h->job, control_kind(h->type));
        return rc < 0 ? rc : (int)size;
    case E_READOUT:
        return -EBADF; /* opened read-only */
    case E_SCRATCH: {
        pthread_mutex_lock(&h->job->lock);
        struct scratch_ref *r = h->scratch;
        if (h->append)
            off = (off_t)r->s.len;
        rc = bytes_write(&r->s.data, &r->s.len, &r->cap, data, size, off,
                         KEY_VALUE_MAX);
        clock_gettime(CLOCK_REALTIME, &r->s.mtime);
        pthread_mutex_unlock(&h->job->lock);
        return rc;
    }
    default:
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
                     h->type == E_STATE ? STATE_TEXT_MAX : KEY_VALUE_MAX);
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

/* Commits what an open key or .state.json holds. Caller holds h->lock. */
static int commit_handle(struct handle *h)
{
    int rc = 0;
    switch (h->type) {
    case E_STATUS:
    case E_READOUT:
        break; /* read-only */
    case E_KEY:
        if (h->refused) {
            rc = -EINVAL; /* refused at its write, and counted there */
        } else if (h->dirty) {
            rc = commit_key(h->job, h->name, h->buf ? h->buf : "", h->len, h->parsed);
            h->parsed = NULL; /* taken */
            h->dirty = 0;
            if (rc == -EINVAL)
                uncreate(h);
            h->made = (struct timespec){0}; /* a value of its own now, or none */
            /* In the state now, or refused: a new key whose first value
             * was refused does not exist, from the failed close on (not
             * from the asynchronous release). */
            pending_leave(h);
            if (rc != 0)
                h->failed = 1;
        } else if (h->created) {
            rc = commit_created(h);
            pending_leave(h);
            if (rc != 0)
                h->failed = 1;
        }
        break;
    case E_STATE:
        if (h->refused)
            rc = -EINVAL;
        else if (h->dirty && (rc = commit_state(h->job, h->buf, h->len)) == 0)
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

static int op_flush(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    struct handle *h = fh(fi);
    pthread_mutex_lock(&h->lock);
    int rc = commit_handle(h);
    pthread_mutex_unlock(&h->lock);
    return rc;
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    handle_free(fh(fi));
    return 0;
}

/* fsync commits what the file holds (as close would) and makes the journal
 * durable: the change then survives power loss too. */
static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)path;
    (void)datasync;
    struct handle *h = fi ? fh(fi) : NULL;
    int rc = 0;
    if (h) {
        pthread_mutex_lock(&h->lock);
        rc = commit_handle(h);
        pthread_mutex_unlock(&h->lock);
    }
    if (rc == 0)
        rc = jobs_sync(ctx()->jobs);
    return rc;
}

/* Truncate the text of an entry that is not open, then commit it. */
static int truncate_entry(struct job *job, const char *name, enum etype type, off_t size)
{
    if (size < 0)
        return -EINVAL;
    if (type == E_READOUT)
        return -EPERM;
    if (is_virtual(type) && hidden(job, type))
        return -ENOENT;
    if (is_control(type))
        return job_upload(ctx()->jobs, job, control_kind(type));
    if (type == E_SCRATCH) {
        pthread_mutex_lock(&job->lock);
        struct scratch_ref *r = strmap_get(job->scratch, name);
        int rc = -ENOENT;
        if (r) {
            rc = 0;
            if ((size_t)size > r->s.len) {
                char zero = 0;
                rc = bytes_write(&r->s.data, &r->s.len, &r->cap, &zero, 1, size - 1,
                                 KEY_VALUE_MAX);
                rc = rc < 0 ? rc : 0;
            } else {
                r->s.len = (size_t)size;
            }
            clock_gettime(CLOCK_REALTIME, &r->s.mtime);
        }
        pthread_mutex_unlock(&job->lock);
        return rc;
    }
    size_t len = 0;
    char *text = type == E_STATE ? state_to_bytes(job->state, &len)
                                 : state_value_text(job->state, name, &len);
    if (!text)
        return type == E_KEY && errno == ENOENT ? -ENOENT : -ENOMEM;
    if (type == E_STATE)
        text[len++] = '\n'; /* over the NUL: the file's own last byte */
    size_t cap = len;
    int rc = 0;
    if ((size_t)size > len) {
        char zero = 0;
        rc = bytes_write(&text, &len, &cap, &zero, 1, size - 1,
                         type == E_STATE ? STATE_TEXT_MAX : KEY_VALUE_MAX);
    } else {
        len = (size_t)size;
    }
    if (rc >= 0)
        rc = type == E_STATE ? commit_state(job, text, len)
                             : commit_key(job, name, text, len, NULL);
    free(text);
    return rc;
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    int hr = history_refuses(path, -EISDIR);
    if (hr)
        return hr;
    struct fspath p;
    int rc = parse_change(path, &p);
    if (rc < 0)
        return rc;
    if (is_status(&p))
        return -EPERM;
    if (p.depth < 2)
        return -EISDIR;
    struct handle *h = fi ? fh(fi) : NULL;
    if (h && (h->type == E_KEY || h->type == E_STATE)) {
        if (size < 0)
            return -EINVAL;
        pthread_mutex_lock(&h->lock);
        if ((size_t)size > h->len) {
            char zero = 0;
            rc = bytes_write(&h->buf, &h->len, &h->cap, &zero, 1, size - 1,
                             h->type == E_STATE ? STATE_TEXT_MAX : KEY_VALUE_MAX);
            rc = rc < 0 ? rc : 0;
        } else {
            h->len = (size_t)size;
        }
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
    struct job *job;
    if ((rc = get_job(p.job, &job)) < 0)
        return rc;
    enum etype type = classify(p.name);
    if (type == E_KEY || type == E_STATE)
        rc = claim(job);
    if (rc == 0)
        rc = truncate_entry(job, p.name, type, size);
    put_job(job);
    return rc;
}

static int op_unlink(const char *path)
{
    int hr = history_refuses(path, -EISDIR);
    if (hr)
        return hr;
    struct fspath p;
    int rc = parse_change(path, &p);
    if (rc < 0)
        return rc;
    if (is_status(&p))
        return -EPERM;
    if (p.depth < 2)
        return -EISDIR;
    struct job *job;
    if ((rc = get_job(p.job, &job)) < 0)
        return rc;
    enum etype type = classify(p.name);
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
        if (state_has(job->state, p.name) && (rc = claim(job)) < 0)
            break;
        rc = job_remove(ctx()->jobs, job, p.name);
        if (rc == -ENOENT) {
            pthread_mutex_lock(&job->lock);
            if (strmap_get(job->pending, p.name))
                rc = -EBUSY; /* being created: it exists once closed */
            pthread_mutex_unlock(&job->lock);
        }
        break;
    case E_SCRATCH:
        pthread_mutex_lock(&job->lock);
        struct scratch_ref *r = strmap_remove(job->scratch, p.name);
        scratch_unref(r);
        pthread_mutex_unlock(&job->lock);
        rc = r ? 0 : -ENOENT;
        break;
    }
    /* A scratch file is no part of the state: its removal leaves the job's
     * mtime, which .state.json shows, as it was (vim's probe and swap
     * files would otherwise make every save of .state.json a conflict). */
    if (rc == 0 && type != E_SCRATCH)
        job_touch(job);
    put_job(job);
    return rc;
}

/* Does `name` exist in the job? */
static int entry_exists(struct job *job, const char *name)
{
    return entry_size(job, name, classify(name)) >= 0;
}

/* rename onto .state.json (os.replace of a whole state, rsync's temp
 * file): from_bytes with the file's bytes, like a write; the source is gone
 * (a key source is replaced with the rest of the state). A scratch file
 * renamed onto running or completed (rsync -a restoring a copy): the
 * scratch file goes, nothing is uploaded (README, "Control files"). */
static int rename_onto_virtual(struct job *job, const char *from, enum etype tf,
                               enum etype tt, unsigned int flags)
{
    if (!entry_exists(job, from))
        return -ENOENT;
    if ((flags & RENAME_NOREPLACE) && !hidden(job, tt))
        return -EEXIST;
    int rc = 0;
    if (tt == E_STATE) {
        size_t len = 0;
        char *text = NULL;
        if (tf == E_KEY) {
            text = state_value_text(job->state, from, &len);
            if (!text)
                return errno == ENOENT ? -ENOENT : -ENOMEM;
        } else {
            pthread_mutex_lock(&job->lock);
            struct scratch_ref *r = strmap_get(job->scratch, from);
            len = r ? r->s.len : 0;
            if (r && (text = malloc(len + 1)))
                memcpy(text, r->s.data ? r->s.data : "", len);
            pthread_mutex_unlock(&job->lock);
            if (!r)
                return -ENOENT;
            if (!text)
                return -ENOMEM;
        }
        rc = commit_state(job, text, len);
        free(text);
    }
    if (rc == 0 && tf == E_SCRATCH) {
        pthread_mutex_lock(&job->lock);
        scratch_unref(strmap_remove(job->scratch, from));
        pthread_mutex_unlock(&job->lock);
    }
    if (rc == 0) {
        set_hidden(job, tt, 0);
        job_touch(job);
    }
    return rc;
}

static int rename_in_job(struct job *job, const char *from, const char *to,
                         unsigned int flags)
{
    enum etype tf = classify(from), tt = classify(to);
    if (tf != E_KEY && tf != E_SCRATCH)
        return entry_exists(job, from) ? -EPERM : -ENOENT;
    if (tt == E_STATE || (is_control(tt) && tf == E_SCRATCH))
        return rename_onto_virtual(job, from, tf, tt, flags);
    if (tt != E_KEY && tt != E_SCRATCH)
        return -EPERM;
    if (!entry_exists(job, from))
        return -ENOENT;
    if ((flags & RENAME_NOREPLACE) && entry_exists(job, to))
        return -EEXIST;
    if (strcmp(from, to) == 0)
        return 0;
    if (!valid_utf8(to))
        return -EILSEQ;
    int rc = 0;
    if ((tf == E_KEY || tt == E_KEY) && (rc = claim(job)) < 0)
        return rc;
    if (tf == E_KEY && tt == E_KEY) {
        rc = job_rename(ctx()->jobs, job, from, to);
        if (rc == 0)
            job_written(job, to);
    } else if (tf == E_KEY) { /* key -> scratch: its text becomes bytes */
        size_t len = 0;
        char *text = state_value_text(job->state, from, &len);
        if (!text)
            return errno == ENOENT ? -ENOENT : -ENOMEM;
        struct scratch_ref *r = scratch_new();
        if (!r) {
            free(text);
            return -ENOMEM;
        }
        r->s.data = text;
        r->s.len = r->cap = len;
        /* The key leaves the state first (journaled); then its text is
         * installed as the scratch file. */
        /* A tool's backup (sed -i.bak, vim, cp --backup): uploads wait a
         * moment for the key's new value (README, "Scratch files"). */
        if (job_moved(job, from) < 0) {
            scratch_unref(r);
            return -ENOMEM;
        }
        rc = job_remove(ctx()->jobs, job, from);
        pthread_mutex_lock(&job->lock);
        if (rc == 0)
            rc = scratch_install(job, to, r);
        if (rc < 0)
            scratch_unref(r);
        pthread_mutex_unlock(&job->lock);
        if (rc < 0)
            job_written(job, from); /* not moved after all */
    } else if (tt == E_KEY) { /* scratch -> key: the write-then-rename idiom */
        pthread_mutex_lock(&job->lock);
        struct scratch_ref *r = strmap_get(job->scratch, from);
        char *copy = NULL;
        size_t len = r ? r->s.len : 0;
        if (r && !(copy = malloc(len + 1)))
            rc = -ENOMEM;
        else if (r)
            memcpy(copy, r->s.data ? r->s.data : "", len);
        if (r)
            r->refs++;
        pthread_mutex_unlock(&job->lock);
        if (!r)
            return -ENOENT;
        if (rc == 0)
            rc = commit_key(job, to, copy, len, NULL); /* takes the job lock itself */
        free(copy);
        pthread_mutex_lock(&job->lock);
        if (rc == 0 && strmap_get(job->scratch, from) == r)
            scratch_unref(strmap_remove(job->scratch, from));
        scratch_unref(r);
        pthread_mutex_unlock(&job->lock);
    } else {
        pthread_mutex_lock(&job->lock);
        struct scratch_ref *r = strmap_remove(job->scratch, from);
        if (!r) {
            rc = -ENOENT;
        } else if ((rc = scratch_install(job, to, r)) < 0) {
            strmap_put(job->scratch, from, r, NULL);
        }
        pthread_mutex_unlock(&job->lock);
    }
    if (rc == 0 && (tf == E_KEY || tt == E_KEY)) /* scratch to scratch: no change */
        job_touch(job);
    return rc;
}

static int op_rename(const char *from, const char *to, unsigned int flags)
{
    int hr = history_refuses(from, -EROFS);
    if (!hr)
        hr = history_refuses(to, -EROFS);
    if (hr)
        return hr;
    if (!may_change())
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
    if ((rc = get_job(a.job, &job)) < 0)
        return rc;
    rc = rename_in_job(job, a.name, b.name, flags);
    put_job(job);
    return rc;
}

static int op_utimens(const char *path, const struct timespec tv[2],
                      struct fuse_file_info *fi)
{
    int hr = history_refuses(path, -EROFS);
    if (hr)
        return hr;
    if (!may_change())
        return -EACCES;
    (void)fi;
    struct fspath p;
    int rc = parse_path(path, &p);
    if (rc < 0 || p.depth == 0)
        return rc;
    if (is_status(&p))
        return -EPERM;
    struct job *job;
    if ((rc = get_job(p.job, &job)) < 0)
        return rc;
    if (p.depth == 2) {
        enum etype t = classify(p.name);
        struct timespec now, m = tv[1];
        clock_gettime(CLOCK_REALTIME, &now);
        if (m.tv_nsec == UTIME_NOW)
            m = now;
        if (!entry_exists(job, p.name)) {
            rc = -ENOENT;
        } else if (is_control(t)) {
            /* touch (the current time) is update()/complete(); explicit
             * times, as cp -a, tar -x and rsync -a set them when they
             * restore a copy, are not (README, "Control files"). */
            if (tv[1].tv_nsec == UTIME_NOW)
                rc = job_upload(ctx()->jobs, job, control_kind(t));
        } else if (tv[1].tv_nsec == UTIME_OMIT) {
            /* the access time only: not kept */
        } else if (t == E_KEY) {
            rc = state_mtime(job->state, p.name, &m, 1);
            if (rc == -ENOENT)
                rc = 0; /* pending: its close sets it */
        } else if (t == E_SCRATCH) {
            pthread_mutex_lock(&job->lock);
            struct scratch_ref *r = strmap_get(job->scratch, p.name);
            if (r)
                r->s.mtime = m;
            pthread_mutex_unlock(&job->lock);
        }
    }
    put_job(job);
    return rc;
}

/* Permissions are the mount's (private to its owner unless allow_other);
 * chmod and chown are accepted so that cp -p and editors work. */
static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int hr = history_refuses(path, -EROFS);
    if (hr)
        return hr;
    if (!may_change())
        return -EACCES;
    (void)mode;
    struct stat st;
    return op_getattr(path, &st, fi);
}

static int op_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    int hr = history_refuses(path, -EROFS);
    if (hr)
        return hr;
    if (!may_change())
        return -EACCES;
    (void)uid;
    (void)gid;
    struct stat st;
    return op_getattr(path, &st, fi);
}

static int op_statfs(const char *path, struct statvfs *sv)
{
    (void)path;
    memset(sv, 0, sizeof *sv);
    sv->f_bsize = sv->f_frsize = 4096;
    sv->f_namemax = 255;
    return 0;
}

static int op_not_here(void) { return -EPERM; }

/* Links and device nodes: EPERM, but EROFS in .history, where nothing is
 * created (README, "Errors a user can see"). */
static int op_mknod(const char *path, mode_t mode, dev_t dev)
{
    (void)mode;
    (void)dev;
    int hr = history_refuses(path, -EROFS);
    return hr ? hr : op_not_here();
}

static int op_symlink(const char *target, const char *path)
{
    (void)target;
    int hr = history_refuses(path, -EROFS);
    return hr ? hr : op_not_here();
}

static int op_link(const char *from, const char *to)
{
    (void)from;
    int hr = history_refuses(to, -EROFS);
    return hr ? hr : op_not_here();
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC; /* O_TRUNC is not a truncate */
    cfg->hard_remove = 1; /* no .fuse_hidden renames of open files */
    cfg->direct_io = 1;
    /* The kernel caches names for a second and revalidates them after
     * that; a cached name that is gone is caught at open (see op_open).
     * Attributes are not cached: sizes change at close. Absent names are
     * not cached: a .state.json replace adds names behind its back. */
    cfg->entry_timeout = 1.0;
    cfg->attr_timeout = 0;
    cfg->negative_timeout = 0;
    cfg->use_ino = 0;
    return fuse_get_context()->private_data;
}

const struct fuse_operations bookmarkfs_ops = {
    .init = op_init,
    .getattr = op_getattr,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .mkdir = op_mkdir,
    .rmdir = op_rmdir,
    .open = op_open,
    .create = op_create,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .truncate = op_truncate,
    .unlink = op_unlink,
    .rename = op_rename,
    .utimens = op_utimens,
    .chmod = op_chmod,
    .chown = op_chown,
    .statfs = op_statfs,
    .mknod = op_mknod,
    .symlink = op_symlink,
    .link = op_link,
};
