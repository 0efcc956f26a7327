#include "fs/options.h"
#include "fs/lease.h"
#include "s3/defaults.h"

#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OPT(dashed, underscored, field)                                     \
    {dashed "=%s", offsetof(struct options, field), 0},                     \
    {underscored "=%s", offsetof(struct options, field), 0}

/* A flag: libfuse sets the int field to 1. */
#define FLAG(name, field) {name, offsetof(struct options, field), 1}

static const struct fuse_opt opt_spec[] = {
    OPT("--store", "store", store),
    OPT("--lz-bucket", "lz_bucket", lz_bucket),
    OPT("--dlz-bucket", "dlz_bucket", dlz_bucket),
    OPT("--domain", "domain", domain),
    OPT("--dataset", "dataset", dataset),
    OPT("--user", "user", user),
    OPT("--file-type", "file_type", file_type),
    OPT("--resume-from", "resume_from", resume_from),
    OPT("--endpoint", "endpoint", endpoint),
    OPT("--region", "region", region),
    OPT("--profile", "profile", profile),
    OPT("--ca-file", "ca_file", ca_file),
    OPT("--cache-dir", "cache_dir", cache_dir),
    OPT("--connect-timeout", "connect_timeout", connect_timeout),
    OPT("--timeout", "timeout", timeout),
    OPT("--retries", "retries", retries),
    OPT("--retry-time", "retry_time", retry_time),
    OPT("--spin-us", "spin_us", spin_us),
    OPT("--log-file", "log_file", log_file),
    OPT("--scratch", "scratch", scratch),
    OPT("--metrics", "metrics", metrics),
    OPT("--relist-window", "relist_window", relist_window),
    OPT("--lease", "lease", lease),
    OPT("--lease-ttl", "lease_ttl", lease_ttl),
    OPT("--lease-idle", "lease_idle", lease_idle),
    OPT("--lease-prefix", "lease_prefix", lease_prefix),
    FLAG("--path-style", path_style),
    FLAG("path_style", path_style),
    FLAG("--success-trigger", success_trigger),
    FLAG("success_trigger", success_trigger),
    FLAG("--fuse-loop", fuse_loop),
    FLAG("fuse_loop", fuse_loop),
    /* fstab-only options that mount.fuse3 may pass through: not ours, not
     * libfuse's. */
    FUSE_OPT_KEY("defaults", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("auto", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("noauto", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("_netdev", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("nofail", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("user", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("users", FUSE_OPT_KEY_DISCARD),
    FUSE_OPT_KEY("comment=", FUSE_OPT_KEY_DISCARD),
    FLAG("-h", show_help),
    FLAG("--help", show_help),
    FLAG("-V", show_version),
    FLAG("--version", show_version),
    FUSE_OPT_END,
};

/* fuse_opt_parse hands the same pointer to the option offsets and to proc:
 * the options come first so that their offsets hold. */
struct parse_state {
    struct options opts;

    char *err;
    size_t errlen;
    int failed;
    char *nonopts[3];
    int nnonopts;
};

static int proc(void *data, const char *arg, int key, struct fuse_args *out)
{
    (void)out;
    struct parse_state *ps = data;
    switch (key) {
    case FUSE_OPT_KEY_NONOPT:
        if (ps->nnonopts >= 2) {
            if (!ps->failed)
                snprintf(ps->err, ps->errlen, "unexpected argument '%s'", arg);
            ps->failed = 1;
            return 0;
        }
        ps->nonopts[ps->nnonopts] = strdup(arg);
        if (!ps->nonopts[ps->nnonopts])
            return -1;
        ps->nnonopts++;
        return 0; /* the mountpoint is added back after parsing */
    case FUSE_OPT_KEY_OPT:
        if (strncmp(arg, "--", 2) == 0) {
            if (!ps->failed) {
                const char *eq = strchr(arg, '=');
                snprintf(ps->err, ps->errlen, "unknown option '%.*s' (see --help)",
                         (int)(eq ? eq - arg : (long)strlen(arg)), arg);
            }
            ps->failed = 1;
            return 0;
        }
        if (strncmp(arg, "x-", 2) == 0)
            return 0; /* fstab's x-systemd.*, x-gvfs-*: for other programs */
        return 1; /* FUSE's own (-f, -d, -o allow_other, ...) */
    default:
        return 1;
    }
}

static char *dup_default(char **field, const char *value)
{
    if (!*field)
        *field = strdup(value);
    return *field;
}

static const char *home_dir(void)
{
    const char *h = getenv("HOME");
    if (h && *h)
        return h;
    struct passwd *pw = getpwuid(geteuid());
    return pw ? pw->pw_dir : "/";
}

/* $XDG_<var> or ~/<fallback>, plus "/bookmarkfs". */
static char *xdg_dir(const char *var, const char *fallback)
{
    const char *x = getenv(var);
    char *out = NULL;
    int n = x && *x ? asprintf(&out, "%s/bookmarkfs", x)
                    : asprintf(&out, "%s/%s/bookmarkfs", home_dir(), fallback);
    return n < 0 ? NULL : out;
}

static int parse_ms(const char *name, const char *value, long *out, long min, long max,
                    char *err, size_t errlen)
{
    if (!value)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v < min) {
        snprintf(err, errlen, "invalid --%s '%s': expected a whole number >= %ld", name,
                 value, min);
        return -EINVAL;
    }
    if (v > max) {
        snprintf(err, errlen, "invalid --%s '%s': at most %ld", name, value, max);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

/* A dataset path segment: not empty, no '/', not "." or "..". */
static int bad_segment(const char *name, const char *value, char *err, size_t errlen)
{
    if (!*value || strchr(value, '/') || strcmp(value, ".") == 0 ||
        strcmp(value, "..") == 0) {
        snprintf(err, errlen, "invalid --%s '%s': must be one path segment", name, value);
        return -EINVAL;
    }
    return 0;
}

static int bad_bucket(const char *name, const char *value, char *err, size_t errlen)
{
    if (!*value || strchr(value, '/') || value[0] == '.' || strlen(value) > 255) {
        snprintf(err, errlen, "invalid --%s '%s': not a bucket name", name, value);
        return -EINVAL;
    }
    return 0;
}

/* An option given with an empty value (`--cache-dir=`, `-o region=`) is
 * refused: it would otherwise mean its default silently, or nothing. */
static int empty_value(const struct options *o, char *err, size_t errlen)
{
    const struct {
        const char *name;
        const char *value;
    } v[] = {
        {"store", o->store},           {"lz-bucket", o->lz_bucket},
        {"dlz-bucket", o->dlz_bucket}, {"domain", o->domain},
        {"dataset", o->dataset},       {"user", o->user},
        {"file-type", o->file_type},   {"resume-from", o->resume_from},
        {"endpoint", o->endpoint},     {"region", o->region},
        {"profile", o->profile},       {"ca-file", o->ca_file},
        {"cache-dir", o->cache_dir},   {"connect-timeout", o->connect_timeout},
        {"timeout", o->timeout},       {"retries", o->retries},
        {"retry-time", o->retry_time}, {"spin-us", o->spin_us},
        {"log-file", o->log_file},     {"metrics", o->metrics},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        if (v[i].value && !v[i].value[0]) {
            snprintf(err, errlen, "invalid --%s '': the value is empty", v[i].name);
            return -EINVAL;
        }
    }
    return 0;
}

int options_parse(struct fuse_args *args, struct options *o, char *err, size_t errlen)
{
    struct parse_state ps = {.err = err, .errlen = errlen};
    err[0] = '\0';
    int parsed = fuse_opt_parse(args, &ps, opt_spec, proc);
    *o = ps.opts;
    if (parsed != 0) {
        if (!ps.failed)
            snprintf(err, errlen, "cannot parse the command line");
        for (int i = 0; i < ps.nnonopts; i++)
            free(ps.nonopts[i]);
        return -EINVAL;
    }
    /* mount(8) runs "bookmarkfs SOURCE MOUNTPOINT -o ...": keep the last. */
    int rc = 0;
    if (ps.nnonopts == 2) {
        o->source = ps.nonopts[0];
        ps.nonopts[0] = NULL;
    }
    if (ps.nnonopts > 0 && !ps.failed &&
        fuse_opt_add_arg(args, ps.nonopts[ps.nnonopts - 1]) != 0) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    for (int i = 0; i < ps.nnonopts; i++)
        free(ps.nonopts[i]);
    if (ps.failed || rc)
        return -EINVAL;
    if (o->show_help || o->show_version)
        return 0;
    if (empty_value(o, err, errlen))
        return -EINVAL;

    /* Which store. */
    if (!o->store)
        o->is_s3 = o->lz_bucket != NULL;
    else if (strcmp(o->store, "s3") == 0)
        o->is_s3 = 1;
    else if (strncmp(o->store, "dir:", 4) == 0)
        o->is_s3 = 0;
    else {
        snprintf(err, errlen, "invalid --store '%s': expected s3 or dir:PATH", o->store);
        return -EINVAL;
    }

    if (o->is_s3) {
        const char *missing = !o->lz_bucket ? "--lz-bucket"
                              : !o->domain  ? "--domain"
                              : !o->dataset ? "--dataset"
                              : !o->user    ? "--user"
                                            : NULL;
        if (missing) {
            snprintf(err, errlen, "missing %s (required with --store=s3)", missing);
            return -EINVAL;
        }
    } else {
        const char *s3only = o->endpoint  ? "--endpoint"
                             : o->region  ? "--region"
                             : o->profile ? "--profile"
                             : o->ca_file ? "--ca-file"
                             : o->path_style ? "--path-style"
                                             : NULL;
        if (s3only) {
            snprintf(err, errlen, "%s applies to --store=s3 only", s3only);
            return -EINVAL;
        }
        if (o->store && !o->store[4]) {
            snprintf(err, errlen, "invalid --store 'dir:': missing PATH");
            return -EINVAL;
        }
        o->dir_root = o->store ? strdup(o->store + 4) : xdg_dir("XDG_DATA_HOME", ".local/share");
        struct passwd *pw = getpwuid(geteuid());
        if (!o->dir_root || !dup_default(&o->lz_bucket, "lz") ||
            !dup_default(&o->domain, "state") || !dup_default(&o->dataset, "bookmarks") ||
            !dup_default(&o->user, pw ? pw->pw_name : "user")) {
            snprintf(err, errlen, "out of memory");
            return -EINVAL;
        }
    }
    if (!dup_default(&o->dlz_bucket, o->lz_bucket) || !dup_default(&o->file_type, "others") ||
        !dup_default(&o->resume_from, "completed")) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (strcmp(o->resume_from, "completed") == 0)
        o->resume_running = 0;
    else if (strcmp(o->resume_from, "running") == 0)
        o->resume_running = 1;
    else {
        snprintf(err, errlen, "invalid --resume-from '%s': expected completed or running",
                 o->resume_from);
        return -EINVAL;
    }
    if (bad_bucket("lz-bucket", o->lz_bucket, err, errlen) ||
        bad_bucket("dlz-bucket", o->dlz_bucket, err, errlen) ||
        bad_segment("domain", o->domain, err, errlen) ||
        bad_segment("dataset", o->dataset, err, errlen) ||
        bad_segment("user", o->user, err, errlen) ||
        bad_segment("file-type", o->file_type, err, errlen))
        return -EINVAL;
    o->connect_timeout_ms = S3_DEFAULT_CONNECT_TIMEOUT_MS;
    o->timeout_ms = S3_DEFAULT_TIMEOUT_MS;
    o->max_attempts = S3_DEFAULT_MAX_ATTEMPTS;
    o->max_retry_ms = S3_DEFAULT_RETRY_TIME_MS;
    /* Bounds keep the time arithmetic far from overflow and the values
     * from being cut to a narrower type (README, "Command line"). */
    if (parse_ms("connect-timeout", o->connect_timeout, &o->connect_timeout_ms, 1,
                 OPTIONS_MS_MAX, err, errlen) ||
        parse_ms("timeout", o->timeout, &o->timeout_ms, 1, OPTIONS_MS_MAX, err, errlen) ||
        parse_ms("retries", o->retries, &o->max_attempts, 1, 100, err, errlen) ||
        parse_ms("retry-time", o->retry_time, &o->max_retry_ms, 1, OPTIONS_MS_MAX, err,
                 errlen))
        return -EINVAL;
    o->spin_time_us = 20;
    if (parse_ms("spin-us", o->spin_us, &o->spin_time_us, 0, 1000, err, errlen))
        return -EINVAL;
    /* --scratch=LIST replaces the default patterns, +LIST adds to them. */
    const char *sc = o->scratch ? o->scratch : SCRATCH_DEFAULT;
    int n = sc[0] == '+' ? asprintf(&o->scratch_list, "%s/%s", SCRATCH_DEFAULT, sc + 1)
                         : asprintf(&o->scratch_list, "%s", sc);
    if (n < 0) {
        o->scratch_list = NULL;
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    o->relist_window_s = 900;
    if (parse_ms("relist-window", o->relist_window, &o->relist_window_s, 0, 30L * 86400,
                 err, errlen))
        return -EINVAL;
    /* Leases (README, "Leases"). */
    o->lease_mode = LEASE_AUTO;
    if (o->lease && strcmp(o->lease, "on") == 0)
        o->lease_mode = LEASE_ON;
    else if (o->lease && strcmp(o->lease, "off") == 0)
        o->lease_mode = LEASE_OFF;
    else if (o->lease && strcmp(o->lease, "auto") != 0) {
        snprintf(err, errlen, "invalid --lease '%s': expected auto, on or off", o->lease);
        return -EINVAL;
    }
    long ttl = 30, idle = 300;
    if (parse_ms("lease-ttl", o->lease_ttl, &ttl, 1, 86400, err, errlen) ||
        parse_ms("lease-idle", o->lease_idle, &idle, 1, 7 * 86400, err, errlen))
        return -EINVAL;
    o->lease_ttl_ms = ttl * 1000;
    o->lease_idle_ms = idle * 1000;
    if (o->lease_prefix) {
        const char *p = o->lease_prefix;
        int bad = p[0] == '/' || strstr(p, "//") != NULL || strlen(p) > 512;
        for (const char *seg = p; !bad && *seg;) {
            const char *end = strchr(seg, '/');
            size_t n = end ? (size_t)(end - seg) : strlen(seg);
            bad = strncmp(seg, "upload_date=", 12) == 0 || (n == 1 && seg[0] == '.') ||
                  (n == 2 && seg[0] == '.' && seg[1] == '.');
            seg = end ? end + 1 : seg + n;
        }
        if (bad) {
            snprintf(err, errlen, "invalid --lease-prefix '%s': a relative key prefix "
                     "without an upload_date= segment, '.' or '..'", p);
            return -EINVAL;
        }
        size_t n = strlen(p);
        if (asprintf(&o->lease_prefix_resolved, "%s%s", p,
                     n == 0 || p[n - 1] == '/' ? "" : "/") < 0)
            o->lease_prefix_resolved = NULL;
    } else if (asprintf(&o->lease_prefix_resolved, "%s/%s/_bookmarkfs_leases/", o->domain,
                        o->dataset) < 0) {
        o->lease_prefix_resolved = NULL;
    }
    if (!o->lease_prefix_resolved) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (!o->cache_dir && !(o->cache_dir = xdg_dir("XDG_STATE_HOME", ".local/state"))) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

void options_free(struct options *o)
{
    char **fields[] = {&o->store,    &o->lz_bucket, &o->dlz_bucket, &o->domain,
                       &o->dataset,  &o->user,      &o->file_type,  &o->resume_from,
                       &o->endpoint, &o->region,    &o->profile,    &o->ca_file,
                       &o->cache_dir, &o->connect_timeout, &o->timeout, &o->retries,
                       &o->retry_time, &o->spin_us, &o->source, &o->dir_root,
                       &o->log_file, &o->scratch, &o->scratch_list,
                       &o->metrics, &o->relist_window,
                       &o->lease, &o->lease_ttl, &o->lease_idle, &o->lease_prefix,
                       &o->lease_prefix_resolved};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        free(*fields[i]);
        *fields[i] = NULL;
    }
}

void options_usage(const char *prog)
{
    printf("usage: %s [OPTIONS] MOUNTPOINT\n\n"
           "Bookmark state of ETL jobs as files, kept in an Amorphic dataset on S3.\n"
           "Every --name=value option also works as -o name=value (dashes as underscores).\n\n"
           "  --store=s3|dir:PATH     object store (default: dir:$XDG_DATA_HOME/bookmarkfs\n"
           "                          when no bucket is given, else s3)\n"
           "  --lz-bucket=NAME        bucket uploads go to (required for s3; dir: lz)\n"
           "  --dlz-bucket=NAME       bucket get_or_create also reads (default: the LZ bucket)\n"
           "  --domain=NAME           dataset domain (required for s3; dir: state)\n"
           "  --dataset=NAME          dataset name (required for s3; dir: bookmarks)\n"
           "  --user=NAME             Amorphic user id (required for s3; dir: login name)\n"
           "  --file-type=NAME        file type segment (default: others)\n"
           "  --resume-from=completed|running  objects get_or_create considers (default: completed)\n"
           "  --endpoint=URL          S3 endpoint (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL,\n"
           "                          else https://s3.REGION.amazonaws.com)\n"
           "  --region=NAME           signing region (default: AWS_REGION, AWS_DEFAULT_REGION,\n"
           "                          profile, us-east-1)\n"
           "  --path-style            path-style addressing (MinIO, local servers)\n"
           "  --profile=NAME          credentials/config profile (default: AWS_PROFILE, default)\n"
           "  --ca-file=PATH          extra CA bundle (default: the system bundle)\n"
           "  --success-trigger       put an empty _SUCCESS object beside each completed\n"
           "                          upload, for Amorphic reload datasets (default: off)\n"
           "  --cache-dir=PATH        local journal (default: $XDG_STATE_HOME/bookmarkfs)\n"
           "  --scratch=PATTERNS      names (fnmatch globs, '/'-separated) that are local\n"
           "                          scratch files like dot-names; +PATTERNS adds to the\n"
           "                          default " SCRATCH_DEFAULT "\n"
           "  --log-file=PATH         log to this file (default: stderr with -f, else syslog;\n"
           "                          without a syslog socket, CACHE-DIR/bookmarkfs.log)\n"
           "  --connect-timeout=MS    S3 connect time-out (default: "
           S3_DEFAULT_STR(S3_DEFAULT_CONNECT_TIMEOUT_MS) ")\n"
           "  --timeout=MS            S3 time-out per request (default: "
           S3_DEFAULT_STR(S3_DEFAULT_TIMEOUT_MS) ")\n"
           "  --retries=N             S3 attempts per operation (default: "
           S3_DEFAULT_STR(S3_DEFAULT_MAX_ATTEMPTS) ")\n"
           "  --retry-time=MS         S3 time bound per operation, retries included (default: "
           S3_DEFAULT_STR(S3_DEFAULT_RETRY_TIME_MS) ")\n"
           "  --spin-us=US            how long the thread that reads requests watches for the\n"
           "                          next one before it sleeps; 0: never (default: 20)\n"
           "  --relist-window=SECONDS upload dates this long before the previous listing are\n"
           "                          listed again, for late arrivals (default: 900)\n"
           "  --fuse-loop             libfuse's own multi-threaded loop, not bookmarkfs's\n"
           "  --metrics=ADDR:PORT     serve Prometheus metrics at http://ADDR:PORT/metrics\n"
           "                          (default: off)\n"
           "  --lease=auto|on|off     one run at a time per job, on the store's conditional\n"
           "                          writes; auto: where the store honours them (default)\n"
           "  --lease-ttl=SECONDS     a lease not renewed this long may be taken over (default: 30)\n"
           "  --lease-idle=SECONDS    a held lease with no change this long lapses (default: 300)\n"
           "  --lease-prefix=PREFIX   where lease objects go in the LZ bucket\n"
           "                          (default: DOMAIN/DATASET/_bookmarkfs_leases/)\n"
           "  -f                      stay in the foreground\n"
           "  -d                      debug (implies -f)\n"
           "  -o OPT[,OPT...]         mount options (allow_other, ...)\n"
           "  -h, --help              this help\n"
           "  -V, --version           version\n",
           prog);
}
