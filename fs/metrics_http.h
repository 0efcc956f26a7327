/* The HTTP side of --metrics (README, "Metrics"), on libmicrohttpd. */
#ifndef BOOKMARKFS_FS_METRICS_HTTP_H
#define BOOKMARKFS_FS_METRICS_HTTP_H

#include <stddef.h>

/* Splits "HOST:PORT" ("[IPv6]:PORT" too; PORT 1 to 65535). 0, or -EINVAL
 * with one line in err. */
int metrics_http_parse(const char *addr, char *host, size_t hostlen, char *port,
                       size_t portlen, char *err, size_t errlen);
/* Binds and listens on addr: the socket, or -EINVAL for a bad address and
 * another negative errno when it cannot listen (one line in err). */
int metrics_http_listen(const char *addr, char *err, size_t errlen);
/* Serves GET /metrics on the listening socket (owned from here on) in a
 * thread of libmicrohttpd's. 0 or -EIO. */
int metrics_http_start(int fd);
/* Stops the server (no-op when not started). */
void metrics_http_stop(void);

#endif
