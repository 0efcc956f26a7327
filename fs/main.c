/* bookmarkfs: command line, store set-up, mount and the FUSE loop. */
#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fuse_lowlevel.h>

#include "fs/blocking.h"
#include "fs/journal.h"
#include "fs/lease.h"
#include "fs/loop.h"
#include "fs/metrics.h"
#include "fs/metrics_http.h"
#include "fs/ops.h"
#include "fs/options.h"
#include "s3/store_s3.h"
#include "util/env.h"
#include "util/log.h"

#define EXIT_USAGE 2

/* 0 with the store in *out, or a negative errno with a sentence in err. */
static int open_store(const struct options *o, struct store **out, char *err,
                      size_t errlen)
{
    if (!o->is_s3) {
        int rc = store_dir_new(o->dir_root, out, err, errlen);
        if (rc == 0)
            (*out)->list_no_etags = 1; /* listings serve names and dates only */
        return rc;
    }
    struct store_s3_options so = {
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
    return store_s3_new(&so, out, err, errlen);
}

/* Both buckets reachable with these credentials, before mounting. 0 or a
 * negative errno (the reason printed). */
static int check_store(struct store *st, const struct options *o)
{
    char msg[512] = "";
    const char *buckets[2] = {o->lz_bucket, o->dlz_bucket};
    int n = strcmp(o->lz_bucket, o->dlz_bucket) == 0 ? 1 : 2;
    for (int i = 0; i < n; i++) {
        int rc = store_check_bucket(st, buckets[i], msg, sizeof msg);
        if (rc < 0) {
            fprintf(stderr, "bookmarkfs: %s\n",
                    msg[0] ? msg : strerror(-rc));
            return rc;
        }
    }
    return 0;
}

/* What a journal belongs to: the store (and where it is), the buckets and
 * the dataset path. A JSON array, so no two identities read alike. */
static char *journal_identity(const struct options *o)
{
    char *where = NULL;
    if (o->is_s3) {
        const char *ep = store_s3_endpoint_given(o->endpoint);
        where = strdup(ep ? ep : "aws"); /* AWS bucket names are global */
    } else {
        where = realpath(o->dir_root, NULL);
        if (!where)
            where = strdup(o->dir_root);
    }
    if (!where)
        return NULL;
    json_t *id = json_pack("[s,s,s,s,s,s,s,s,s]", "bookmarkfs-journal",
                           o->is_s3 ? "s3" : "dir", where, o->lz_bucket, o->dlz_bucket,
                           o->domain, o->dataset, o->user, o->file_type);
    free(where);
    char *text = id ? json_dumps(id, JSON_COMPACT) : NULL;
    json_decref(id);
    return text;
}

/* The metrics read at scrape time (fs/metrics.h). */
struct gauge_src {
    struct jobs *jobs;
    struct journal *journal;
};

static void read_gauges(struct metrics_gauges *g, void *arg)
{
    struct gauge_src *s = arg;
    g->jobs_loaded = jobs_loaded_count(s->jobs);
    struct stat st;
    g->journal_bytes = s->journal && stat(journal_path(s->journal), &st) == 0
                           ? (int64_t)st.st_size
                           : -1;
}

/* --lease (README, "Leases"): probes whether the store honours conditional
 * writes; on refuses to mount where it does not, auto says so in one line
 * and mounts without leases. 0 or a negative errno (the reason printed). */
static int set_up_leases(const struct options *o, struct store *st, struct journal *jn,
                         const char *mountpoint, struct jobs *jobs, struct leases **out)
{
    *out = NULL;
    if (o->lease_mode == LEASE_OFF) {
        jobs->lease_mode = "off";
        return 0;
    }
    char *jdir = strdup(journal_path(jn));
    char *slash = jdir ? strrchr(jdir, '/') : NULL;
    if (slash)
        *slash = '\0';
    char *where = realpath(mountpoint, NULL);
    struct lease_config lc = {
        .store = st,
        .bucket = o->lz_bucket,
        .prefix = o->lease_prefix_resolved,
        .ttl_ms = o->lease_ttl_ms,
        .idle_ms = o->lease_idle_ms,
        .mount = where ? where : mountpoint,
        .state_dir = slash ? jdir : NULL,
    };
    struct leases *ls = NULL;
    int made = jdir ? leases_new(&lc, &ls) : -ENOMEM;
    free(jdir);
    free(where);
    if (made < 0) {
        fprintf(stderr, "bookmarkfs: out of memory\n");
        return -ENOMEM;
    }
    char msg[512] = "";
    int honoured = 0;
    int rc = leases_probe(ls, &honoured, msg, sizeof msg);
    if (rc < 0) {
        /* Not known whether the store honours them: never guessed. */
        fprintf(stderr, "bookmarkfs: %s.\n", msg[0] ? msg : strerror(-rc));
        leases_free(ls);
        return rc;
    }
    if (!honoured) {
        if (o->lease_mode == LEASE_ON) {
            fprintf(stderr, "bookmarkfs: --lease=on: %s; this store cannot hold job "
                    "leases (use --lease=off to mount without them).\n", msg);
            leases_free(ls);
            return -EOPNOTSUPP;
        }
        fprintf(stderr, "bookmarkfs: no job leases on this store (%s); two mounts "
                "of one dataset are not kept apart.\n", msg);
        log_warn("no job leases on this store: %s", msg);
        leases_free(ls);
        jobs->lease_mode = "auto: not honoured by the store";
        return 0;
    }
    jobs->leases = ls; /* renewals start after fuse_daemonize (threads do not fork) */
    jobs->lease_mode = o->lease_mode == LEASE_ON ? "on" : "auto";
    *out = ls;
    return 0;
}

/* The store, both buckets checked, and the jobs over it (*st and *jobs:
 * what was made, for the caller to free). 0 or a negative errno (the
 * reason printed). */
static int set_up_jobs(const struct options *o, struct store **st, struct jobs **jobs)
{
    char err[512];
    int rc = open_store(o, st, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "bookmarkfs: %s\n", err);
        return rc;
    }
    if ((rc = check_store(*st, o)) < 0)
        return rc;
    struct layout layout = {
        .domain = o->domain,
        .dataset = o->dataset,
        .user = o->user,
        .file_type = o->file_type,
        .resume_running = o->resume_running,
    };
    if (jobs_new(*st, &layout, o->lz_bucket, o->dlz_bucket, jobs) < 0) {
        fprintf(stderr, "bookmarkfs: out of memory\n");
        return -ENOMEM;
    }
    (*jobs)->success_trigger = o->success_trigger;
    index_set_window((*jobs)->index, o->relist_window_s);
    clock_gettime(CLOCK_REALTIME, &(*jobs)->mounted);
    return 0;
}

/* Logs always go somewhere: the file asked for; in the background syslog,
 * or, without a syslog socket (containers), a file in the cache dir, said
 * here while stderr still reaches someone. *to_file: logs go to a file.
 * 0 or a negative errno (said on stderr). */
static int set_up_log(const struct options *o, const struct fuse_cmdline_opts *co,
                      int *to_file)
{
    char *fallback_log = NULL;
    const char *log_path = o->log_file;
    if (!log_path && !co->foreground && !log_syslog_available()) {
        if (asprintf(&fallback_log, "%s/bookmarkfs.log", o->cache_dir) < 0) {
            fprintf(stderr, "bookmarkfs: out of memory\n");
            return -ENOMEM;
        }
        log_path = fallback_log;
        fprintf(stderr, "bookmarkfs: no syslog socket (/dev/log): logging to %s\n",
                log_path);
    }
    if (log_path) {
        int lrc = log_use_file(log_path);
        if (lrc < 0) {
            fprintf(stderr, "bookmarkfs: cannot open the log file %s: %s\n", log_path,
                    strerror(-lrc));
            free(fallback_log);
            return lrc;
        }
        if (fallback_log)
            log_warn("no syslog socket (/dev/log): logging to %s", fallback_log);
    }
    *to_file = log_path != NULL;
    free(fallback_log);
    return 0;
}

/* Serves the mount until it ends: libfuse's single-threaded loop, its
 * multi-threaded one, or ours (fs/loop.c). *rc: what the loop returned (a
 * signal's number, or a negative errno). 0, or -ENOMEM when no loop could
 * be set up. */
static int serve(struct fuse *fuse, const struct fuse_cmdline_opts *co,
                 const struct options *o, int *rc)
{
    if (co->singlethread) {
        *rc = fuse_loop(fuse);
        return 0;
    }
    struct fuse_loop_config *lc = fuse_loop_cfg_create();
    if (!lc)
        return -ENOMEM;
    fuse_loop_cfg_set_clone_fd(lc, co->clone_fd);
    unsigned max_threads = 10; /* libfuse's default */
    if (co->max_threads > 0 && co->max_threads <= 100000) { /* checked in main */
        fuse_loop_cfg_set_max_threads(lc, co->max_threads);
        max_threads = co->max_threads;
    }
    if (co->max_idle_threads != UINT_MAX)
        fuse_loop_cfg_set_idle_threads(lc, co->max_idle_threads);
    /* libfuse's loop when asked for, or for clone_fd (a device per thread,
     * which only libfuse's loop can open). */
    if (o->fuse_loop || co->clone_fd) {
        *rc = fuse_loop_mt(fuse, lc);
    } else {
        struct loop_config cfg = {.max_threads = max_threads, .spin_us = o->spin_time_us};
        *rc = loop_run(fuse_get_session(fuse), &cfg);
        if (*rc < 0)
            log_error("reading requests failed: %s", strerror(-*rc));
    }
    fuse_loop_cfg_destroy(lc);
    return 0;
}

int main(int argc, char *argv[])
{
    /* One malloc arena for all FUSE threads: with one per thread, memory a
     * large document's parse freed in one thread was not reused by the next
     * large readdir or read in another, and the daemon's peak grew by a
     * third. The threads allocate little per request, so the lock is cheap.
     * Best effort and silent: other allocators (AddressSanitizer's, a
     * preloaded one) refuse mallopt, and a refusal only costs memory. */
    (void)mallopt(M_ARENA_MAX, 1);
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
    struct journal *journal = NULL;
    struct leases *leases = NULL;
    struct fuse *fuse = NULL;
    struct ops_context fc = {0};
    int metrics_fd = -1;
    struct gauge_src gauges = {0};
    if (!co.mountpoint) {
        fprintf(stderr, "bookmarkfs: missing MOUNTPOINT (see --help)\n");
        status = EXIT_USAGE;
        goto out;
    }
    /* libfuse takes any number; out of range it would silently be 10. */
    if (co.max_threads == 0 || co.max_threads > 100000) {
        fprintf(stderr, "bookmarkfs: invalid -o max_threads=%u: 1 to 100000\n",
                co.max_threads);
        status = EXIT_USAGE;
        goto out;
    }
    if (co.debug)
        log_set_level(LOG_LEVEL_DEBUG);

    if (o.metrics) {
        /* Bound before the store is checked and the daemon detaches: a bad
         * address is a usage error, a busy port an error, before mounting. */
        metrics_fd = metrics_http_listen(o.metrics, err, sizeof err);
        if (metrics_fd < 0) {
            fprintf(stderr, "bookmarkfs: %s\n", err);
            status = metrics_fd == -EINVAL ? EXIT_USAGE : 1;
            metrics_fd = -1;
            goto out;
        }
    }
    /* A file-size limit makes a journal write fail (EFBIG), not the daemon. */
    signal(SIGXFSZ, SIG_IGN);
    if (set_up_jobs(&o, &st, &jobs) < 0)
        goto out;
    char *identity = journal_identity(&o);
    if (!identity) {
        fprintf(stderr, "bookmarkfs: out of memory\n");
        goto out;
    }
    int jrc = journal_open(o.cache_dir, identity, &journal, err, sizeof err);
    free(identity);
    if (jrc < 0) {
        fprintf(stderr, "bookmarkfs: %s\n", err);
        goto out;
    }
    int log_to_file = 0;
    if (set_up_log(&o, &co, &log_to_file) < 0)
        goto out;
    jobs_set_journal(jobs, journal);
    blocking_set_hook(loop_may_block); /* the core hands the device over */
    if (set_up_leases(&o, st, journal, co.mountpoint, jobs, &leases) < 0)
        goto out;
    jobs_replay(jobs); /* closed changes not uploaded before: back on top */
    if (entries_new(jobs, getuid(), getgid(), o.scratch_list, &fc.entries) < 0) {
        fprintf(stderr, "bookmarkfs: out of memory\n");
        goto out;
    }

    fuse = fuse_new(&args, &ops_fuse_operations, sizeof ops_fuse_operations, &fc);
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
    int lrc = leases ? leases_start(leases) : 0;
    if (lrc < 0) {
        log_error("cannot start the lease renewals: %s", strerror(-lrc));
        fuse_unmount(fuse);
        goto out;
    }
    if (!co.foreground && !log_to_file)
        log_use_syslog(1);
    struct fuse_session *se = fuse_get_session(fuse);
    if (fuse_set_signal_handlers(se) != 0) {
        fuse_unmount(fuse);
        goto out;
    }
    log_info("mounted on %s (%s store, lz=%s, dlz=%s, %s/%s)", co.mountpoint,
             st->kind, o.lz_bucket, o.dlz_bucket, o.domain, o.dataset);
    if (metrics_fd >= 0) {
        gauges.jobs = jobs;
        gauges.journal = journal;
        metrics_set_gauges(read_gauges, &gauges);
        int fd = metrics_fd;
        metrics_fd = -1; /* the server owns it now, started or not */
        if (metrics_http_start(fd) == 0)
            log_info("metrics at http://%s/metrics", o.metrics);
    }
    int rc;
    if (serve(fuse, &co, &o, &rc) < 0) {
        fuse_remove_signal_handlers(se);
        fuse_unmount(fuse);
        goto out;
    }
    fuse_remove_signal_handlers(se);
    fuse_unmount(fuse);
    entries_close_all(fc.entries); /* the files whose release never came */
    /* libfuse reports the signal that ended the loop: SIGTERM, SIGINT and
     * SIGHUP are an orderly unmount. */
    status = rc == 0 || rc == SIGTERM || rc == SIGINT || rc == SIGHUP ? 0 : 1;
    jobs_warn_pending(jobs);
    jobs->leases = NULL;
    leases_free(leases); /* releases the leases still held */
    leases = NULL;
    log_info("unmounted %s", co.mountpoint);
out:
    metrics_http_stop();
    metrics_clear();
    if (metrics_fd >= 0)
        close(metrics_fd);
    if (jobs)
        jobs->leases = NULL;
    leases_free(leases); /* releases the leases still held */
    if (fuse)
        fuse_destroy(fuse);
    entries_free(fc.entries);
    jobs_free(jobs);
    journal_close(journal);
    store_destroy(st);
    free(co.mountpoint);
    options_free(&o);
    fuse_opt_free_args(&args);
    return status;
}
