/* The FUSE adapter: each operation takes what the request says, calls one
 * function of the filesystem (fs/entries.h) and replies. Open files are
 * the core's handles, kept in fi->fh; directory streams are the names
 * listed, kept there too. */
#include "fs/ops.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "util/strlist.h"

/* The filesystem of the request's mount (fuse_new's private_data). */
static struct entries *fs(void)
{
    struct ops_context *fc = fuse_get_context()->private_data;
    return fc->entries;
}

/* Who sends the request. */
static uid_t caller(void) { return fuse_get_context()->uid; }

static struct entries_handle *fh(const struct fuse_file_info *fi)
{
    return fi ? (struct entries_handle *)(uintptr_t)fi->fh : NULL;
}

/* Sizes change at close: pages are never served stale (direct_io); a file
 * whose close commits nothing needs no FLUSH (one request less). */
static int opened(int rc, struct entries_handle *h, int noflush,
                  struct fuse_file_info *fi)
{
    if (rc < 0)
        return rc;
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->direct_io = 1;
    fi->noflush = noflush != 0;
    return 0;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
    return entries_getattr(fs(), path, fh(fi), st);
}

/* A directory stream keeps the names it lists from its start (or its last
 * rewind) and hands them out by offset: each getdents costs what it
 * returns, not the whole directory (libfuse's own buffering walks its list
 * from the start on every call). */
static int op_opendir(const char *path, struct fuse_file_info *fi)
{
    int rc = entries_opendir(fs(), path);
    if (rc < 0)
        return rc;
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
        strlist_clear(names);
        int rc = entries_list(fs(), path, names);
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

static int op_mkdir(const char *path, mode_t mode)
{
    (void)mode;
    return entries_mkdir(fs(), caller(), path);
}

static int op_rmdir(const char *path) { return entries_rmdir(fs(), caller(), path); }

static int op_open(const char *path, struct fuse_file_info *fi)
{
    struct entries_handle *h = NULL;
    int noflush = 0;
    int rc = entries_open(fs(), caller(), path, fi->flags, &h, &noflush);
    return opened(rc, h, noflush, fi);
}

static int op_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    (void)mode;
    struct entries_handle *h = NULL;
    int noflush = 0;
    int rc = entries_create(fs(), caller(), path, fi->flags, &h, &noflush);
    return opened(rc, h, noflush, fi);
}

static int op_read(const char *path, char *buf, size_t size, off_t off,
                   struct fuse_file_info *fi)
{
    (void)path;
    return entries_read(fh(fi), buf, size, off);
}

static int op_write(const char *path, const char *data, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)path;
    return entries_write(fh(fi), data, size, off);
}

static int op_flush(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    return entries_commit(fh(fi));
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
    (void)path;
    entries_close(fh(fi));
    return 0;
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    (void)path;
    (void)datasync;
    return entries_fsync(fs(), fh(fi));
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    return entries_truncate(fs(), caller(), path, fh(fi), size);
}

static int op_unlink(const char *path) { return entries_unlink(fs(), caller(), path); }

static int op_rename(const char *from, const char *to, unsigned int flags)
{
    return entries_rename(fs(), caller(), from, to, flags);
}

static int op_utimens(const char *path, const struct timespec tv[2],
                      struct fuse_file_info *fi)
{
    (void)fi;
    return entries_utimens(fs(), caller(), path, tv);
}

static int op_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    (void)mode;
    return entries_chattr(fs(), caller(), path, fh(fi));
}

static int op_chown(const char *path, uid_t uid, gid_t gid, struct fuse_file_info *fi)
{
    (void)uid;
    (void)gid;
    return entries_chattr(fs(), caller(), path, fh(fi));
}

static int op_statfs(const char *path, struct statvfs *sv)
{
    (void)path;
    memset(sv, 0, sizeof *sv);
    sv->f_bsize = sv->f_frsize = 4096;
    sv->f_namemax = 255;
    return 0;
}

static int op_mknod(const char *path, mode_t mode, dev_t dev)
{
    (void)mode;
    (void)dev;
    return entries_mknod(fs(), path);
}

static int op_symlink(const char *target, const char *path)
{
    (void)target;
    return entries_mknod(fs(), path);
}

static int op_link(const char *from, const char *to)
{
    (void)from;
    return entries_mknod(fs(), to);
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC; /* O_TRUNC is not a truncate */
    cfg->hard_remove = 1; /* no .fuse_hidden renames of open files */
    cfg->direct_io = 1;
    /* The kernel caches names for a second and revalidates them after
     * that; a cached name that is gone is caught at open (entries_open).
     * Attributes are not cached: sizes change at close. Absent names are
     * not cached: a .state.json replace adds names behind its back. */
    cfg->entry_timeout = 1.0;
    cfg->attr_timeout = 0;
    cfg->negative_timeout = 0;
    cfg->use_ino = 0;
    return fuse_get_context()->private_data;
}

const struct fuse_operations ops_fuse_operations = {
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
