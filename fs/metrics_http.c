/* --metrics=ADDR:PORT: serves fs/metrics.c's exposition over HTTP with
 * libmicrohttpd (GET /metrics). The socket is bound before the daemon
 * detaches, so a busy port is an error at mount; the server thread starts
 * after (threads do not survive fuse_daemonize's fork). */
#include "fs/metrics_http.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "fs/metrics.h"
#include "util/log.h"

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

static struct MHD_Daemon *daemon_;

int metrics_http_parse(const char *addr, char *host, size_t hostlen, char *port,
                       size_t portlen, char *err, size_t errlen)
{
    const char *colon = strrchr(addr, ':');
    const char *h = addr;
    size_t hl = colon ? (size_t)(colon - addr) : 0;
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') { /* [IPv6]:PORT */
        h++;
        hl -= 2;
    }
    const char *p = colon ? colon + 1 : "";
    size_t pl = strlen(p);
    int digits = pl > 0 && pl <= 5 && strspn(p, "0123456789") == pl;
    long pv = digits ? strtol(p, NULL, 10) : 0;
    if (!colon || hl == 0 || memchr(h, '[', hl) || memchr(h, ']', hl) || !digits ||
        pv < 1 || pv > 65535 || hl >= hostlen || pl >= portlen) {
        snprintf(err, errlen, "invalid --metrics '%s': expected ADDRESS:PORT, e.g. "
                 "127.0.0.1:9464", addr);
        return -EINVAL;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    memcpy(port, p, pl + 1);
    return 0;
}

int metrics_http_listen(const char *addr, char *err, size_t errlen)
{
    char host[256], port[8];
    int rc = metrics_http_parse(addr, host, sizeof host, port, sizeof port, err, errlen);
    if (rc < 0)
        return rc;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, port, &hints, &res);
    if (g != 0) {
        snprintf(err, errlen, "--metrics: cannot resolve '%s': %s", host,
                 g == EAI_SYSTEM ? strerror(errno) : gai_strerror(g));
        return -EINVAL;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
            bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 16) == 0)
            break;
        e = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "--metrics: cannot listen on %s: %s", addr, strerror(e));
        return -(e ? e : EADDRNOTAVAIL);
    }
    return fd;
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status,
                              const char *type, char *body, size_t len,
                              enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    enum MHD_Result ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (ok == MHD_YES)
        ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    (void)cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;
    static char not_allowed[] = "only GET\n";
    static char not_found[] = "not found: the metrics are at /metrics\n";
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return answer(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", not_allowed,
                      sizeof not_allowed - 1, MHD_RESPMEM_PERSISTENT);
    if (strcmp(url, "/metrics") != 0)
        return answer(c, MHD_HTTP_NOT_FOUND, "text/plain", not_found,
                      sizeof not_found - 1, MHD_RESPMEM_PERSISTENT);
    size_t len = 0;
    char *text = metrics_text(&len);
    if (!text) {
        static char oom[] = "out of memory\n";
        return answer(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", oom,
                      sizeof oom - 1, MHD_RESPMEM_PERSISTENT);
    }
    return answer(c, MHD_HTTP_OK, CONTENT_TYPE, text, len, MHD_RESPMEM_MUST_FREE);
}

static void on_error(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[256];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    log_warn("metrics server: %s", msg);
}

int metrics_http_start(int fd)
{
    /* The server's thread takes the mask of this one: keep SIGTERM and the
     * like away from it, so they reach the threads that read requests and
     * end the FUSE loop. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGPIPE);
    int masked = pthread_sigmask(SIG_BLOCK, &block, &old) == 0;
    daemon_ = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL, on_request,
        NULL, MHD_OPTION_EXTERNAL_LOGGER, on_error, NULL, MHD_OPTION_LISTEN_SOCKET,
        (MHD_socket)fd, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)32, MHD_OPTION_END);
    if (masked)
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!daemon_) {
        log_error("the metrics server could not start");
        close(fd);
        return -EIO;
    }
    return 0;
}

void metrics_http_stop(void)
{
    if (daemon_)
        MHD_stop_daemon(daemon_); /* closes the listening socket */
    daemon_ = NULL;
}
