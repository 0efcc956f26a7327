/* The shared credentials and config files (INI, parsed by inih).
 *
 * The credentials file (AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials)
 * names sections after profiles: [NAME]. The config file (AWS_CONFIG_FILE,
 * ~/.aws/config) uses [profile NAME], and [default] for the default profile.
 * For the same profile the credentials file wins over the config file.
 *
 * inih as packaged reads lines of at most 200 bytes, shorter than a session
 * token. The reader below hands inih a long "name = value" line as a first
 * line plus indented continuation lines (inih's multi-line values), cut where
 * no whitespace or comment character sits at the seam, and the handler glues
 * the pieces back together. */
#include "s3/cred_internal.h"
#include "util/log.h"

#include <ctype.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ini.h>

#define CRED_FILE_MAX (1024 * 1024)

enum {
    K_ACCESS, K_SECRET, K_TOKEN, K_REGION, K_ROLE_ARN, K_SOURCE_PROFILE,
    K_CRED_SOURCE, K_EXTERNAL_ID, K_SESSION_NAME, K_DURATION, K_PROCESS,
    K_CA_BUNDLE, K_WEB_TOKEN_FILE, K_MFA_SERIAL, K_COUNT
};
static const char *const key_names[K_COUNT] = {
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "region",
    "role_arn", "source_profile", "credential_source", "external_id",
    "role_session_name", "duration_seconds", "credential_process", "ca_bundle",
    "web_identity_token_file", "mfa_serial",
};
/* Profile settings that configure credentials this chain does not resolve
 * from a profile (IAM Identity Center): mentioned in the note so the user
 * knows why. */
static const char *const unsupported_keys[] = {
    "sso_session", "sso_start_url",
};

/* How deep source_profile may chain roles (a loop ends here too). */
#define ROLE_CHAIN_MAX 8

struct ini_src {
    const char *path;
    const char *data;
    size_t len;
    size_t off;          /* start of the next physical line */
    /* a long line being handed out in pieces */
    const char *line;
    size_t line_len;
    size_t pos;          /* next byte of line to hand out */
    int pending;
    int continuation;    /* the piece just handed out continues a value */
    unsigned long lineno;
};

struct ini_want {
    struct ini_src src;
    int config;          /* 1: config file naming */
    const char *profile;
    int found;           /* the profile's section has entries */
    int last;            /* index of the value the last entry set, or -1 */
    const char *unsupported;
    char *vals[K_COUNT];
    size_t lens[K_COUNT];
    int oom;
};

static int is_seam_ok(const char *line, size_t c)
{
    unsigned char before = (unsigned char)line[c - 1];
    unsigned char after = (unsigned char)line[c];
    return !isspace(before) && !isspace(after) && after != ';' && after != '#';
}

/* Largest cut c with lo < c <= hi and a clean seam, or 0. */
static size_t find_cut(const char *line, size_t lo, size_t hi)
{
    for (size_t c = hi; c > lo; c--)
        if (is_seam_ok(line, c))
            return c;
    return 0;
}

static char *emit(char *buf, const char *prefix, const char *s, size_t n)
{
    size_t pl = strlen(prefix);
    memcpy(buf, prefix, pl);
    memcpy(buf + pl, s, n);
    buf[pl + n] = '\n';
    buf[pl + n + 1] = '\0';
    return buf;
}

static char *ini_src_reader(char *buf, int num, void *stream)
{
    struct ini_src *r = stream;
    if (num < 16)
        return NULL;
    size_t room = (size_t)num - 2; /* bytes of text: '\n' and NUL follow */

    if (r->pending) {
        size_t rest = r->line_len - r->pos;
        size_t take = rest;
        if (rest + 1 > room) {
            size_t cut = find_cut(r->line, r->pos, r->pos + room - 1);
            if (!cut) {
                log_warn("line %lu of %s is too long to read; ignored",
                         r->lineno, r->path);
                r->pending = 0;
                r->continuation = 0;
                return emit(buf, "", "", 0);
            }
            take = cut - r->pos;
        }
        r->continuation = 1;
        emit(buf, " ", r->line + r->pos, take);
        r->pos += take;
        if (r->pos == r->line_len)
            r->pending = 0;
        return buf;
    }

    if (r->off >= r->len)
        return NULL;
    const char *line = r->data + r->off;
    const char *nl = memchr(line, '\n', r->len - r->off);
    size_t n = nl ? (size_t)(nl - line) : r->len - r->off;
    r->off += n + (nl ? 1 : 0);
    r->lineno++;
    r->continuation = 0;
    if (n && line[n - 1] == '\r')
        n--;
    if (memchr(line, '\0', n)) {
        log_warn("line %lu of %s holds a NUL byte; ignored", r->lineno, r->path);
        return emit(buf, "", "", 0);
    }
    if (n <= room)
        return emit(buf, "", line, n);

    /* A long line: only "name = value" lines are split. */
    size_t s = 0;
    while (s < n && isspace((unsigned char)line[s]))
        s++;
    if (line[s] == ';' || line[s] == '#')
        return emit(buf, "", "#", 1);
    if (line[s] == '[') {
        log_warn("line %lu of %s is too long for a section name; the section "
                 "is ignored", r->lineno, r->path);
        return emit(buf, "", "[]", 2); /* a section no profile matches */
    }
    size_t d = s;
    while (d < n && line[d] != '=' && line[d] != ':')
        d++;
    size_t cut = d + 1 < room ? find_cut(line, d + 1, room) : 0;
    if (d >= n || !cut) {
        log_warn("line %lu of %s is too long to read; ignored", r->lineno,
                 r->path);
        return emit(buf, "", "", 0);
    }
    r->line = line;
    r->line_len = n;
    r->pos = cut;
    r->pending = 1;
    return emit(buf, "", line, cut);
}

static int section_matches(const struct ini_want *w, const char *section)
{
    if (!w->config)
        return strcmp(section, w->profile) == 0;
    if (strcmp(w->profile, "default") == 0 && strcmp(section, "default") == 0)
        return 1;
    if (strncmp(section, "profile", 7) != 0 || !isspace((unsigned char)section[7]))
        return 0;
    const char *name = section + 7;
    while (isspace((unsigned char)*name))
        name++;
    size_t nl = strlen(name);
    while (nl && isspace((unsigned char)name[nl - 1]))
        nl--;
    return nl == strlen(w->profile) && memcmp(name, w->profile, nl) == 0;
}

static int set_value(struct ini_want *w, int k, const char *value, int append)
{
    size_t vl = strlen(value);
    size_t old = append && w->vals[k] ? w->lens[k] : 0;
    char *v = malloc(old + vl + 1);
    if (!v) {
        w->oom = 1;
        return 0;
    }
    if (old)
        memcpy(v, w->vals[k], old);
    memcpy(v + old, value, vl + 1);
    cred_free_buf(w->vals[k], w->lens[k]);
    w->vals[k] = v;
    w->lens[k] = old + vl;
    return 1;
}

static int on_entry(void *user, const char *section, const char *name,
                    const char *value)
{
    struct ini_want *w = user;
    int cont = w->src.continuation;
    if (!section_matches(w, section)) {
        if (!cont)
            w->last = -1;
        return 1;
    }
    w->found = 1;
    if (cont) {
        if (w->last >= 0 && strcasecmp(name, key_names[w->last]) == 0)
            return set_value(w, w->last, value, 1);
        return 1;
    }
    w->last = -1;
    for (int k = 0; k < K_COUNT; k++) {
        if (strcasecmp(name, key_names[k]) == 0) {
            w->last = k;
            return set_value(w, k, value, 0);
        }
    }
    for (size_t i = 0; i < sizeof unsupported_keys / sizeof *unsupported_keys; i++)
        if (strcasecmp(name, unsupported_keys[i]) == 0)
            w->unsupported = unsupported_keys[i];
    return 1;
}

static void want_free(struct ini_want *w)
{
    for (int k = 0; k < K_COUNT; k++) {
        cred_free_buf(w->vals[k], w->lens[k]);
        w->vals[k] = NULL;
    }
}

/* Reads the profile's values from one file; *was_read is 1 when the file
 * exists and was read, 0 when it does not exist (or cannot be read:
 * logged). Returns 0 or -ENOMEM. */
static int read_profile(const char *path, int config, const char *profile,
                        struct ini_want *w, int *was_read)
{
    *was_read = 0;
    static atomic_int warned_mode;
    memset(w, 0, sizeof *w);
    w->config = config;
    w->profile = profile;
    w->last = -1;

    char *data;
    size_t len;
    struct stat st;
    int rc = cred_read_file(path, CRED_FILE_MAX, &data, &len, &st);
    if (rc == -ENOENT || rc == -ENOTDIR)
        return 0;
    if (rc == -ENOMEM)
        return rc;
    if (rc < 0) {
        log_warn("cannot read %s: %s", path, strerror(-rc));
        return 0;
    }
    if (!config && (st.st_mode & (S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH)) &&
        !atomic_exchange(&warned_mode, 1))
        log_warn("the AWS credentials file %s is accessible by other users "
                 "(mode %03o); chmod 600 it", path, (unsigned)(st.st_mode & 0777));

    w->src.path = path;
    w->src.data = data;
    w->src.len = len;
    int perr = ini_parse_stream(ini_src_reader, &w->src, on_entry, w);
    cred_free_buf(data, len + 1);
    if (w->oom) {
        want_free(w);
        return -ENOMEM;
    }
    if (perr > 0)
        log_warn("%s: syntax error on line %d", path, perr);
    *was_read = 1;
    return 0;
}

static int file_path(const char *env, const char *dflt, char **out)
{
    const char *v = env_nonempty(env);
    return cred_expand_home(v ? v : dflt, out);
}

/* One profile as both files have it. */
struct profile {
    const char *name;
    char *paths[2];      /* credentials file, config file */
    struct ini_want w[2];
    int read[2];
};

static void profile_free(struct profile *pr)
{
    want_free(&pr->w[0]);
    want_free(&pr->w[1]);
    free(pr->paths[0]);
    free(pr->paths[1]);
}

static int profile_load(const char *name, struct profile *pr, char *note,
                        size_t notelen)
{
    memset(pr, 0, sizeof *pr);
    pr->name = name;
    if (file_path("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials", &pr->paths[0]) < 0 ||
        file_path("AWS_CONFIG_FILE", "~/.aws/config", &pr->paths[1]) < 0) {
        snprintf(note, notelen, "cannot locate the shared files (no home directory)");
        return -ENOMEM;
    }
    for (int i = 0; i < 2; i++) {
        int rc = read_profile(pr->paths[i], i == 1, name, &pr->w[i], &pr->read[i]);
        if (rc < 0) {
            snprintf(note, notelen, "Out of memory reading %s.", pr->paths[i]);
            return rc;
        }
    }
    return 0;
}

/* A setting of the profile: the credentials file's wins over the config
 * file's. NULL when neither sets it (or sets it empty). */
static const char *pval(const struct profile *pr, int k)
{
    for (int i = 0; i < 2; i++)
        if (pr->w[i].vals[k] && *pr->w[i].vals[k])
            return pr->w[i].vals[k];
    return NULL;
}

/* Static keys from file i of the profile: 0 filled, CRED_ABSENT none,
 * -EACCES half a pair. */
static int static_keys(const struct profile *pr, int i, struct cred_keys *out,
                       char *note, size_t notelen)
{
    const char *ak = pr->w[i].vals[K_ACCESS], *sk = pr->w[i].vals[K_SECRET];
    if (!ak && !sk)
        return CRED_ABSENT;
    if (!ak || !sk || !*ak || !*sk) {
        snprintf(note, notelen, "Profile '%s' in %s has %s but no %s.",
                 pr->name, pr->paths[i],
                 ak && *ak ? "aws_access_key_id" : "aws_secret_access_key",
                 ak && *ak ? "aws_secret_access_key" : "aws_access_key_id");
        return -EACCES;
    }
    int rc = cred_fill(out, "shared-files", ak, sk, pr->w[i].vals[K_TOKEN], 0);
    if (rc < 0)
        snprintf(note, notelen, "Out of memory.");
    else
        log_debug("credentials for profile '%s' from %s", pr->name, pr->paths[i]);
    return rc;
}

static int resolve_profile(const struct cred_options *o, const char *name,
                           const char *root, int named, int depth,
                           struct cred_keys *out, char *note, size_t notelen);

/* The credentials a role profile assumes the role with: credential_source
 * or source_profile. */
static int role_source(const struct cred_options *o, const struct profile *pr,
                       const char *root, int depth, struct cred_keys *src, char *note,
                       size_t notelen)
{
    const char *sp = pval(pr, K_SOURCE_PROFILE), *cs = pval(pr, K_CRED_SOURCE);
    if (sp && cs) {
        snprintf(note, notelen, "Profile '%s' sets both source_profile and "
                 "credential_source; set one.", pr->name);
        return -EACCES;
    }
    if (!sp && !cs) {
        snprintf(note, notelen, "Profile '%s' sets role_arn but neither "
                 "source_profile nor credential_source (nor "
                 "web_identity_token_file).", pr->name);
        return -EACCES;
    }
    int rc;
    if (cs) {
        if (strcasecmp(cs, "Environment") == 0)
            rc = cred_env_get(src, note, notelen);
        else if (strcasecmp(cs, "Ec2InstanceMetadata") == 0)
            rc = cred_imds_get(o, src, note, notelen);
        else if (strcasecmp(cs, "EcsContainer") == 0)
            rc = cred_container_get(o, src, note, notelen);
        else {
            snprintf(note, notelen, "Profile '%s' has credential_source = %s; "
                     "bookmarkfs knows Environment, Ec2InstanceMetadata and "
                     "EcsContainer.", pr->name, cs);
            return -EACCES;
        }
        if (rc == CRED_ABSENT) {
            char why[320];
            snprintf(why, sizeof why, "%s", note);
            snprintf(note, notelen, "Profile '%s' takes its source credentials "
                     "from %s, which has none (%s).", pr->name, cs, why);
            rc = -EACCES;
        }
        return rc;
    }
    if (strcmp(sp, pr->name) == 0) {
        /* A profile may name itself: its own static keys assume its role. */
        rc = static_keys(pr, 0, src, note, notelen);
        if (rc == CRED_ABSENT)
            rc = static_keys(pr, 1, src, note, notelen);
        if (rc == CRED_ABSENT) {
            snprintf(note, notelen, "Profile '%s' is its own source_profile but "
                     "has no aws_access_key_id.", pr->name);
            rc = -EACCES;
        }
        return rc;
    }
    rc = resolve_profile(o, sp, root, 1, depth + 1, src, note, notelen);
    if (rc == CRED_ABSENT) {
        snprintf(note, notelen, "The source_profile '%s' of profile '%s' has no "
                 "credentials.", sp, pr->name);
        rc = -EACCES;
    }
    return rc;
}

/* root: the profile the chain started from, whose region every STS call
 * of the chain uses (as the AWS CLI does). */
static int assume_role(const struct cred_options *o, const struct profile *pr,
                       const char *root, int depth, struct cred_keys *out, char *note,
                       size_t notelen)
{
    const char *arn = pval(pr, K_ROLE_ARN);
    if (pval(pr, K_MFA_SERIAL)) {
        snprintf(note, notelen, "Profile '%s' needs an MFA code (mfa_serial), "
                 "which a file system cannot ask for; use a profile without it.",
                 pr->name);
        return -EACCES;
    }
    const char *web = pval(pr, K_WEB_TOKEN_FILE);
    if (web) {
        char *path;
        int rc = cred_expand_home(web, &path);
        if (rc < 0) {
            snprintf(note, notelen, rc == -ENOMEM ? "Out of memory." :
                     "Cannot expand %s: no home directory.", web);
            return rc == -ENOMEM ? rc : -EACCES;
        }
        rc = cred_sts_web_identity(o, path, arn, pval(pr, K_SESSION_NAME),
                                       root, out, note, notelen);
        free(path);
        return rc;
    }
    struct cred_assume_role ar = {
        .role_arn = arn,
        .external_id = pval(pr, K_EXTERNAL_ID),
        .session_name = pval(pr, K_SESSION_NAME),
        .profile = root,
    };
    const char *dur = pval(pr, K_DURATION);
    if (dur) {
        char *end;
        errno = 0;
        long v = strtol(dur, &end, 10);
        while (isspace((unsigned char)*end))
            end++;
        if (errno || end == dur || *end || v < 900 || v > 43200) {
            snprintf(note, notelen, "Profile '%s' has duration_seconds = %s; it "
                     "must be a number of seconds from 900 to 43200.", pr->name,
                     dur);
            return -EINVAL;
        }
        ar.duration_s = v;
    }
    if (depth >= ROLE_CHAIN_MAX) {
        snprintf(note, notelen, "Profile '%s': its source_profile chain is longer "
                 "than %d profiles or loops.", pr->name, ROLE_CHAIN_MAX);
        return -EACCES;
    }
    struct cred_keys src;
    memset(&src, 0, sizeof src);
    int rc = role_source(o, pr, root, depth, &src, note, notelen);
    if (rc < 0)
        return rc;
    log_debug("profile '%s': assuming role %s with credentials from %s",
              pr->name, arn, src.source);
    rc = cred_sts_assume_role(o, &src, &ar, out, note, notelen);
    cred_keys_clear(&src);
    return rc;
}

/* The order within a profile is the AWS CLI's: a role (role_arn), then the
 * credentials file's keys, then credential_process, then the config
 * file's keys. */
static int resolve_profile(const struct cred_options *o, const char *name,
                           const char *root, int named, int depth,
                           struct cred_keys *out, char *note, size_t notelen)
{
    struct profile pr;
    int rc = profile_load(name, &pr, note, notelen);
    if (rc < 0)
        goto out;
    if (pval(&pr, K_ROLE_ARN)) {
        rc = assume_role(o, &pr, root, depth, out, note, notelen);
        goto out;
    }
    rc = static_keys(&pr, 0, out, note, notelen);
    if (rc != CRED_ABSENT)
        goto out;
    const char *proc = pval(&pr, K_PROCESS);
    if (proc) {
        rc = cred_process_get(o, proc, name, out, note, notelen);
        goto out;
    }
    rc = static_keys(&pr, 1, out, note, notelen);
    if (rc != CRED_ABSENT)
        goto out;
    rc = CRED_ABSENT;
    if (!pr.w[0].found && !pr.w[1].found) {
        if (named) {
            snprintf(note, notelen, "The profile '%s' is in neither %s%s nor %s%s.",
                     name, pr.paths[0], pr.read[0] ? "" : " (absent)", pr.paths[1],
                     pr.read[1] ? "" : " (absent)");
            rc = -EACCES;
        } else {
            snprintf(note, notelen, "no profile '%s' in %s%s or %s%s", name,
                     pr.paths[0], pr.read[0] ? "" : " (absent)", pr.paths[1],
                     pr.read[1] ? "" : " (absent)");
        }
        goto out;
    }
    const char *unsup = pr.w[0].unsupported ? pr.w[0].unsupported : pr.w[1].unsupported;
    if (unsup) {
        log_warn("profile '%s' configures credentials with %s (IAM Identity "
                 "Center), which bookmarkfs does not support", name, unsup);
        snprintf(note, notelen, "profile '%s' uses %s, which is not supported",
                 name, unsup);
    } else {
        snprintf(note, notelen, "profile '%s' has no aws_access_key_id, "
                 "role_arn or credential_process", name);
    }
out:
    profile_free(&pr);
    return rc;
}

int cred_files_get(const struct cred_options *o, const char *profile, int named,
                   struct cred_keys *out, char *note, size_t notelen)
{
    return resolve_profile(o, profile, profile, named, 0, out, note, notelen);
}

/* A setting of the profile in the config file: 0 with *out malloc'd or
 * NULL (not set), or -ENOMEM. */
static int config_value(const char *profile, int k, char **out)
{
    *out = NULL;
    if (!profile || !*profile)
        profile = env_nonempty("AWS_PROFILE");
    if (!profile)
        profile = "default";
    char *path;
    int rc = file_path("AWS_CONFIG_FILE", "~/.aws/config", &path);
    if (rc < 0)
        return rc == -ENOENT ? 0 : rc; /* no home: no config file */
    struct ini_want w;
    int was_read;
    rc = read_profile(path, 1, profile, &w, &was_read);
    free(path);
    if (rc < 0)
        return rc;
    if (was_read) {
        if (w.vals[k] && *w.vals[k] && !(*out = strdup(w.vals[k])))
            rc = -ENOMEM;
        want_free(&w);
    }
    return rc < 0 ? rc : 0;
}

int cred_config_region(const char *profile, char **out)
{
    return config_value(profile, K_REGION, out);
}

int cred_ca_bundle(const char *profile, char **out, const char **from)
{
    *out = NULL;
    *from = NULL;
    const char *env = env_nonempty("AWS_CA_BUNDLE");
    char *v = NULL;
    if (!env) {
        int rc = config_value(profile, K_CA_BUNDLE, &v);
        if (rc < 0)
            return rc;
        if (!v)
            return 0;
    }
    int rc = cred_expand_home(env ? env : v, out);
    free(v);
    if (rc < 0)
        return -ENOMEM;
    *from = env ? "AWS_CA_BUNDLE" : "the profile's ca_bundle";
    return 0;
}
