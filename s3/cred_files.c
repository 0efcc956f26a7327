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

enum { K_ACCESS, K_SECRET, K_TOKEN, K_REGION, K_COUNT };
static const char *const key_names[K_COUNT] = {
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "region",
};
/* Profile settings that configure credentials this chain does not resolve
 * from a profile: mentioned in the note so the user knows why. */
static const char *const unsupported_keys[] = {
    "role_arn", "credential_process", "sso_session", "sso_start_url",
    "web_identity_token_file", "credential_source",
};

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

/* Reads the profile's values from one file. Returns 1 when the file exists
 * and was read, 0 when it does not exist (or cannot be read: logged), or
 * -ENOMEM. */
static int read_profile(const char *path, int config, const char *profile,
                        struct ini_want *w)
{
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
    return 1;
}

static char *file_path(const char *env, const char *dflt)
{
    const char *v = cred_getenv(env);
    return cred_expand_home(v ? v : dflt);
}

int cred_files_get(const char *profile, int named, struct aws_credentials *out,
                   char *note, size_t notelen)
{
    char *paths[2] = {
        file_path("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        file_path("AWS_CONFIG_FILE", "~/.aws/config"),
    };
    struct ini_want w[2];
    int read[2] = {0, 0};
    int rc = CRED_ABSENT;
    memset(w, 0, sizeof w);
    if (!paths[0] || !paths[1]) {
        snprintf(note, notelen, "cannot locate the shared files (no home directory)");
        rc = -ENOMEM;
        goto out;
    }
    for (int i = 0; i < 2; i++) {
        read[i] = read_profile(paths[i], i == 1, profile, &w[i]);
        if (read[i] < 0) {
            snprintf(note, notelen, "Out of memory reading %s.", paths[i]);
            rc = read[i];
            goto out;
        }
    }
    for (int i = 0; i < 2; i++) {
        const char *ak = w[i].vals[K_ACCESS], *sk = w[i].vals[K_SECRET];
        if (!ak && !sk)
            continue;
        if (!ak || !sk || !*ak || !*sk) {
            snprintf(note, notelen, "Profile '%s' in %s has %s but no %s.",
                     profile, paths[i],
                     ak && *ak ? "aws_access_key_id" : "aws_secret_access_key",
                     ak && *ak ? "aws_secret_access_key" : "aws_access_key_id");
            rc = -EACCES;
            goto out;
        }
        rc = cred_fill(out, "shared-files", ak, sk, w[i].vals[K_TOKEN], 0);
        if (rc < 0)
            snprintf(note, notelen, "Out of memory.");
        else
            log_debug("credentials for profile '%s' from %s", profile, paths[i]);
        goto out;
    }
    if (!w[0].found && !w[1].found) {
        if (named) {
            snprintf(note, notelen, "The profile '%s' is in neither %s%s nor %s%s.",
                     profile, paths[0], read[0] ? "" : " (absent)", paths[1],
                     read[1] ? "" : " (absent)");
            rc = -EACCES;
        } else {
            snprintf(note, notelen, "no profile '%s' in %s%s or %s%s", profile,
                     paths[0], read[0] ? "" : " (absent)", paths[1],
                     read[1] ? "" : " (absent)");
        }
        goto out;
    }
    const char *unsup = w[0].unsupported ? w[0].unsupported : w[1].unsupported;
    if (unsup) {
        log_warn("profile '%s' configures credentials with %s, which bookmarkfs "
                 "does not support; only aws_access_key_id and "
                 "aws_secret_access_key are read from the shared files",
                 profile, unsup);
        snprintf(note, notelen, "profile '%s' uses %s, which is not supported",
                 profile, unsup);
    } else {
        snprintf(note, notelen, "profile '%s' has no aws_access_key_id", profile);
    }
out:
    want_free(&w[0]);
    want_free(&w[1]);
    free(paths[0]);
    free(paths[1]);
    return rc;
}

char *aws_config_region(const char *profile)
{
    if (!profile || !*profile)
        profile = cred_getenv("AWS_PROFILE");
    if (!profile)
        profile = "default";
    char *path = file_path("AWS_CONFIG_FILE", "~/.aws/config");
    if (!path)
        return NULL;
    struct ini_want w;
    char *region = NULL;
    if (read_profile(path, 1, profile, &w) > 0) {
        if (w.vals[K_REGION] && *w.vals[K_REGION])
            region = strdup(w.vals[K_REGION]);
        want_free(&w);
    }
    free(path);
    return region;
}
