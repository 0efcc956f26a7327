#include "util/files.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/clock.h"
#include "util/textbuf.h"

int files_fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

/* p (a prefix of the path, NUL-terminated in place) was just created:
 * syncs its parent. */
static int sync_parent(char *p)
{
    char *slash = strrchr(p, '/');
    if (!slash)
        return files_fsync_dir(".");
    if (slash == p)
        return files_fsync_dir("/");
    *slash = '\0';
    int rc = files_fsync_dir(p);
    *slash = '/';
    return rc;
}

/* One loop for both directions. */
static int transfer(int fd, char *p, size_t n, off_t off, int writing)
{
    while (n > 0) {
        ssize_t r = writing ? (off < 0 ? write(fd, p, n) : pwrite(fd, p, n, off))
                            : (off < 0 ? read(fd, p, n) : pread(fd, p, n, off));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0) {
            errno = EIO;
            return -EIO;
        }
        p += r;
        n -= (size_t)r;
        if (off >= 0)
            off += r;
    }
    return 0;
}

int files_write_all(int fd, const void *buf, size_t n, off_t off)
{
    return transfer(fd, (char *)buf, n, off, 1);
}

int files_read_all(int fd, void *buf, size_t n, off_t off)
{
    return transfer(fd, buf, n, off, 0);
}

int files_read_fd(int fd, size_t max, int secret, char **data, size_t *len)
{
    return files_read_fd_until(fd, max, secret, -1, data, len);
}

int files_read_fd_until(int fd, size_t max, int secret, int64_t deadline_ms, char **data,
                        size_t *len)
{
    *data = NULL;
    *len = 0;
    struct textbuf b;
    if (secret)
        textbuf_init_secret(&b);
    else
        textbuf_init(&b);
    int rc = 0;
    for (;;) {
        if (deadline_ms >= 0) {
            int64_t left = deadline_ms - clock_mono_ms();
            if (left <= 0) {
                rc = -ETIMEDOUT;
                break;
            }
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            int n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
            if (n < 0 && errno != EINTR) {
                rc = -errno;
                break;
            }
            if (n <= 0)
                continue;
        }
        if ((rc = textbuf_reserve(&b, 4096)) < 0)
            break;
        ssize_t r = read(fd, b.p + b.len, b.cap - b.len - 1);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            rc = -errno;
            break;
        }
        if (r == 0)
            break;
        if ((size_t)r > max - b.len) {
            rc = -EFBIG;
            break;
        }
        b.len += (size_t)r;
    }
    if (rc < 0) {
        textbuf_free(&b);
        return rc;
    }
    size_t n = b.len;
    rc = textbuf_take(&b, 0, data);
    if (rc == 0)
        *len = n;
    return rc;
}

int files_mkdir_p(const char *path, mode_t mode, int durable)
{
    if (!path[0])
        return -ENOENT;
    char *p = strdup(path);
    if (!p)
        return -ENOMEM;
    int rc = 0;
    size_t n = strlen(p);
    for (size_t i = 1; i <= n && rc == 0; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, mode) == 0) {
            if (durable)
                rc = sync_parent(p);
        } else if (errno != EEXIST) {
            rc = -errno;
        } else {
            struct stat sb;
            if (stat(p, &sb) != 0)
                rc = -errno;
            else if (!S_ISDIR(sb.st_mode))
                rc = -ENOTDIR;
        }
        p[i] = c;
    }
    free(p);
    return rc;
}
