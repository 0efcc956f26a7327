#include "fs/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "util/files.h"
#include "util/log.h"
#include "util/strmap.h"
#include "util/textbuf.h"
#include "util/vec.h"

/* ---- the crash hook (test builds only: meson -Dtest_hooks=true)
 *
 * BOOKMARKFS_CRASH_AT=N makes the daemon exit, as kill -9 would leave it
 * (no cleanup, the page cache keeps what was written), just before its Nth
 * journal write or fsync after the journal was opened: each pwrite, ftruncate,
 * rename, punch, fsync and fdatasync is one point. BOOKMARKFS_CRASH_TEAR=N
 * makes the Nth pwrite (counting pwrites only) stop at its last 512-byte
 * sector boundary, as a power loss would tear it (a write inside one sector
 * is written whole), and exit. The README's "Tests" says what walks every N. */
#ifdef BOOKMARKFS_TEST_HOOKS
#include <stdatomic.h>

#define CRASH_EXIT 86
#define SECTOR 512 /* what a disk writes whole */

static atomic_ulong crash_points, crash_writes; /* counted once armed */
static unsigned long crash_at, crash_tear;
static atomic_int crash_armed;

static void crash_arm(void)
{
    const char *at = getenv("BOOKMARKFS_CRASH_AT");
    const char *tear = getenv("BOOKMARKFS_CRASH_TEAR");
    crash_at = at ? strtoul(at, NULL, 10) : 0;
    crash_tear = tear ? strtoul(tear, NULL, 10) : 0;
    atomic_store(&crash_armed, crash_at || crash_tear);
}

static void crash_now(const char *what, unsigned long n)
{
    char msg[128];
    int len = snprintf(msg, sizeof msg,
                       "bookmarkfs: test hook: exit at journal point %lu (%s)\n", n, what);
    if (len > 0 && write(2, msg, (size_t)len) < 0)
        len = 0; /* exiting anyway */
    _exit(CRASH_EXIT);
}

/* Before a journal write or fsync: exits at the chosen point. For a pwrite
 * of n bytes, returns how many to write (n, or half when torn: the caller
 * then calls crash_torn). */
static size_t crash_point(const char *what, size_t n, off_t off)
{
    if (!atomic_load(&crash_armed))
        return n;
    unsigned long at = atomic_fetch_add(&crash_points, 1) + 1;
    if (at == crash_at)
        crash_now(what, at);
    if (n == 0)
        return n;
    unsigned long w = atomic_fetch_add(&crash_writes, 1) + 1; /* pwrites only */
    if (w == crash_tear) {
        /* Torn as power loss tears it: the sectors before its last sector
         * boundary are written, a write inside one sector is whole. */
        off_t last = (off + (off_t)n - 1) / SECTOR * SECTOR;
        return last > off ? (size_t)(last - off) : n;
    }
    return n;
}

static int crash_tearing(void)
{
    return crash_tear && atomic_load(&crash_writes) == crash_tear;
}

static void crash_torn(void) { crash_now("torn write", atomic_load(&crash_writes)); }
#else
#define crash_arm() ((void)0)
#define crash_point(what, n, off) (n)
#define crash_torn() ((void)0)
#define crash_tearing() 0
#endif

static int j_ftruncate(int fd, off_t len)
{
    (void)crash_point("ftruncate", 0, 0);
    return ftruncate(fd, len);
}

static int j_fsync(int fd)
{
    (void)crash_point("fsync", 0, 0);
    return fsync(fd);
}

static int j_fdatasync(int fd)
{
    (void)crash_point("fdatasync", 0, 0);
    return fdatasync(fd);
}

static int j_punch(int fd, off_t off, off_t len)
{
    (void)crash_point("punch", 0, 0);
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
}

static int j_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
    (void)crash_point("rename", 0, 0);
    return renameat(olddirfd, oldpath, newdirfd, newpath);
}

#define FILE_NAME "journal"
/* In a record's head instead of its checksum: the record is a pad, dropped
 * records left in place (see pad_dropped). */
#define PAD_MAGIC "bfs-pad!"
#define TMP_NAME "journal.tmp"
#define LOAD_FLAGS JSON_ALLOW_NUL
#define DUMP_FLAGS JSON_COMPACT

/* Where a record is in the file. */
struct jrec {
    off_t off;
    size_t size; /* head + payload */
    uint64_t seq;
    char *job;
    int is_base;
};

struct journal {
    pthread_mutex_t lock;
    pthread_mutex_t compact_lock; /* one compaction at a time */
    char *dir, *path, *tmp_path;
    int fd, dirfd, lockfd;
    off_t end;          /* end of the last valid record */
    uint64_t last_seq;
    struct jrec *recs;
    size_t n, cap;
    int broken;         /* a failed append could not be cut off: refuse more */
    int can_undo;
    off_t undo_off;
    EVP_MD_CTX *append_md; /* reused by appends (under lock) */
};

static const char *const OP_NAMES[] = {"set", "remove", "rename", "replace", "base"};
#define OP_COUNT 5

/* ---- small helpers */

/* SHA-256 fetched once: an implicit fetch on every record cost as much as
 * hashing it. */
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_md;

static void sha256_fetch(void) { sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL); }

/* ctx: a digest context to reuse, or NULL for a fresh one. */
static int checksum(EVP_MD_CTX *ctx, const unsigned char len_le[4], const char *payload,
                    size_t n, unsigned char out[8])
{
    if (pthread_once(&sha256_once, sha256_fetch) != 0 || !sha256_md)
        return -ENOMEM;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *own = ctx ? NULL : EVP_MD_CTX_new();
    EVP_MD_CTX *c = ctx ? ctx : own;
    int ok = c && EVP_DigestInit_ex(c, sha256_md, NULL) == 1 &&
             EVP_DigestUpdate(c, len_le, 4) == 1 && EVP_DigestUpdate(c, payload, n) == 1 &&
             EVP_DigestFinal_ex(c, md, &mdlen) == 1 && mdlen >= 8;
    EVP_MD_CTX_free(own);
    if (!ok)
        return -ENOMEM;
    memcpy(out, md, 8);
    return 0;
}

void journal_identity_hash(const char *identity, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (EVP_Digest(identity, strlen(identity), md, &mdlen, EVP_sha256(), NULL) != 1 ||
        mdlen != 32) {
        memset(md, 0, sizeof md); /* cannot happen short of ENOMEM */
        mdlen = 32;
    }
    for (unsigned int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
    out[64] = '\0';
}

static void put_le32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static int pwrite_all(int fd, const void *buf, size_t n, off_t off)
{
    size_t torn = crash_point("pwrite", n, off);
    if (torn <= n && crash_tearing()) {
        (void)files_write_all(fd, buf, torn, off); /* the first bytes only */
        crash_torn(); /* exits */
    }
    return files_write_all(fd, buf, n, off);
}

static char *path_join(const char *a, const char *b)
{
    char *out = NULL;
    return asprintf(&out, "%s/%s", a, b) < 0 ? NULL : out;
}

/* As ssh and sudo do with their files: the cache dir, the identity dir and
 * the files in it must be the mounting user's and writable by no one else
 * (README, "The local journal"). 0, or -EPERM with one line in err. */
static int check_owner(int fd, const char *what, const char *path, char *err,
                       size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        snprintf(err, errlen, "cannot inspect the %s %s: %s", what, path, strerror(e));
        return -e;
    }
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen, "the %s %s belongs to uid %lu, not to the mounting user "
                 "(uid %lu); refusing to use it", what, path, (unsigned long)st.st_uid,
                 (unsigned long)geteuid());
        return -EPERM;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(err, errlen, "the %s %s is writable by %s (mode %04o); refusing to use "
                 "it (chmod go-w)", what, path,
                 st.st_mode & S_IWOTH ? "other users" : "its group",
                 (unsigned)(st.st_mode & 07777));
        return -EPERM;
    }
    return 0;
}

/* Opens name in dirfd without following a symbolic link, creating it (0600,
 * O_EXCL) when it is missing. */
static int open_private(int dirfd, const char *name)
{
    for (int tries = 0; tries < 2; tries++) {
        int fd = openat(dirfd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0 || errno != ENOENT)
            return fd;
        fd = openat(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0 || errno != EEXIST)
            return fd;
    }
    errno = EEXIST;
    return -1;
}

/* ---- records <-> JSON */

static json_t *encode(const struct journal_record *rec, uint64_t seq)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad = json_object_set_new(o, "seq", json_integer((json_int_t)seq)) ||
              json_object_set_new(o, "op", json_string(OP_NAMES[rec->op])) ||
              json_object_set_new(o, "job", json_string(rec->job));
    switch (rec->op) {
    case JOURNAL_SET: /* joined by serialize() */
        bad = 1;
        break;
    case JOURNAL_REMOVE:
        bad = bad || json_object_set_new(o, "key", json_string(rec->key));
        break;
    case JOURNAL_RENAME:
        bad = bad || json_object_set_new(o, "key", json_string(rec->key)) ||
              json_object_set_new(o, "to", json_string(rec->to));
        break;
    case JOURNAL_REPLACE:
        bad = bad || !rec->text ||
              json_object_set_new(o, "text", json_stringn(rec->text, rec->text_len));
        break;
    case JOURNAL_BASE:
        if (rec->bucket)
            bad = bad || !rec->key ||
                  json_object_set_new(o, "bucket", json_string(rec->bucket)) ||
                  json_object_set_new(o, "key", json_string(rec->key));
        else
            bad = bad || !rec->text ||
                  json_object_set_new(o, "text", json_stringn(rec->text, rec->text_len));
        break;
    }
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Fills rec from a parsed payload (pointers into o). 0 or -EINVAL. */
static int decode(json_t *o, struct journal_record *rec)
{
    memset(rec, 0, sizeof *rec);
    json_t *seq = json_object_get(o, "seq");
    const char *op = json_string_value(json_object_get(o, "op"));
    rec->job = json_string_value(json_object_get(o, "job"));
    if (!json_is_integer(seq) || json_integer_value(seq) <= 0 || !op || !rec->job)
        return -EINVAL;
    rec->seq = (uint64_t)json_integer_value(seq);
    size_t i;
    for (i = 0; i < OP_COUNT && strcmp(op, OP_NAMES[i]) != 0; i++)
        ;
    if (i == OP_COUNT)
        return -EINVAL;
    rec->op = (enum journal_op)i;
    rec->key = json_string_value(json_object_get(o, "key"));
    switch (rec->op) {
    case JOURNAL_SET:
        rec->value = json_object_get(o, "value");
        return rec->key && rec->value ? 0 : -EINVAL;
    case JOURNAL_REMOVE:
        return rec->key ? 0 : -EINVAL;
    case JOURNAL_RENAME:
        rec->to = json_string_value(json_object_get(o, "to"));
        return rec->key && rec->to ? 0 : -EINVAL;
    case JOURNAL_REPLACE: {
        json_t *t = json_object_get(o, "text");
        rec->text = json_string_value(t);
        rec->text_len = json_string_length(t);
        return rec->text ? 0 : -EINVAL;
    }
    case JOURNAL_BASE: {
        rec->bucket = json_string_value(json_object_get(o, "bucket"));
        json_t *t = json_object_get(o, "text");
        rec->text = json_string_value(t);
        rec->text_len = json_string_length(t);
        return (rec->bucket && rec->key) || (!rec->bucket && rec->text) ? 0 : -EINVAL;
    }
    }
    return -EINVAL;
}

/* ---- the index */

static void index_free(struct jrec *recs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(recs[i].job);
    free(recs);
}

static int index_reserve(struct journal *jn)
{
    return vec_reserve(&jn->recs, &jn->cap, jn->n + 1, sizeof *jn->recs, 64);
}

/* Reads and checks the record at off (file size `size`). 0 with the parsed
 * payload in *out; 1 when it is not a valid record (*why says why);
 * -errno on a read error. */
static int read_record(int fd, off_t off, off_t size, json_t **out, size_t *rsize,
                       const char **why)
{
    *out = NULL;
    if (size - off < JOURNAL_RECORD_HEAD) {
        *why = "torn record header";
        return 1;
    }
    unsigned char head[JOURNAL_RECORD_HEAD];
    int rc = files_read_all(fd, head, sizeof head, off);
    if (rc < 0)
        return rc;
    uint32_t len = get_le32(head);
    if (len == 0) {
        *why = "empty record";
        return 1;
    }
    if ((off_t)len > size - off - JOURNAL_RECORD_HEAD) {
        *why = "torn record";
        return 1;
    }
    if (memcmp(head + 4, PAD_MAGIC, 8) == 0) { /* dropped records, skipped */
        *rsize = JOURNAL_RECORD_HEAD + (size_t)len;
        return 2;
    }
    char *payload = malloc(len);
    if (!payload)
        return -ENOMEM;
    rc = files_read_all(fd, payload, len, off + JOURNAL_RECORD_HEAD);
    unsigned char sum[8];
    if (rc == 0)
        rc = checksum(NULL, head, payload, len, sum);
    if (rc < 0) {
        free(payload);
        return rc;
    }
    if (memcmp(sum, head + 4, 8) != 0) {
        free(payload);
        *why = "checksum mismatch";
        return 1;
    }
    json_error_t jerr;
    json_t *o = json_loadb(payload, len, LOAD_FLAGS, &jerr);
    free(payload);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        *why = "record is not a JSON object";
        return 1;
    }
    *out = o;
    *rsize = JOURNAL_RECORD_HEAD + (size_t)len;
    return 0;
}

/* Builds the index from the file; cuts a bad tail. */
static int scan(struct journal *jn, off_t size)
{
    off_t off = JOURNAL_HEADER_LEN;
    const char *why = NULL;
    while (off < size) {
        json_t *o;
        size_t rsize = 0;
        int rc = read_record(jn->fd, off, size, &o, &rsize, &why);
        if (rc < 0)
            return rc;
        if (rc == 2) {
            off += (off_t)rsize;
            continue;
        }
        if (rc > 0)
            break;
        struct journal_record rec;
        if (decode(o, &rec) < 0) {
            why = "record has an unknown form";
        } else if (rec.seq <= jn->last_seq) {
            why = "record out of sequence";
        } else if ((rc = index_reserve(jn)) < 0 ||
                   !(jn->recs[jn->n].job = strdup(rec.job))) {
            json_decref(o);
            return rc < 0 ? rc : -ENOMEM;
        } else {
            jn->recs[jn->n].off = off;
            jn->recs[jn->n].size = rsize;
            jn->recs[jn->n].seq = rec.seq;
            jn->recs[jn->n].is_base = rec.op == JOURNAL_BASE;
            jn->n++;
            jn->last_seq = rec.seq;
            why = NULL;
        }
        json_decref(o);
        if (why)
            break;
        off += (off_t)rsize;
    }
    jn->end = off;
    if (off < size) {
        log_warn("journal %s: dropped %lld bytes at offset %lld (%s); %zu records "
                 "before it are kept",
                 jn->path, (long long)(size - off), (long long)off, why, jn->n);
        if (j_ftruncate(jn->fd, off) != 0 || j_fsync(jn->fd) != 0)
            return -errno;
    }
    return 0;
}

/* ---- open and close */

static int write_header(int fd)
{
    int rc = pwrite_all(fd, JOURNAL_HEADER, JOURNAL_HEADER_LEN, 0);
    if (rc == 0 && j_fsync(fd) != 0)
        rc = -errno;
    return rc;
}

static void write_identity(const char *dir, const char *identity)
{
    char *p = path_join(dir, "identity");
    if (!p)
        return;
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
        size_t n = strlen(identity);
        if (pwrite_all(fd, identity, n, 0) < 0 || pwrite_all(fd, "\n", 1, (off_t)n) < 0)
            log_warn("journal: cannot write %s: %s", p, strerror(errno));
        close(fd);
    }
    free(p);
}

/* Opens the journal file, setting it aside when it is not one. */
static int open_file(struct journal *jn, off_t *size, char *err, size_t errlen)
{
    jn->fd = open_private(jn->dirfd, FILE_NAME);
    if (jn->fd < 0)
        return -errno;
    int rc = check_owner(jn->fd, "journal", jn->path, err, errlen);
    if (rc < 0)
        return rc;
    struct stat st;
    if (fstat(jn->fd, &st) != 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EINVAL;
    if ((st.st_mode & 077) && fchmod(jn->fd, 0600) != 0)
        return -errno;
    char head[JOURNAL_HEADER_LEN];
    if (st.st_size >= JOURNAL_HEADER_LEN) {
        rc = files_read_all(jn->fd, head, sizeof head, 0);
        if (rc < 0)
            return rc;
        if (memcmp(head, JOURNAL_HEADER, JOURNAL_HEADER_LEN) == 0) {
            *size = st.st_size;
            return 0;
        }
    }
    if (st.st_size > 0) {
        /* Not a journal of this version: keep it for a human, start anew. */
        char *aside = NULL;
        if (asprintf(&aside, "%s.unreadable-%lld", jn->path, (long long)time(NULL)) < 0)
            return -ENOMEM;
        rc = rename(jn->path, aside) == 0 ? 0 : -errno;
        log_error("journal %s: no journal header (%lld bytes); moved to %s", jn->path,
                  (long long)st.st_size, aside);
        free(aside);
        if (rc < 0)
            return rc;
        close(jn->fd);
        jn->fd = openat(jn->dirfd, FILE_NAME,
                        O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (jn->fd < 0)
            return -errno;
    }
    rc = write_header(jn->fd);
    if (rc == 0 && j_fsync(jn->dirfd) != 0)
        rc = -errno;
    *size = JOURNAL_HEADER_LEN;
    return rc;
}

int journal_open(const char *cache_dir, const char *identity, struct journal **out,
                 char *err, size_t errlen)
{
    struct journal *jn = calloc(1, sizeof *jn);
    if (!jn) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    jn->fd = jn->dirfd = jn->lockfd = -1;
    if (pthread_mutex_init(&jn->lock, NULL) != 0) {
        free(jn);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (pthread_mutex_init(&jn->compact_lock, NULL) != 0) {
        pthread_mutex_destroy(&jn->lock);
        free(jn);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    char hex[65];
    journal_identity_hash(identity, hex);
    char *lockp = NULL;
    int cachefd = -1;
    int rc = files_mkdir_p(cache_dir, 0700, 0);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create the cache dir %s: %s", cache_dir,
                 strerror(-rc));
        goto fail;
    }
    /* Never through a symbolic link, and only a directory of our own. */
    cachefd = open(cache_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (cachefd < 0) {
        rc = -errno;
        if (errno == ELOOP || errno == ENOTDIR)
            snprintf(err, errlen, "the cache dir %s is a symbolic link or not a "
                     "directory; refusing to follow it", cache_dir);
        else
            snprintf(err, errlen, "cannot open the cache dir %s: %s", cache_dir,
                     strerror(errno));
        goto fail;
    }
    if ((rc = check_owner(cachefd, "cache dir", cache_dir, err, errlen)) < 0)
        goto fail;
    /* Absolute: the daemon changes to / when it goes to the background. */
    char *abs = realpath(cache_dir, NULL);
    if (!abs) {
        rc = -errno;
        snprintf(err, errlen, "cannot resolve the cache dir %s: %s", cache_dir,
                 strerror(errno));
        goto fail;
    }
    jn->dir = path_join(abs, hex);
    free(abs);
    if (jn->dir) {
        jn->path = path_join(jn->dir, FILE_NAME);
        jn->tmp_path = path_join(jn->dir, TMP_NAME);
        lockp = path_join(jn->dir, "lock");
    }
    if (!jn->dir || !jn->path || !jn->tmp_path || !lockp) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (mkdirat(cachefd, hex, 0700) != 0 && errno != EEXIST) {
        rc = -errno;
        snprintf(err, errlen, "cannot create %s: %s", jn->dir, strerror(errno));
        goto fail;
    }
    jn->dirfd = openat(cachefd, hex, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (jn->dirfd < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot open %s: %s", jn->dir,
                 errno == ELOOP || errno == ENOTDIR ? "a symbolic link or not a directory"
                                                    : strerror(errno));
        goto fail;
    }
    if ((rc = check_owner(jn->dirfd, "journal directory", jn->dir, err, errlen)) < 0)
        goto fail;
    jn->lockfd = open_private(jn->dirfd, "lock");
    if (jn->lockfd < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot open %s: %s", lockp, strerror(errno));
        goto fail;
    }
    if ((rc = check_owner(jn->lockfd, "lock file", lockp, err, errlen)) < 0)
        goto fail;
    if (flock(jn->lockfd, LOCK_EX | LOCK_NB) != 0) {
        rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        if (errno == EWOULDBLOCK)
            snprintf(err, errlen,
                     "the journal %s is in use by another bookmarkfs mount of the "
                     "same store and dataset",
                     jn->path);
        else
            snprintf(err, errlen, "cannot lock %s: %s", lockp, strerror(errno));
        goto fail;
    }
    write_identity(jn->dir, identity);
    unlink(jn->tmp_path); /* a compaction that did not finish */
    off_t size = 0;
    err[0] = '\0';
    rc = open_file(jn, &size, err, errlen);
    if (rc == 0)
        rc = scan(jn, size);
    if (rc < 0) {
        if (!err[0])
            snprintf(err, errlen, "cannot read the journal %s: %s", jn->path,
                     strerror(-rc));
        goto fail;
    }
    free(lockp);
    crash_arm();
    close(cachefd);
    if (jn->n)
        log_info("journal %s: %zu change%s not yet uploaded", jn->path, jn->n,
                 jn->n == 1 ? "" : "s");
    *out = jn;
    return 0;
fail:
    free(lockp);
    if (cachefd >= 0)
        close(cachefd);
    journal_close(jn);
    return rc < 0 ? rc : -EIO;
}

void journal_close(struct journal *jn)
{
    if (!jn)
        return;
    if (jn->fd >= 0)
        close(jn->fd);
    if (jn->dirfd >= 0)
        close(jn->dirfd);
    if (jn->lockfd >= 0)
        close(jn->lockfd); /* releases the flock */
    index_free(jn->recs, jn->n);
    EVP_MD_CTX_free(jn->append_md);
    pthread_mutex_destroy(&jn->lock);
    pthread_mutex_destroy(&jn->compact_lock);
    free(jn->dir);
    free(jn->path);
    free(jn->tmp_path);
    free(jn);
}

const char *journal_path(const struct journal *jn) { return jn->path; }

void journal_lock(struct journal *jn) { pthread_mutex_lock(&jn->lock); }

int journal_trylock(struct journal *jn) { return pthread_mutex_trylock(&jn->lock); }

void journal_unlock(struct journal *jn) { pthread_mutex_unlock(&jn->lock); }

uint64_t journal_last_seq_locked(const struct journal *jn) { return jn->last_seq; }

/* ---- append */

/* A string as JSON, escaped by jansson. 0, -EINVAL (not UTF-8), -ENOMEM. */
static int put_string(struct textbuf *b, const char *str)
{
    json_t *j = json_string(str);
    if (!j)
        return -EINVAL;
    int rc = json_dump_callback(j, textbuf_put, b, DUMP_FLAGS | JSON_ENCODE_ANY);
    json_decref(j);
    return rc == 0 ? 0 : -ENOMEM;
}

/* The record's JSON into b. A set record (every key write) is joined from
 * its members, the strings escaped by jansson and the value's compact text
 * as it came out of jansson: no object is built and the value is not
 * serialized again. 0, -EINVAL (a name or text that is not UTF-8, or a set
 * without its text), -ENOMEM. */
static int serialize(const struct journal_record *rec, uint64_t seq, struct textbuf *b)
{
    if (rec->op == JOURNAL_SET) {
        if (!rec->value_text)
            return -EINVAL;
        char head[64];
        int n = snprintf(head, sizeof head, "{\"seq\":%" PRIu64 ",\"op\":\"set\",\"job\":",
                         seq);
        int rc = n > 0 && (size_t)n < sizeof head ? textbuf_put(head, (size_t)n, b) : -1;
        if (rc != 0)
            return -ENOMEM;
        if ((rc = put_string(b, rec->job)) < 0 ||
            (rc = textbuf_put(",\"key\":", 7, b) == 0 ? 0 : -ENOMEM) < 0 ||
            (rc = put_string(b, rec->key)) < 0)
            return rc;
        if (textbuf_put(",\"value\":", 9, b) != 0 ||
            textbuf_put(rec->value_text, rec->value_len, b) != 0 || textbuf_put("}", 1, b) != 0)
            return -ENOMEM;
        return 0;
    }
    json_t *o = encode(rec, seq);
    if (!o)
        return -EINVAL; /* (or no memory) */
    int rc = json_dump_callback(o, textbuf_put, b, DUMP_FLAGS) == 0 ? 0 : -ENOMEM;
    json_decref(o);
    return rc;
}

/* The whole record (head and payload) into b, which the caller frees.
 * *n: the payload's length. 0, -EINVAL (not representable), -ENOMEM.
 * Caller holds the lock (the digest context is shared). */
static int build_record(struct journal *jn, const struct journal_record *rec, uint64_t seq,
                        struct textbuf *b, size_t *n)
{
    /* One pass: the head's room first, then the payload after it. A
     * replace's text is reserved for up front (escaping adds a little). */
    static const char no_head[JOURNAL_RECORD_HEAD];
    size_t hint = rec->text ? rec->text_len + rec->text_len / 8 + 256 : 0;
    int rc = textbuf_reserve(b, JOURNAL_RECORD_HEAD + hint) == 0 &&
                     textbuf_put(no_head, sizeof no_head, b) == 0
                 ? serialize(rec, seq, b)
                 : -ENOMEM;
    if (rc < 0)
        return rc;
    *n = b->len > JOURNAL_RECORD_HEAD ? b->len - JOURNAL_RECORD_HEAD : 0;
    if (*n == 0 || *n > UINT32_MAX)
        return -ENOMEM;
    put_le32((unsigned char *)b->p, (uint32_t)*n);
    if (!jn->append_md && !(jn->append_md = EVP_MD_CTX_new()))
        return -ENOMEM;
    return checksum(jn->append_md, (unsigned char *)b->p, b->p + JOURNAL_RECORD_HEAD, *n,
                    (unsigned char *)b->p + 4);
}

int journal_append_locked(struct journal *jn, struct journal_record *rec)
{
    jn->can_undo = 0;
    if (jn->broken)
        return -EIO;
    uint64_t seq = jn->last_seq + 1;
    struct textbuf b;
    textbuf_init(&b);
    size_t n = 0;
    int rc = build_record(jn, rec, seq, &b, &n);
    if (rc == -EINVAL) { /* nothing was written */
        textbuf_free(&b);
        return rc;
    }
    char *job = rc == 0 ? strdup(rec->job) : NULL;
    if (rc == 0)
        rc = job ? index_reserve(jn) : -ENOMEM;
    if (rc == 0)
        rc = pwrite_all(jn->fd, b.p, JOURNAL_RECORD_HEAD + n, jn->end);
    textbuf_free(&b);
    if (rc < 0) {
        free(job);
        /* Nothing of a failed record may stay: later records would sit
         * behind garbage and be dropped at replay. */
        if (j_ftruncate(jn->fd, jn->end) != 0) {
            jn->broken = 1;
            log_error("journal %s: cannot cut off a failed append (%s); refusing "
                      "further changes",
                      jn->path, strerror(errno));
        }
        log_error("journal %s: cannot append a change of job '%s': %s", jn->path,
                  rec->job, strerror(-rc));
        return rc;
    }
    jn->recs[jn->n] = (struct jrec){.off = jn->end, .size = JOURNAL_RECORD_HEAD + n,
                                    .seq = seq, .job = job,
                                    .is_base = rec->op == JOURNAL_BASE};
    jn->n++;
    jn->undo_off = jn->end;
    jn->can_undo = 1;
    jn->end += (off_t)(JOURNAL_RECORD_HEAD + n);
    jn->last_seq = seq;
    rec->seq = seq;
    return 0;
}

int journal_undo_locked(struct journal *jn)
{
    if (!jn->can_undo)
        return -EINVAL;
    jn->can_undo = 0;
    if (j_ftruncate(jn->fd, jn->undo_off) != 0) {
        int e = errno;
        jn->broken = 1;
        log_error("journal %s: cannot take back a change (%s); refusing further "
                  "changes",
                  jn->path, strerror(e));
        return -e;
    }
    jn->n--;
    free(jn->recs[jn->n].job);
    jn->end = jn->undo_off;
    return 0;
}

int journal_sync(struct journal *jn)
{
    /* On a duplicate, so appends need not wait for the disk. Should a
     * compaction replace the file meanwhile, it fsynced the copy of every
     * record, and the old file stays in place until its rename is durable. */
    pthread_mutex_lock(&jn->lock);
    int fd = fcntl(jn->fd, F_DUPFD_CLOEXEC, 0);
    int rc = fd < 0 ? -errno : 0;
    pthread_mutex_unlock(&jn->lock);
    if (rc == 0) {
        if (j_fdatasync(fd) != 0)
            rc = -errno;
        close(fd);
    }
    if (rc < 0)
        log_error("journal %s: fsync failed: %s", jn->path, strerror(-rc));
    return rc;
}

/* ---- reading back */

/* journal_each over the records from index `from` on, or only the one at
 * `from` when `one`. Caller holds the lock. */
static int each_locked(struct journal *jn, const char *job, size_t from, int one,
                       int (*fn)(const struct journal_record *rec, void *arg), void *arg)
{
    int rc = 0;
    for (size_t i = from; i < jn->n && rc == 0 && (!one || i == from); i++) {
        if (strcmp(jn->recs[i].job, job) != 0)
            continue;
        json_t *o = NULL;
        size_t rsize = 0;
        const char *why = NULL;
        rc = read_record(jn->fd, jn->recs[i].off, jn->end, &o, &rsize, &why);
        if (rc == 2)
            why = "a dropped record";
        struct journal_record rec;
        if (rc == 0 && decode(o, &rec) < 0)
            rc = 1, why = "record has an unknown form";
        if (rc > 0) {
            log_error("journal %s: record at offset %lld cannot be read back (%s)",
                      jn->path, (long long)jn->recs[i].off, why);
            rc = -EIO;
        } else if (rc == 0) {
            rc = fn(&rec, arg);
        }
        json_decref(o);
    }
    return rc;
}

int journal_each(struct journal *jn, const char *job,
                 int (*fn)(const struct journal_record *rec, void *arg), void *arg)
{
    pthread_mutex_lock(&jn->lock);
    int rc = each_locked(jn, job, 0, 0, fn, arg);
    pthread_mutex_unlock(&jn->lock);
    return rc;
}

int journal_last_base(struct journal *jn, const char *job,
                      int (*fn)(const struct journal_record *rec, void *arg), void *arg)
{
    pthread_mutex_lock(&jn->lock);
    size_t i = jn->n;
    while (i > 0 && !(jn->recs[i - 1].is_base && strcmp(jn->recs[i - 1].job, job) == 0))
        i--;
    int rc = i > 0 ? each_locked(jn, job, i - 1, 1, fn, arg) : 0;
    pthread_mutex_unlock(&jn->lock);
    return rc;
}

size_t journal_count(struct journal *jn, const char *job)
{
    size_t n = 0;
    pthread_mutex_lock(&jn->lock);
    for (size_t i = 0; i < jn->n; i++)
        n += strcmp(jn->recs[i].job, job) == 0;
    pthread_mutex_unlock(&jn->lock);
    return n;
}

size_t journal_changes_locked(struct journal *jn, const char *job)
{
    size_t n = 0;
    for (size_t i = 0; i < jn->n; i++)
        n += !jn->recs[i].is_base && strcmp(jn->recs[i].job, job) == 0;
    return n;
}

size_t journal_changes(struct journal *jn, const char *job)
{
    pthread_mutex_lock(&jn->lock);
    size_t n = journal_changes_locked(jn, job);
    pthread_mutex_unlock(&jn->lock);
    return n;
}

struct job_count {
    char *job;
    size_t n;
};

int journal_jobs(struct journal *jn, int (*fn)(const char *job, size_t n, void *arg),
                 void *arg)
{
    /* Collected under the lock, reported outside it: fn may use the journal. */
    struct strmap *seen;
    struct job_count *list = NULL;
    size_t count = 0;
    int rc = strmap_new(&seen);
    pthread_mutex_lock(&jn->lock);
    if (rc == 0 && jn->n && !(list = calloc(jn->n, sizeof *list)))
        rc = -ENOMEM;
    for (size_t i = 0; i < jn->n && rc == 0; i++) {
        uintptr_t at = (uintptr_t)strmap_get(seen, jn->recs[i].job);
        if (at) {
            list[at - 1].n += !jn->recs[i].is_base;
            continue;
        }
        list[count].job = strdup(jn->recs[i].job);
        if (!list[count].job) {
            rc = -ENOMEM;
            break;
        }
        list[count].n = !jn->recs[i].is_base;
        count++;
        rc = strmap_put(seen, jn->recs[i].job, (void *)(uintptr_t)count, NULL);
    }
    pthread_mutex_unlock(&jn->lock);
    strmap_free(seen, NULL);
    for (size_t i = 0; i < count; i++) {
        if (rc == 0)
            rc = fn(list[i].job, list[i].n, arg);
        free(list[i].job);
    }
    free(list);
    return rc;
}

/* ---- compaction */

/* Copies records into the compacted file at *off, indexing them in out. An
 * entry with off < 0 is the new base record, whose bytes are in `base`. */
static int copy_records(struct journal *jn, const struct jrec *from, size_t n, int fd,
                        off_t *off, struct jrec *out, size_t *nout, char **buf,
                        size_t *bufcap, const char *base)
{
    for (size_t i = 0; i < n; i++) {
        const struct jrec *r = &from[i];
        if (r->size > *bufcap) {
            char *b = realloc(*buf, r->size);
            if (!b)
                return -ENOMEM;
            *buf = b;
            *bufcap = r->size;
        }
        int rc = 0;
        if (r->off < 0)
            memcpy(*buf, base, r->size);
        else
            rc = files_read_all(jn->fd, *buf, r->size, r->off);
        if (rc == 0)
            rc = pwrite_all(fd, *buf, r->size, *off);
        if (rc < 0)
            return rc;
        if (!(out[*nout].job = strdup(r->job)))
            return -ENOMEM;
        out[*nout].off = *off;
        out[*nout].size = r->size;
        out[*nout].seq = r->seq;
        out[*nout].is_base = r->is_base;
        (*nout)++;
        *off += (off_t)r->size;
    }
    return 0;
}

int journal_compact(struct journal *jn, const char *job, uint64_t upto)
{
    uint64_t unused;
    return journal_compact_base(jn, job, upto, NULL, 0, &unused);
}

/* The dropped records are the file's tail, from record `first` on: cuts
 * the file back to that record in place. This needs no room on the disk (a
 * copy would, and a journal that filled its disk could then never shrink
 * again); a crash at any point leaves either the old records (the dropped
 * ones are uploaded) or the ones kept. Caller holds both locks. */
static int cut_back(struct journal *jn, const char *job, size_t first)
{
    off_t at = jn->recs[first].off;
    int rc = j_ftruncate(jn->fd, at) == 0 ? 0 : -errno;
    if (rc == 0) {
        for (size_t i = first; i < jn->n; i++)
            free(jn->recs[i].job);
        jn->n = first;
        jn->end = at;
        jn->can_undo = 0;
        jn->broken = 0;
        if (j_fdatasync(jn->fd) != 0) /* the records are uploaded: no loss */
            log_warn("journal %s: fsync failed: %s", jn->path, strerror(errno));
    } else {
        log_warn("journal %s: cutting it back failed (%s); the entries of job '%s' stay",
                 jn->path, strerror(-rc), job);
    }
    return rc;
}

/* Is record i one the compaction drops? */
static int dropped_rec(const struct journal *jn, size_t i, const char *job, uint64_t upto)
{
    return jn->recs[i].seq <= upto && strcmp(jn->recs[i].job, job) == 0;
}

/* Has `job` no records after upto? Caller holds the lock. */
static int only_dropped(const struct journal *jn, const char *job, uint64_t upto)
{
    for (size_t i = 0; i < jn->n; i++)
        if (jn->recs[i].seq > upto && strcmp(jn->recs[i].job, job) == 0)
            return 0;
    return 1;
}

/* A compaction with no room for its copy (the disk is full): each run of
 * dropped records becomes one pad in place, its first head rewritten (12
 * bytes over bytes that exist: no room needed; a head that would straddle
 * a 512-byte sector, which a power loss could tear, leaves its run as it
 * is), the heads made durable, and then the whole pages inside each pad
 * given back to the file system (FALLOC_FL_PUNCH_HOLE). The records kept stay where they are; the next
 * compaction that has room copies them and the pads go. A crash leaves each
 * run whole or a pad. Caller holds both locks. */
static int pad_dropped(struct journal *jn, const char *job, uint64_t upto)
{
    size_t out = 0, padded = 0;
    int rc = 0;
    off_t runs[64][2];
    size_t nruns = 0;
    for (size_t i = 0; i < jn->n;) {
        if (rc < 0 || !dropped_rec(jn, i, job, upto) || nruns == 64) {
            jn->recs[out++] = jn->recs[i++];
            continue;
        }
        off_t start = jn->recs[i].off, end = start;
        size_t j = i;
        while (j < jn->n && dropped_rec(jn, j, job, upto) && jn->recs[j].off == end)
            end += (off_t)jn->recs[j++].size;
        unsigned char head[JOURNAL_RECORD_HEAD];
        put_le32(head, (uint32_t)(end - start - JOURNAL_RECORD_HEAD));
        memcpy(head + 4, PAD_MAGIC, 8);
        int in_one_sector = start / 512 == (start + JOURNAL_RECORD_HEAD - 1) / 512;
        if (end - start - JOURNAL_RECORD_HEAD > UINT32_MAX || !in_one_sector)
            rc = 1; /* the head could be torn: this run is left as it is */
        else
            rc = pwrite_all(jn->fd, head, sizeof head, start);
        if (rc != 0) { /* this run stays as it was */
            rc = rc > 0 ? 0 : rc;
            for (; i < j; i++)
                jn->recs[out++] = jn->recs[i];
            continue;
        }
        for (; i < j; i++)
            free(jn->recs[i].job);
        padded += j - i;
        runs[nruns][0] = start;
        runs[nruns][1] = end;
        nruns++;
    }
    jn->n = out;
    jn->can_undo = 0;
    if (nruns && j_fdatasync(jn->fd) != 0) {
        log_warn("journal %s: fsync failed: %s", jn->path, strerror(errno));
        return padded ? 0 : -EIO; /* no punching: the pads' heads may not be on disk */
    }
    for (size_t r = 0; r < nruns; r++) {
        off_t from = (runs[r][0] + JOURNAL_RECORD_HEAD + 4095) / 4096 * 4096;
        off_t to = runs[r][1] / 4096 * 4096;
        if (to > from && j_punch(jn->fd, from, to - from) != 0) {
            log_warn("journal %s: cannot give back the space of dropped records: %s",
                     jn->path, strerror(errno));
            break;
        }
    }
    log_info("journal %s: no room to compact it; %zu records of job '%s' dropped in place",
             jn->path, padded, job);
    return nruns ? 0 : rc < 0 ? rc : -ENOSPC;
}

/* Two phases, so appends wait only for the second: the records present at
 * the start (less the dropped ones, the base in the place of the first) are
 * copied and fsynced outside the lock; then, under it, the records appended
 * meanwhile are copied too and the new file takes the old one's place. One
 * compaction at a time (only a compaction replaces jn->fd, so phase one may
 * read it unlocked). */
int journal_compact_base(struct journal *jn, const char *job, uint64_t upto,
                         const struct journal_record *base, int always,
                         uint64_t *base_seq)
{
    *base_seq = 0;
    pthread_mutex_lock(&jn->compact_lock);
    pthread_mutex_lock(&jn->lock);
    size_t snap_n = jn->n, keep = 0, dropped = 0, first = 0, kept_job = 0;
    for (size_t i = 0; i < snap_n; i++) {
        int mine = strcmp(jn->recs[i].job, job) == 0;
        if (mine && jn->recs[i].seq <= upto) {
            if (dropped++ == 0)
                first = i;
        } else {
            keep++;
            kept_job += mine;
        }
    }
    if (dropped == 0) {
        pthread_mutex_unlock(&jn->lock);
        pthread_mutex_unlock(&jn->compact_lock);
        return 0;
    }
    int want_base = base && (kept_job || always);
    size_t tail = first;
    while (tail < snap_n && strcmp(jn->recs[tail].job, job) == 0 &&
           jn->recs[tail].seq <= upto)
        tail++;
    if (tail == snap_n && !want_base) { /* every record from the first dropped on */
        int rc = cut_back(jn, job, first);
        pthread_mutex_unlock(&jn->lock);
        pthread_mutex_unlock(&jn->compact_lock);
        return rc;
    }
    /* The base takes the first dropped record's place and seq: the order
     * of seqs in the file stays. */
    struct textbuf bb;
    textbuf_init(&bb);
    size_t base_n = 0;
    uint64_t bseq = jn->recs[first].seq;
    int rc = want_base ? build_record(jn, base, bseq, &bb, &base_n) : 0;
    size_t total = keep + (size_t)want_base;
    struct jrec *kept = calloc(total, sizeof *kept);
    size_t nk = 0;
    if (rc == 0 && !kept)
        rc = -ENOMEM;
    for (size_t i = 0; i < snap_n && rc == 0; i++) {
        const struct jrec *r = &jn->recs[i];
        if (strcmp(r->job, job) == 0 && r->seq <= upto) {
            if (i != first || !want_base)
                continue;
            kept[nk] = (struct jrec){.off = -1, .size = JOURNAL_RECORD_HEAD + base_n,
                                     .seq = bseq, .is_base = 1};
        } else {
            kept[nk] = *r;
        }
        if (!(kept[nk].job = strdup(r->job)))
            rc = -ENOMEM;
        else
            nk++;
    }
    pthread_mutex_unlock(&jn->lock);

    /* Phase one, unlocked: what was there, less the dropped records. */
    struct jrec *recs = NULL;
    size_t nr = 0, cap = total;
    char *buf = NULL;
    size_t bufcap = 0;
    int fd = -1;
    off_t off = JOURNAL_HEADER_LEN;
    if (rc == 0 && !(recs = calloc(total, sizeof *recs)))
        rc = -ENOMEM;
    if (rc == 0) {
        fd = openat(jn->dirfd, TMP_NAME,
                    O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
            rc = -errno;
    }
    if (rc == 0)
        rc = pwrite_all(fd, JOURNAL_HEADER, JOURNAL_HEADER_LEN, 0);
    if (rc == 0)
        rc = copy_records(jn, kept, nk, fd, &off, recs, &nr, &buf, &bufcap, bb.p);
    if (rc == 0 && j_fsync(fd) != 0)
        rc = -errno;
    index_free(kept, nk);
    textbuf_free(&bb);

    /* Phase two, locked: the records appended meanwhile, then the swap. */
    pthread_mutex_lock(&jn->lock);
    size_t more = rc == 0 ? jn->n - snap_n : 0;
    for (size_t i = snap_n; i < snap_n + more && !want_base; i++)
        if (strcmp(jn->recs[i].job, job) == 0)
            rc = -EAGAIN; /* changes that need the base just left out: keep all */
    if (rc == 0 && more) {
        struct jrec *r = realloc(recs, (cap + more) * sizeof *r);
        if (!r) {
            rc = -ENOMEM;
        } else {
            recs = r;
            cap += more;
            rc = copy_records(jn, jn->recs + snap_n, more, fd, &off, recs, &nr, &buf,
                              &bufcap, NULL);
        }
        if (rc == 0 && j_fsync(fd) != 0)
            rc = -errno;
    }
    free(buf);
    if (rc == 0 && j_renameat(jn->dirfd, TMP_NAME, jn->dirfd, FILE_NAME) != 0)
        rc = -errno;
    if (rc < 0) {
        if (fd >= 0) {
            close(fd);
            unlinkat(jn->dirfd, TMP_NAME, 0);
        }
        index_free(recs, nr);
        int room = rc == -ENOSPC || rc == -EDQUOT || rc == -EFBIG;
        uint64_t appended = 0;
        if (room && want_base && only_dropped(jn, job, upto)) {
            /* The base alone (no change of the job after it): appended, as
             * the last base it counts, whatever stays before it; it may fit
             * in the room the file's last block still has. */
            struct journal_record b = *base;
            if (journal_append_locked(jn, &b) == 0)
                appended = b.seq;
        }
        if (room && (!want_base || appended)) {
            if (pad_dropped(jn, job, upto) == 0 || appended) {
                pthread_mutex_unlock(&jn->lock);
                pthread_mutex_unlock(&jn->compact_lock);
                *base_seq = appended;
                return 0;
            }
        }
        pthread_mutex_unlock(&jn->lock);
        pthread_mutex_unlock(&jn->compact_lock);
        log_warn("journal %s: compaction failed (%s); the entries of job '%s' stay",
                 jn->path, strerror(-rc), job);
        return rc;
    }
    close(jn->fd);
    jn->fd = fd;
    index_free(jn->recs, jn->n);
    jn->recs = recs;
    jn->n = nr;
    jn->cap = cap;
    jn->end = off;
    jn->can_undo = 0;
    jn->broken = 0;
    pthread_mutex_unlock(&jn->lock);
    /* Until this, a power loss leaves the old file: a superset. */
    if (j_fsync(jn->dirfd) != 0)
        log_warn("journal %s: fsync of its directory failed: %s", jn->dir,
                 strerror(errno));
    pthread_mutex_unlock(&jn->compact_lock);
    *base_seq = want_base ? bseq : 0;
    return 0;
}
