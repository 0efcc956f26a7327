/* bookmarkfs: command line, store set-up, mount and the FUSE loop. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "fs/ops.h"
#include "fs/options.h"
#include "s3/store_s3.h"
#include "util/log.h"

#define EXIT_USAGE 2

static struct store *open_store(const struct options *o, char *err, size_t errlen)
{
    if (!o->is_s3)
        return store_dir_new(o->dir_root, err, errlen);
    struct s3_options so = {
        .endpoint = o->endpoint,
        .region = o->region,
        .path_style = o->path_style,
        .profile = o->profile,
        .ca_file = o->ca_file,
        .connect_timeout_ms = o->connect_timeout_ms,
        .timeout_ms = o->timeout_ms,
        .max_attempts = (int)o->max_attempts,
        .max_retry_ms = o->max_retry_ms,
    };
    return store_s3_new(&so, err, errlen);
}

/* Both buckets reachable with these credentials, before mounting. */
static int check_store(struct store *st, const struct options *o)
{
    char msg[512] = "";
    const char *buckets[2] = {o->lz_bucket, o->dlz_bucket};
    int n = strcmp(o->lz_bucket, o->dlz_bucket) == 0 ? 1 : 2;
    for (int i = 0; i < n; i++) {
        int rc = st->ops->check_bucket(st, buckets[i], msg, sizeof msg);
        if (rc < 0) {
            fprintf(stderr, "bookmarkfs: %s\n",
                    msg[0] ? msg : strerror(-rc));
            return -1;
        }
    }
    return 0;
}

int main(int argc, char *argv[])
{
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
    struct options o;
    char err[512];
    if (options_parse(&args, &o, err, sizeof err) < 0) {
        fprintf(stderr, "bookmarkfs: %s\n", err);
        options_free(&o);
        fuse_opt_free_args(&args);
        return EXIT_USAGE;
    }
    if (o.show_help || o.show_version) {
        if (o.show_help)
            options_usage(argv[0]);
        else
            printf("bookmarkfs %s (libfuse %s)\n", BOOKMARKFS_VERSION, fuse_pkgversion());
        options_free(&o);
        fuse_opt_free_args(&args);
        return 0;
    }
    struct fuse_cmdline_opts co;
    if (fuse_parse_cmdline(&args, &co) != 0) {
        options_free(&o);
        fuse_opt_free_args(&args);
        return EXIT_USAGE;
    }
    int status = 1;
    struct store *st = NULL;
    struct jobs *jobs = NULL;
    struct fuse *fuse = NULL;
    if (!co.mountpoint) {
        fprintf(stderr, "bookmarkfs: missing MOUNTPOINT (see --help)\n");
        status = EXIT_USAGE;
        goto out;
    }
    if (co.debug)
        log_set_level(LOG_LEVEL_DEBUG);

    st = open_store(&o, err, sizeof err);
    if (!st) {
        fprintf(stderr, "bookmarkfs: %s\n", err);
        goto out;
    }
    if (check_store(st, &o) < 0)
        goto out;
    struct layout layout = {
        .domain = o.domain,
        .dataset = o.dataset,
        .user = o.user,
        .file_type = o.file_type,
        .resume_running = o.resume_running,
    };
    jobs = jobs_new(st, &layout, o.lz_bucket, o.dlz_bucket);
    if (!jobs) {
        fprintf(stderr, "bookmarkfs: out of memory\n");
        goto out;
    }
    struct fsctx fc = {.jobs = jobs, .uid = getuid(), .gid = getgid()};
    clock_gettime(CLOCK_REALTIME, &fc.mounted);

    fuse = fuse_new(&args, &bookmarkfs_ops, sizeof bookmarkfs_ops, &fc);
    if (!fuse) {
        status = EXIT_USAGE; /* libfuse printed which option it refused */
        goto out;
    }
    if (fuse_mount(fuse, co.mountpoint) != 0)
        goto out;
    if (fuse_daemonize(co.foreground) != 0) {
        fuse_unmount(fuse);
        goto out;
    }
    if (!co.foreground)
        log_use_syslog(1);
    struct fuse_session *se = fuse_get_session(fuse);
    if (fuse_set_signal_handlers(se) != 0) {
        fuse_unmount(fuse);
        goto out;
    }
    log_info("mounted on %s (%s store, lz=%s, dlz=%s, %s/%s)", co.mountpoint,
             st->kind, o.lz_bucket, o.dlz_bucket, o.domain, o.dataset);
    int rc;
    if (co.singlethread) {
        rc = fuse_loop(fuse);
    } else {
        struct fuse_loop_config *lc = fuse_loop_cfg_create();
        if (!lc) {
            fuse_remove_signal_handlers(se);
            fuse_unmount(fuse);
            goto out;
        }
        fuse_loop_cfg_set_clone_fd(lc, co.clone_fd);
        if (co.max_threads > 0 && co.max_threads <= 100000)
            fuse_loop_cfg_set_max_threads(lc, co.max_threads);
        if (co.max_idle_threads != UINT_MAX)
            fuse_loop_cfg_set_idle_threads(lc, co.max_idle_threads);
        rc = fuse_loop_mt(fuse, lc);
        fuse_loop_cfg_destroy(lc);
    }
    fuse_remove_signal_handlers(se);
    fuse_unmount(fuse);
    status = rc == 0 ? 0 : 1;
    log_info("unmounted %s", co.mountpoint);
out:
    if (fuse)
        fuse_destroy(fuse);
    jobs_free(jobs);
    store_destroy(st);
    free(co.mountpoint);
    options_free(&o);
    fuse_opt_free_args(&args);
    return status;
}
