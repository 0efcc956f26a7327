/* The command line (README, "Command line"; bookmarkfs(1)), parsed with
 * libfuse's option parser: every long option --name=value also works as
 * -o name=value (dashes as underscores). */
#ifndef BOOKMARKFS_FS_OPTIONS_H
#define BOOKMARKFS_FS_OPTIONS_H

/* The largest time-out or time bound an option accepts: one day, in ms. */
#define OPTIONS_MS_MAX 86400000L

#include <fuse.h>
#include <stddef.h>

struct options {
    /* as given (owned, may be NULL) */
    char *store, *lz_bucket, *dlz_bucket, *domain, *dataset, *user, *file_type;
    char *resume_from, *endpoint, *region, *profile, *ca_file, *cache_dir;
    char *connect_timeout, *timeout, *retries, *retry_time, *spin_us, *relist_window;
    char *log_file;
    char *scratch;  /* --scratch as given */
    char *metrics; /* --metrics=ADDR:PORT, or NULL: off */
    char *lease, *lease_ttl, *lease_idle, *lease_prefix;
    int path_style;
    int success_trigger;
    int fuse_loop; /* libfuse's multi-threaded loop, not fs/loop.c */
    int show_help, show_version;
    char *source; /* the "device" argument mount(8) passes, ignored */
    /* resolved */
    int is_s3;
    char *dir_root; /* for dir: */
    int resume_running;
    long connect_timeout_ms, timeout_ms, max_attempts, max_retry_ms;
    long spin_time_us; /* --spin-us */
    char *scratch_list; /* the scratch patterns in effect, '/'-separated */
    long relist_window_s; /* --relist-window */
    int lease_mode;    /* enum lease_mode (fs/lease.h) */
    long lease_ttl_ms, lease_idle_ms;
    char *lease_prefix_resolved; /* ends in '/' */
};

/* Parses our options out of args (leaving FUSE's own), applies defaults and
 * checks them. 0, or -EINVAL on a missing or contradictory option (-ENOMEM
 * when memory ran out), with one line in err. */
/* The names tools give their temp, backup and probe files (README,
 * "Scratch files"): sed -i, perl -pi, Python's tempfile (also with a
 * suffix), mktemp, vim's write probe, backups and swap files, emacs'
 * autosave, nano's save file, patch's rejects. */
#define SCRATCH_DEFAULT                                                        \
    "*~/#*#/*.bak/*.orig/*.rej/*.tmp/*.swp/*.save/4913/sed\?\?\?\?\?\?/"      \
    "XX\?\?\?\?\?\?/tmp\?\?\?\?\?\?\?\?/tmp\?\?\?\?\?\?\?\?.*/tmp.*"

int options_parse(struct fuse_args *args, struct options *o, char *err, size_t errlen);
void options_free(struct options *o);
void options_usage(const char *prog);

#endif
