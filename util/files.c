#include "util/files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
