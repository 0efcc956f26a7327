/* The local directory store: object KEY of bucket B is the file
 * ROOT/B/KEY, key segments being directories. Writes go to a temp file in
 * ROOT/.tmp/, are fsync'd and renamed into place, so a reader sees either
 * the old object or the new one, whole. Listing walks only the part of the
 * tree a prefix can reach, and follows no symlinks (S3 has none, and a loop
 * must not hang a listing).
 *
 * Gets and puts keep no state; listings keep what they read of the tree
 * under a lock (see "list" below), so the store is safe from any thread. */
#include "store/store.h"
#include "util/files.h"
#include "util/hex.h"
#include "util/log.h"
#include "util/strmap.h"
#include "util/vec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE_MAX 1000
#define SEGMENT_MAX 255
#define DIR_MODE 0700
#define FILE_MODE 0600 /* state may be private */
#define TMP_DIR ".tmp"

struct dir_store {
    struct store base;
    char *root; /* absolute, no trailing slash (unless "/") */
    pthread_mutex_t list_lock; /* listings: dirs and etags */
    struct strmap *dirs;       /* "<bucket>/<dir>" -> struct dcache */
    struct strmap *etags;      /* object path -> struct etag_entry */
    uint64_t dir_reads;        /* directories read by listings (list lock) */
};

static struct dir_store *ds(struct store *st) { return (struct dir_store *)st; }

static void put_msg(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void put_msg(char *buf, size_t len, const char *fmt, ...)
{
    if (!buf || len == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

static char *path_join(const char *a, const char *b)
{
    char *s;
    if (asprintf(&s, "%s/%s", a, b) < 0)
        return NULL;
    return s;
}

static int valid_segment(const char *s, size_t n)
{
    return n > 0 && n <= SEGMENT_MAX && !(n == 1 && s[0] == '.') &&
           !(n == 2 && s[0] == '.' && s[1] == '.');
}

/* A key the directory can hold: non-empty, relative, every segment a valid
 * file name. Anything else could escape the bucket or alias another key. */
static int valid_key(const char *key)
{
    if (!key || !*key)
        return 0;
    const char *seg = key;
    for (;;) {
        const char *end = strchr(seg, '/');
        size_t n = end ? (size_t)(end - seg) : strlen(seg);
        if (!valid_segment(seg, n))
            return 0;
        if (!end)
            return 1;
        seg = end + 1;
    }
}

/* Bucket names never start with '.', which keeps ROOT/.tmp out of reach. */
static int valid_bucket(const char *bucket)
{
    return bucket && bucket[0] && bucket[0] != '.' && !strchr(bucket, '/') &&
           strlen(bucket) <= SEGMENT_MAX;
}

static int errno_to_store(int e)
{
    switch (e) {
    case ENOMEM:
        return -ENOMEM;
    case EACCES:
    case EPERM:
    case EROFS:
        return -EACCES;
    case ENOTDIR:
    case EISDIR:
    case ENAMETOOLONG:
    case EEXIST:
        return -EINVAL; /* a file and a "directory" key collide */
    default:
        return -EIO;
    }
}

/* The hex MD5 of body. 0 or -EIO. */
static int md5_buf(const void *body, size_t len, char out[STORE_ETAG_MAX])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (!EVP_Digest(body, len, md, &n, EVP_md5(), NULL))
        return -EIO;
    hex_encode(md, n, out);
    return 0;
}

/* MD5 of a file's content, streamed. 0 or a negative errno (-EIO when
 * the digest itself fails). */
static int md5_file(int dirfd, const char *name, char out[STORE_ETAG_MAX])
{
    int fd =
        openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) ? 0 : -EIO;
    unsigned char buf[65536];
    while (rc == 0) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            rc = -errno;
        else if (r == 0)
            break;
        else if (!EVP_DigestUpdate(ctx, buf, (size_t)r))
            rc = -EIO;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (rc == 0 && !EVP_DigestFinal_ex(ctx, md, &n))
        rc = -EIO;
    EVP_MD_CTX_free(ctx);
    close(fd);
    if (rc < 0)
        return rc;
    hex_encode(md, n, out);
    return 0;
}

/* Distinguishes "no such key" from "no such bucket" after a lookup failed. */
static int missing(struct dir_store *d, const char *bucket)
{
    char *bdir = path_join(d->root, bucket);
    if (!bdir)
        return -ENOMEM;
    struct stat sb;
    int rc = stat(bdir, &sb) == 0 && S_ISDIR(sb.st_mode) ? -ENOENT : -ENXIO;
    free(bdir);
    return rc;
}

/* ---- get ---- */

static int dir_get(struct store *st, const char *bucket, const char *key,
                   char **data, size_t *len, struct store_error *err)
{
    struct dir_store *d = ds(st);
    if (!valid_bucket(bucket) || !valid_key(key))
        return store_fail(err, -EINVAL, "the dir store cannot hold object key \"%s\" in "
                          "bucket \"%s\"", key ? key : "", bucket ? bucket : "");
    char *path;
    if (asprintf(&path, "%s/%s/%s", d->root, bucket, key) < 0)
        return -ENOMEM;
    /* O_NONBLOCK: a FIFO planted in the tree must not hang us. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    int rc = 0;
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            rc = missing(d, bucket);
        } else {
            int e = errno;
            rc = errno_to_store(e);
            if (rc == -EINVAL)
                rc = -ENOENT;
            store_fail(err, rc, "cannot open %s: %s", path, strerror(e));
        }
        free(path);
        return rc;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        rc = store_fail(err, -EIO, "cannot stat %s: %s", path, strerror(errno));
    } else if (!S_ISREG(sb.st_mode)) {
        rc = -ENOENT; /* a directory is a key prefix, not an object */
    } else {
        rc = files_read_fd(fd, SIZE_MAX, 0, data, len);
        if (rc < 0 && rc != -ENOMEM)
            rc = store_fail(err, -EIO, "cannot read %s: %s", path, strerror(-rc));
    }
    close(fd);
    free(path);
    return rc;
}

/* ---- put ---- */

static int dir_put(struct store *st, const char *bucket, const char *key,
                   const void *body, size_t len, struct store_put_result *res,
                   struct store_error *err)
{
    struct dir_store *d = ds(st);
    if (!valid_bucket(bucket) || !valid_key(key))
        return store_fail(err, -EINVAL, "the dir store cannot hold object key \"%s\" in "
                          "bucket \"%s\"", key ? key : "", bucket ? bucket : "");
    char *path = NULL, *tmpdir = NULL, *tmp = NULL;
    int fd = -1, rc = 0, e = 0;
    const char *what = "";
    if (asprintf(&path, "%s/%s/%s", d->root, bucket, key) < 0) {
        path = NULL;
        rc = -ENOMEM;
        goto out;
    }
    tmpdir = path_join(d->root, TMP_DIR);
    if (!tmpdir || asprintf(&tmp, "%s/put-XXXXXX", tmpdir) < 0) {
        tmp = NULL;
        rc = -ENOMEM;
        goto out;
    }
    char *slash = strrchr(path, '/'); /* the key's parent directory */
    *slash = '\0';
    if ((e = files_mkdir_p(path, DIR_MODE, 1)) != 0) {
        errno = -e;
        what = "create directory";
        goto fail;
    }
    *slash = '/';
    if ((e = files_mkdir_p(tmpdir, DIR_MODE, 1)) != 0) {
        errno = -e;
        what = "create temp directory";
        goto fail;
    }
    fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
    if (fd < 0) {
        what = "create temp file";
        goto fail;
    }
    if (fchmod(fd, FILE_MODE) != 0 || files_write_all(fd, body, len, -1) != 0 ||
        fsync(fd) != 0) {
        what = "write temp file";
        goto fail_unlink;
    }
    int c = close(fd);
    fd = -1;
    if (c != 0) {
        what = "write temp file";
        goto fail_unlink;
    }
    if (rename(tmp, path) != 0) {
        what = "rename temp file into place";
        goto fail_unlink;
    }
    *slash = '\0';
    if ((e = files_fsync_dir(path)) != 0) {
        errno = -e;
        /* The object is in place; only its durability is in doubt. */
        what = "sync directory";
        goto fail;
    }
    *slash = '/';
    if (res) {
        if (md5_buf(body, len, res->etag) != 0) {
            rc = store_fail(err, -EIO, "MD5 unavailable for the ETag of %s", path);
            goto out;
        }
        res->attempts = 1;
    }
    goto out;

fail_unlink:
    e = errno;
    if (fd >= 0)
        close(fd);
    fd = -1;
    unlink(tmp);
    errno = e;
fail:
    e = errno;
    rc = store_fail(err, errno_to_store(e), "cannot %s for %s/%s/%s: %s", what, d->root,
                    bucket, key, strerror(e));
out:
    if (fd >= 0)
        close(fd);
    free(path);
    free(tmpdir);
    free(tmp);
    return rc;
}

/* ---- conditional put, get with info, delete (leases) ---- */

/* Conditional writes and deletes of all processes that share this store
 * serialize on one flock in ROOT/.tmp: the check of the precondition and
 * the rename that follows are one step for every other such writer. The
 * lock's fd, or -EIO (told in err). */
static int cond_lock(struct dir_store *d, struct store_error *err)
{
    char *tmpdir = path_join(d->root, TMP_DIR);
    char *lockp = tmpdir ? path_join(tmpdir, "cond.lock") : NULL;
    int fd = -1;
    int mk = lockp ? files_mkdir_p(tmpdir, DIR_MODE, 1) : -ENOMEM;
    if (mk == 0)
        fd = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, FILE_MODE);
    else
        errno = -mk;
    if (fd >= 0) {
        while (flock(fd, LOCK_EX) != 0) {
            if (errno != EINTR) {
                close(fd);
                fd = -1;
                break;
            }
        }
    }
    if (fd < 0)
        fd = store_fail(err, -EIO, "cannot lock %s: %s", lockp ? lockp : TMP_DIR,
                        strerror(errno));
    free(tmpdir);
    free(lockp);
    return fd;
}

static void cond_unlock(int fd)
{
    if (fd >= 0)
        close(fd); /* releases the flock */
}

/* The object's path and the conditional operations' lock: the lock's fd,
 * or -EINVAL (a name the directory cannot hold), -ENOMEM or -EIO (then
 * *path is not set). */
static int cond_begin(struct dir_store *d, const char *bucket, const char *key,
                      char **path, struct store_error *err)
{
    if (!valid_bucket(bucket) || !valid_key(key))
        return store_fail(err, -EINVAL, "the dir store cannot hold object key \"%s\" in "
                          "bucket \"%s\"", key ? key : "", bucket ? bucket : "");
    if (asprintf(path, "%s/%s/%s", d->root, bucket, key) < 0)
        return -ENOMEM;
    int lfd = cond_lock(d, err);
    if (lfd < 0)
        free(*path);
    return lfd;
}

static int64_t real_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* the store's own clock: never shifted */
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int dir_put_if(struct store *st, const char *bucket, const char *key,
                      const void *body, size_t len, const char *if_match,
                      struct store_put_result *res, struct store_error *err)
{
    struct dir_store *d = ds(st);
    memset(res, 0, sizeof *res);
    if (!if_match || !if_match[0])
        return store_fail(err, -EINVAL, "a conditional put needs an ETag or \"*\"");
    char *path;
    int lfd = cond_begin(d, bucket, key, &path, err);
    if (lfd < 0)
        return lfd;
    int rc = 0;
    char etag[STORE_ETAG_MAX];
    int m = md5_file(AT_FDCWD, path, etag);
    if (m < 0) {
        int e = -m;
        if (e == ENOENT || e == ENOTDIR)
            rc = strcmp(if_match, STORE_IF_ABSENT) == 0
                     ? 0 : store_fail(err, -ENOENT, "%s does not exist", path);
        else
            rc = store_fail(err, errno_to_store(e), "cannot read %s: %s", path,
                            strerror(e));
    } else if (strcmp(if_match, STORE_IF_ABSENT) == 0 || strcmp(if_match, etag) != 0) {
        rc = store_fail(err, -EEXIST, "precondition failed: %s is there with ETag %s",
                        path, etag);
    }
    if (rc == 0)
        rc = dir_put(st, bucket, key, body, len, res, err);
    res->server_ms = real_now_ms();
    cond_unlock(lfd);
    free(path);
    return rc;
}

static int dir_get_info(struct store *st, const char *bucket, const char *key,
                        char **data, size_t *len, struct store_get_info *info,
                        struct store_error *err)
{
    struct dir_store *d = ds(st);
    memset(info, 0, sizeof *info);
    *data = NULL;
    *len = 0;
    char *path;
    /* Under the lock: the bytes, their ETag and mtime are of one version. */
    int lfd = cond_begin(d, bucket, key, &path, err);
    if (lfd < 0)
        return lfd;
    int rc = dir_get(st, bucket, key, data, len, err);
    struct stat sb;
    if (rc == 0 && stat(path, &sb) == 0) {
        info->last_modified_ms =
            (int64_t)sb.st_mtim.tv_sec * 1000 + sb.st_mtim.tv_nsec / 1000000;
        if (md5_buf(*data, *len, info->etag) != 0)
            rc = store_fail(err, -EIO, "MD5 unavailable for the ETag of %s", path);
    } else if (rc == 0) {
        rc = store_fail(err, -EIO, "cannot stat %s: %s", path, strerror(errno));
    }
    info->server_ms = real_now_ms();
    cond_unlock(lfd);
    if (rc < 0) {
        free(*data);
        *data = NULL;
        *len = 0;
    }
    free(path);
    return rc;
}

static int dir_del(struct store *st, const char *bucket, const char *key,
                   struct store_error *err)
{
    struct dir_store *d = ds(st);
    char *path;
    int lfd = cond_begin(d, bucket, key, &path, err);
    if (lfd < 0)
        return lfd;
    int rc = 0;
    if (unlink(path) != 0 && errno != ENOENT && errno != ENOTDIR) {
        int e = errno;
        rc = store_fail(err, errno_to_store(e), "cannot remove %s: %s", path, strerror(e));
    }
    cond_unlock(lfd);
    free(path);
    return rc;
}

/* ---- list ----
 *
 * Keys come out in byte order without sorting the whole subtree: each
 * directory's entries are sorted by the keys they lead to (a directory
 * "a" stands for "a/", which sorts after "a-b" and before "a0"), and the
 * walk visits them in that order, so a page is the next PAGE_MAX keys of
 * an ordered walk that starts, by binary search in each directory on the
 * way, right after the token (or start_after). A directory's sorted
 * entries are kept, keyed by its path, as long as its mtime (and inode)
 * stay what they were when it was read; so a listing of n objects reads
 * each directory once, not once per page, and a listing after the newest
 * key reads only the directories on the way to it. An entry read within a
 * short margin after its directory's last change is not trusted (a change
 * in the same clock tick would leave the mtime as it was) and is read
 * again next time. ETags are kept per file as long as its inode, size and
 * mtime are the same. */

#define TRUST_MARGIN_NS 100000000LL     /* fine-grained mtimes: 100 ms */
#define TRUST_MARGIN_COARSE_NS 2000000000LL /* whole-second mtimes */

struct dent {
    char *name;
    int is_dir;
};

struct dcache {
    dev_t dev;
    ino_t ino;
    struct timespec mtime;
    int trusted;
    struct dent *v;
    size_t n;
};

struct etag_entry {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    char etag[STORE_ETAG_MAX];
};

static void dcache_free(void *p)
{
    struct dcache *c = p;
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        free(c->v[i].name);
    free(c->v);
    free(c);
}

/* The byte of an entry's sort key at i: its name, then '/' for a
 * directory; -1 past the end. */
static int dent_at(const struct dent *e, size_t len, size_t i)
{
    if (i < len)
        return (unsigned char)e->name[i];
    return i == len && e->is_dir ? '/' : -1;
}

static int dent_cmp(const void *a, const void *b)
{
    const struct dent *x = a, *y = b;
    size_t lx = strlen(x->name), ly = strlen(y->name);
    for (size_t i = 0;; i++) {
        int cx = dent_at(x, lx, i), cy = dent_at(y, ly, i);
        if (cx != cy)
            return cx < cy ? -1 : 1;
        if (cx < 0)
            return 0;
    }
}

static int64_t ts_ns(const struct timespec *t)
{
    return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec;
}

/* Reads the directory fd (not consumed) into c, sorted. */
static int dcache_read(struct dcache *c, int fd, const struct stat *sb)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int dup_fd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dup_fd < 0)
        return -errno;
    DIR *dir = fdopendir(dup_fd);
    if (!dir) {
        int e = errno;
        close(dup_fd);
        return -e;
    }
    struct dent *v = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(dir);
        if (!de) {
            if (errno)
                rc = -errno;
            break;
        }
        const char *name = de->d_name;
        if (!valid_segment(name, strlen(name)))
            continue; /* "." and ".." */
        int type = de->d_type;
        if (type == DT_UNKNOWN) {
            struct stat es;
            if (fstatat(dirfd(dir), name, &es, AT_SYMLINK_NOFOLLOW) != 0) {
                if (errno == ENOENT)
                    continue; /* removed while we read */
                rc = -errno;
                break;
            }
            type = S_ISREG(es.st_mode) ? DT_REG : S_ISDIR(es.st_mode) ? DT_DIR : DT_UNKNOWN;
        }
        if (type != DT_REG && type != DT_DIR)
            continue; /* no symlinks, FIFOs or devices: S3 has none */
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            struct dent *nv = realloc(v, nc * sizeof *nv);
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            v = nv;
            cap = nc;
        }
        v[n].name = strdup(name);
        if (!v[n].name) {
            rc = -ENOMEM;
            break;
        }
        v[n].is_dir = type == DT_DIR;
        n++;
    }
    closedir(dir);
    if (rc < 0) {
        for (size_t i = 0; i < n; i++)
            free(v[i].name);
        free(v);
        return rc;
    }
    if (n > 1)
        qsort(v, n, sizeof *v, dent_cmp);
    for (size_t i = 0; i < c->n; i++)
        free(c->v[i].name);
    free(c->v);
    c->v = v;
    c->n = n;
    c->dev = sb->st_dev;
    c->ino = sb->st_ino;
    c->mtime = sb->st_mtim;
    int64_t margin = sb->st_mtim.tv_nsec ? TRUST_MARGIN_NS : TRUST_MARGIN_COARSE_NS;
    c->trusted = ts_ns(&now) - ts_ns(&sb->st_mtim) > margin;
    return 0;
}

struct walk {
    struct dir_store *d;
    const char *prefix;
    const char *after; /* only keys strictly greater; NULL: all */
    size_t limit;      /* stop once this many are collected */
    struct store_object *objs;
    size_t count, cap;
};

/* The sorted entries of directory fd, whose path below the root is rel.
 * Caller holds the store's list lock; the result lives until the next
 * read of the same directory. */
static int dir_entries(struct walk *w, int fd, const char *rel, struct dcache **out)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return -errno;
    struct dcache *c = strmap_get(w->d->dirs, rel);
    if (c && c->trusted && c->dev == sb.st_dev && c->ino == sb.st_ino &&
        ts_ns(&c->mtime) == ts_ns(&sb.st_mtim)) {
        *out = c;
        return 0;
    }
    int fresh = c == NULL;
    if (fresh && !(c = calloc(1, sizeof *c)))
        return -ENOMEM;
    int rc = dcache_read(c, fd, &sb);
    w->d->dir_reads++;
    if (rc == 0 && fresh && (rc = strmap_put(w->d->dirs, rel, c, NULL)) < 0) {
        dcache_free(c);
        return rc;
    }
    if (rc < 0) {
        if (fresh)
            dcache_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* Whether every key under entry e of a directory based at base is at most
 * bound (strictly below it when strict is 0). */
static int all_below(const char *base, const struct dent *e, const char *bound,
                     int strict_ok, char *buf)
{
    size_t bl = strlen(base), nl = strlen(e->name);
    memcpy(buf, base, bl);
    memcpy(buf + bl, e->name, nl);
    buf[bl + nl] = '\0';
    if (!e->is_dir) {
        int c = strcmp(buf, bound);
        return strict_ok ? c <= 0 : c < 0;
    }
    buf[bl + nl] = '/';
    buf[bl + nl + 1] = '\0';
    return strcmp(buf, bound) < 0 && strncmp(bound, buf, bl + nl + 1) != 0;
}

/* The first entry of c not wholly at or below the bound. */
static size_t first_after(const struct dcache *c, const char *base, const char *bound,
                          int strict_ok, char *buf)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (all_below(base, &c->v[mid], bound, strict_ok, buf))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int walk_add(struct walk *w, const char *key, const struct stat *sb)
{
    if (strncmp(key, w->prefix, strlen(w->prefix)) != 0)
        return 0;
    if (w->after && strcmp(key, w->after) <= 0)
        return 0;
    if (vec_reserve(&w->objs, &w->cap, w->count + 1, sizeof *w->objs, 64) != 0)
        return -ENOMEM;
    struct store_object *o = &w->objs[w->count];
    memset(o, 0, sizeof *o);
    o->key = strdup(key);
    if (!o->key)
        return -ENOMEM;
    o->size = (uint64_t)sb->st_size;
    o->last_modified_ms =
        (int64_t)sb->st_mtim.tv_sec * 1000 + sb->st_mtim.tv_nsec / 1000000;
    w->count++;
    return 0;
}

/* Walks the directory fd (not consumed), whose keys start with base ("" or
 * "a/b/") and whose path below the root is rel, in key order. */
static int walk_dir(struct walk *w, int fd, const char *rel, const char *base)
{
    struct dcache *c = NULL;
    int rc = dir_entries(w, fd, rel, &c);
    if (rc < 0)
        return rc;
    size_t plen = strlen(w->prefix), blen = strlen(base);
    char *buf = malloc(blen + 256 + 2);
    if (!buf)
        return -ENOMEM;
    size_t i = first_after(c, base, w->prefix, 0, buf);
    if (w->after) {
        size_t j = first_after(c, base, w->after, 1, buf);
        if (j > i)
            i = j;
    }
    /* A nested walk reads only longer paths: c stays as it is. */
    for (; i < c->n && rc == 0 && w->count < w->limit; i++) {
        const struct dent *e = &c->v[i];
        size_t nl = strlen(e->name);
        memcpy(buf, base, blen);
        memcpy(buf + blen, e->name, nl + 1);
        size_t kl = blen + nl, n = kl < plen ? kl : plen;
        int m = memcmp(buf, w->prefix, n);
        if (m > 0)
            break; /* past every key the prefix can have */
        if (m < 0)
            continue;
        if (!e->is_dir) {
            struct stat sb;
            if (fstatat(fd, e->name, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
                if (errno != ENOENT)
                    rc = -errno; /* else removed meanwhile */
            } else if (S_ISREG(sb.st_mode)) {
                rc = walk_add(w, buf, &sb);
            }
            continue;
        }
        int sub = openat(fd, e->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
            if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP)
                rc = -errno;
            continue;
        }
        char *nb = NULL, *nrel = NULL;
        if (asprintf(&nb, "%s/", buf) < 0)
            nb = NULL;
        if (asprintf(&nrel, "%s/%s", rel, e->name) < 0)
            nrel = NULL;
        if (!nb || !nrel)
            rc = -ENOMEM;
        else
            rc = walk_dir(w, sub, nrel, nb);
        free(nb);
        free(nrel);
        close(sub);
    }
    free(buf);
    return rc;
}

/* Errors of a listing: a name clash is no reason to answer EINVAL here. */
static int list_err(int e)
{
    int rc = errno_to_store(e);
    return rc == -EINVAL ? -EIO : rc;
}

static void free_objs(struct store_object *objs, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        free(objs[i].key);
}

/* The ETag of an object: the MD5 of its content, as S3 gives for
 * single-part uploads, kept while the file stays the same. An unreadable
 * one (say, removed meanwhile) gets an empty ETag rather than failing the
 * whole listing. Caller holds the list lock. */
static int object_etag(struct dir_store *d, const char *bucket, struct store_object *o)
{
    char *path;
    if (asprintf(&path, "%s/%s/%s", d->root, bucket, o->key) < 0)
        return -ENOMEM;
    struct stat sb;
    o->etag[0] = '\0';
    if (stat(path, &sb) != 0) {
        free(path);
        return 0;
    }
    struct etag_entry *e = strmap_get(d->etags, path);
    if (e && e->dev == sb.st_dev && e->ino == sb.st_ino && e->size == sb.st_size &&
        ts_ns(&e->mtime) == ts_ns(&sb.st_mtim)) {
        memcpy(o->etag, e->etag, sizeof o->etag);
        free(path);
        return 0;
    }
    if (md5_file(AT_FDCWD, path, o->etag) != 0) {
        o->etag[0] = '\0';
        free(path);
        return 0;
    }
    int rc = 0;
    if (!e) {
        e = malloc(sizeof *e);
        if (!e || strmap_put(d->etags, path, e, NULL) < 0) {
            free(e);
            e = NULL;
            rc = -ENOMEM;
        }
    }
    if (e) {
        e->dev = sb.st_dev;
        e->ino = sb.st_ino;
        e->size = sb.st_size;
        e->mtime = sb.st_mtim;
        memcpy(e->etag, o->etag, sizeof e->etag);
    }
    free(path);
    return rc;
}

static int dir_list_from(struct store *st, const char *bucket, const char *prefix,
                         const char *start_after, const char *token,
                         struct store_page *out, struct store_error *err)
{
    struct dir_store *d = ds(st);
    memset(out, 0, sizeof *out);
    if (!valid_bucket(bucket))
        return store_fail(err, -EINVAL, "the dir store cannot hold bucket \"%s\"",
                          bucket ? bucket : "");
    if (!prefix)
        prefix = "";
    /* The token is the last key handed out: resume after the greater of the
     * two bounds. */
    const char *after = token;
    if (start_after && *start_after && (!after || strcmp(start_after, after) > 0))
        after = start_after;
    char *bdir = path_join(d->root, bucket);
    if (!bdir)
        return -ENOMEM;
    int rc = 0;
    int bfd = open(bdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (bfd < 0) {
        int e = errno;
        if (e == ENOENT || e == ENOTDIR)
            rc = store_fail(err, -ENXIO, "no bucket directory %s", bdir);
        else
            rc = store_fail(err, list_err(e), "cannot open bucket %s: %s", bdir,
                            strerror(e));
        free(bdir);
        return rc;
    }

    /* Walk only below the deepest directory the prefix names in full:
     * prefix "a/b/c" starts at BUCKET/a/b/ with keys based at "a/b/". */
    const char *cut = strrchr(prefix, '/');
    size_t blen = cut ? (size_t)(cut - prefix) + 1 : 0;
    char *base = strndup(prefix, blen);
    char *rel = NULL;
    if (!base || asprintf(&rel, "%s%s%.*s", bucket, blen ? "/" : "",
                          blen ? (int)(blen - 1) : 0, prefix) < 0) {
        close(bfd);
        free(bdir);
        free(base);
        return -ENOMEM;
    }
    int start = bfd;
    if (cut) {
        base[blen - 1] = '\0';
        start = -1; /* a directory part no key can have matches nothing */
        if (valid_key(base)) {
            start = openat(bfd, base,
                           O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (start < 0 && errno != ENOENT && errno != ENOTDIR &&
                errno != ELOOP)
                rc = -errno;
        }
        base[blen - 1] = '/';
        close(bfd);
    }

    struct walk w = {.d = d, .prefix = prefix, .after = after, .limit = PAGE_MAX + 1};
    pthread_mutex_lock(&d->list_lock);
    if (rc == 0 && start >= 0) {
        rc = walk_dir(&w, start, rel, base);
        close(start);
    }
    free(base);
    free(rel);
    if (rc < 0) {
        pthread_mutex_unlock(&d->list_lock);
        if (rc != -ENOMEM)
            rc = store_fail(err, list_err(-rc), "cannot list %s under \"%s\": %s", bdir,
                            prefix, strerror(-rc));
        free(bdir);
        free_objs(w.objs, 0, w.count);
        free(w.objs);
        return rc;
    }

    size_t n = w.count < PAGE_MAX ? w.count : PAGE_MAX;
    if (w.count > n) {
        out->next_token = strdup(w.objs[n - 1].key);
        if (!out->next_token)
            rc = -ENOMEM;
    }
    free_objs(w.objs, n, w.count);
    for (size_t i = 0; i < n && rc == 0 && !st->list_no_etags; i++)
        rc = object_etag(d, bucket, &w.objs[i]);
    pthread_mutex_unlock(&d->list_lock);
    free(bdir);
    if (rc < 0) {
        free_objs(w.objs, 0, n);
        free(w.objs);
        free(out->next_token);
        out->next_token = NULL;
        return rc;
    }
    out->objects = w.objs;
    out->count = n;
    if (n == 0) {
        free(w.objs);
        out->objects = NULL;
    }
    return 0;
}

static int dir_list_page(struct store *st, const char *bucket, const char *prefix,
                         const char *token, struct store_page *out,
                         struct store_error *err)
{
    return dir_list_from(st, bucket, prefix, NULL, token, out, err);
}

/* ---- bucket check, lifecycle ---- */

static int dir_check_bucket(struct store *st, const char *bucket, char *msg,
                            size_t msglen)
{
    struct dir_store *d = ds(st);
    if (!valid_bucket(bucket)) {
        put_msg(msg, msglen,
                "Bucket name \"%s\" cannot be a directory name (empty, "
                "contains '/', or starts with '.').",
                bucket ? bucket : "");
        return -EINVAL;
    }
    char *bdir = path_join(d->root, bucket);
    if (!bdir) {
        put_msg(msg, msglen, "Out of memory.");
        return -ENOMEM;
    }
    int rc = 0;
    int e = -files_mkdir_p(bdir, DIR_MODE, 1);
    if (e != 0) {
        put_msg(msg, msglen, "Cannot create the store directory %s: %s.",
                bdir, strerror(e));
        rc = list_err(e);
    } else if (access(bdir, R_OK | W_OK | X_OK) != 0) {
        int e = errno;
        put_msg(msg, msglen, "Cannot use the store directory %s: %s.", bdir,
                strerror(e));
        rc = list_err(e);
    }
    free(bdir);
    return rc;
}

static void dir_locate(struct store *st, const char *bucket, const char *key, char *buf,
                       size_t len)
{
    snprintf(buf, len, "%s/%s/%s", ds(st)->root, bucket, key);
}

static void dir_destroy(struct store *st)
{
    struct dir_store *d = ds(st);
    strmap_free(d->dirs, dcache_free);
    strmap_free(d->etags, free);
    pthread_mutex_destroy(&d->list_lock);
    free(d->root);
    free(d);
}

static const struct store_ops dir_ops = {
    .list_page = dir_list_page,
    .list_from = dir_list_from,
    .get = dir_get,
    .put = dir_put,
    .put_if = dir_put_if,
    .get_info = dir_get_info,
    .del = dir_del,
    .check_bucket = dir_check_bucket,
    .locate = dir_locate,
    .destroy = dir_destroy,
};

uint64_t store_dir_reads(struct store *st)
{
    struct dir_store *d = ds(st);
    pthread_mutex_lock(&d->list_lock);
    uint64_t n = d->dir_reads;
    pthread_mutex_unlock(&d->list_lock);
    return n;
}

int store_dir_new(const char *root, struct store **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!root || !*root) {
        put_msg(err, errlen, "The directory store needs a path.");
        return -EINVAL;
    }
    struct dir_store *d = calloc(1, sizeof *d);
    if (!d) {
        put_msg(err, errlen, "Out of memory.");
        return -ENOMEM;
    }
    /* Absolute, because the daemon changes its working directory. */
    if (root[0] == '/') {
        d->root = strdup(root);
    } else {
        char *cwd = getcwd(NULL, 0);
        if (!cwd) {
            int e = errno;
            put_msg(err, errlen, "Cannot resolve the store path %s: %s.", root,
                    strerror(e));
            free(d);
            return -e;
        }
        d->root = path_join(cwd, root);
        free(cwd);
    }
    if (!d->root) {
        put_msg(err, errlen, "Out of memory.");
        free(d);
        return -ENOMEM;
    }
    int maps = strmap_new(&d->dirs);
    if (maps == 0)
        maps = strmap_new(&d->etags);
    if (maps < 0 || pthread_mutex_init(&d->list_lock, NULL) != 0) {
        put_msg(err, errlen, "Out of memory.");
        strmap_free(d->dirs, NULL);
        strmap_free(d->etags, NULL);
        free(d->root);
        free(d);
        return -ENOMEM;
    }
    size_t n = strlen(d->root);
    while (n > 1 && d->root[n - 1] == '/')
        d->root[--n] = '\0';
    d->base.ops = &dir_ops;
    d->base.kind = "dir";
    d->base.max_segment = 255; /* one file name */
    *out = &d->base;
    return 0;
}
