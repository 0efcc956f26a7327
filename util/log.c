#include "util/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static enum log_level current_level = LOG_LEVEL_INFO;
static int to_syslog;
static FILE *log_file;

int log_use_file(const char *path)
{
    FILE *f = fopen(path, "ae");
    if (!f)
        return -errno;
    if (setvbuf(f, NULL, _IOLBF, 0) != 0) {
        fclose(f);
        return -ENOMEM;
    }
    if (log_file)
        fclose(log_file);
    log_file = f;
    to_syslog = 0;
    return 0;
}

int log_syslog_available(void)
{
    static const int types[] = {SOCK_DGRAM, SOCK_STREAM}; /* as syslog(3) tries */
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", "/dev/log");
    for (size_t i = 0; i < 2; i++) {
        int fd = socket(AF_UNIX, types[i] | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
        close(fd);
        if (ok)
            return 1;
    }
    return 0;
}

void log_set_level(enum log_level level) { current_level = level; }

void log_use_syslog(int on)
{
    to_syslog = on;
    if (on)
        openlog("bookmarkfs", LOG_PID, LOG_DAEMON);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warning", "info", "debug"};
    static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
    if (level > current_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    if (to_syslog) {
        vsyslog(prio[level], fmt, ap);
    } else if (log_file) {
        char msg[2048], when[96] = "?";
        vsnprintf(msg, sizeof msg, fmt, ap);
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        if (gmtime_r(&ts.tv_sec, &tm))
            snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(ts.tv_nsec / 1000000));
        fprintf(log_file, "%s bookmarkfs[%ld]: %s: %s\n", when, (long)getpid(),
                names[level], msg);
    } else {
        char msg[2048];
        vsnprintf(msg, sizeof msg, fmt, ap);
        fprintf(stderr, "bookmarkfs: %s: %s\n", names[level], msg);
    }
    va_end(ap);
}
