/* Logging shared by every module: stderr in the foreground, syslog when
 * daemonized, or a file. Messages never contain secrets; callers must not pass any. */
#ifndef BOOKMARKFS_UTIL_LOG_H
#define BOOKMARKFS_UTIL_LOG_H

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

void log_set_level(enum log_level level);
/* Switch output to syslog (after daemonizing). */
void log_use_syslog(int on);

/* Switch output to a file opened for appending at path (--log-file, or the
 * fallback when a background mount finds no syslog socket): one line per
 * message with its UTC time, pid and level. 0 or a negative errno. */
int log_use_file(const char *path);

/* 1 when a syslog socket (/dev/log) accepts a connection, else 0. */
int log_syslog_available(void);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
