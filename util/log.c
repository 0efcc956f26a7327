#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>

static enum log_level current_level = LOG_LEVEL_INFO;
static int to_syslog;

void log_set_level(enum log_level level) { current_level = level; }
enum log_level log_get_level(void) { return current_level; }

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
    } else {
        char msg[2048];
        vsnprintf(msg, sizeof msg, fmt, ap);
        fprintf(stderr, "bookmarkfs: %s: %s\n", names[level], msg);
    }
    va_end(ap);
}
