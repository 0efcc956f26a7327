/* credential_process: the profile names a command that prints credentials
 * as JSON (the AWS CLI's format, Version 1):
 *   {"Version": 1, "AccessKeyId": ..., "SecretAccessKey": ...,
 *    "SessionToken": ..., "Expiration": "2024-05-01T12:00:00Z"}
 * It runs with /bin/sh -c, as the AWS SDKs run it on POSIX systems, with
 * stdin from /dev/null and stderr passed through; its output is read
 * through a pipe for at most PROCESS_TIMEOUT_MS and parsed with jansson. */
#include "s3/cred_internal.h"
#include "util/clock.h"
#include "util/files.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define PROCESS_OUTPUT_MAX (64 * 1024)
#define PROCESS_TIMEOUT_MS 60000L

extern char **environ;

static int spawn(const char *command, int out_fd, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    int rc = posix_spawn_file_actions_init(&fa);
    if (rc)
        return -rc;
    rc = posix_spawnattr_init(&attr);
    if (rc) {
        posix_spawn_file_actions_destroy(&fa);
        return -rc;
    }
    sigset_t none, dflt;
    sigemptyset(&none);
    sigemptyset(&dflt);
    sigaddset(&dflt, SIGPIPE);
    sigaddset(&dflt, SIGINT);
    sigaddset(&dflt, SIGTERM);
    sigaddset(&dflt, SIGHUP);
    sigaddset(&dflt, SIGQUIT);
    sigaddset(&dflt, SIGCHLD);
    if (!rc)
        rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    if (!rc)
        rc = posix_spawnattr_setsigmask(&attr, &none);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(&attr, &dflt);
    if (!rc)
        rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                                 POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {"sh", "-c", (char *)command, NULL};
    if (!rc)
        rc = posix_spawn(pid, "/bin/sh", &fa, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return -rc;
}

/* Reads the child's output until EOF or the deadline. Returns 0, -EFBIG,
 * -ETIMEDOUT, -ENOMEM or -errno; *buf (NULL on an error) holds what was
 * read, in a buffer of exactly *len + 1 bytes. */
static int read_output(int fd, char **buf, size_t *len)
{
    return files_read_fd_until(fd, PROCESS_OUTPUT_MAX, 1,
                               clock_mono_ms() + PROCESS_TIMEOUT_MS, buf, len);
}

static int parse_output(const char *body, size_t len, const char *profile,
                        struct cred_keys *out, char *note, size_t notelen)
{
    json_error_t jerr;
    json_t *doc = json_loadb(body, len, 0, &jerr);
    if (!json_is_object(doc)) {
        /* jerr.text may quote the output: not shown. */
        snprintf(note, notelen, "The credential_process of profile '%s' did not "
                 "print a JSON object.", profile);
        json_decref(doc);
        return -EIO;
    }
    json_t *ver = json_object_get(doc, "Version");
    json_t *ak = json_object_get(doc, "AccessKeyId");
    json_t *sk = json_object_get(doc, "SecretAccessKey");
    json_t *tok = json_object_get(doc, "SessionToken");
    json_t *exp = json_object_get(doc, "Expiration");
    int64_t expiration = 0;
    int rc = -EIO;
    if (!json_is_integer(ver) || json_integer_value(ver) != 1) {
        snprintf(note, notelen, "The credential_process of profile '%s' printed "
                 "no \"Version\": 1 (the only version there is).", profile);
    } else if (!json_is_string(ak) || !json_is_string(sk) ||
               !*json_string_value(ak) || !*json_string_value(sk)) {
        snprintf(note, notelen, "The credential_process of profile '%s' printed "
                 "no AccessKeyId or SecretAccessKey.", profile);
    } else if (tok && !json_is_string(tok) && !json_is_null(tok)) {
        snprintf(note, notelen, "The credential_process of profile '%s' printed "
                 "a SessionToken that is not a string.", profile);
    } else if (exp && !json_is_null(exp) &&
               (!json_is_string(exp) ||
                cred_parse_expiration(json_string_value(exp), &expiration) < 0)) {
        snprintf(note, notelen, "The credential_process of profile '%s' printed "
                 "an unreadable Expiration.", profile);
    } else {
        rc = cred_fill(out, "process", json_string_value(ak), json_string_value(sk),
                       json_is_string(tok) ? json_string_value(tok) : NULL,
                       expiration);
        if (rc < 0)
            snprintf(note, notelen, "Out of memory.");
    }
    cred_wipe_json_string(sk);
    cred_wipe_json_string(tok);
    json_decref(doc);
    return rc;
}

int cred_process_get(const struct cred_options *o, const char *command,
                     const char *profile, struct cred_keys *out,
                     char *note, size_t notelen)
{
    (void)o;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        int e = errno;
        snprintf(note, notelen, "Cannot run the credential_process of profile "
                 "'%s': %s.", profile, strerror(e));
        return -e;
    }
    pid_t pid;
    log_debug("profile '%s': running its credential_process", profile);
    int rc = spawn(command, fds[1], &pid);
    close(fds[1]);
    if (rc < 0) {
        close(fds[0]);
        snprintf(note, notelen, "Cannot run the credential_process of profile "
                 "'%s': %s.", profile, strerror(-rc));
        return rc;
    }
    char *buf;
    size_t len;
    int rrc = read_output(fds[0], &buf, &len);
    close(fds[0]);
    if (rrc < 0)
        kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            status = -1;
            break;
        }
    }
    size_t bufsize = buf ? len + 1 : 0;
    if (rrc < 0) {
        snprintf(note, notelen, "The credential_process of profile '%s' %s.",
                 profile, rrc == -ETIMEDOUT ? "did not finish within 60 s"
                 : rrc == -EFBIG ? "printed more than 64 KiB"
                 : strerror(-rrc));
        rc = rrc == -ENOMEM ? rrc : -EIO;
    } else if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (status != -1 && WIFEXITED(status))
            snprintf(note, notelen, "The credential_process of profile '%s' "
                     "exited with status %d.", profile, WEXITSTATUS(status));
        else if (status != -1 && WIFSIGNALED(status))
            snprintf(note, notelen, "The credential_process of profile '%s' was "
                     "killed by signal %d.", profile, WTERMSIG(status));
        else
            snprintf(note, notelen, "The credential_process of profile '%s' "
                     "failed.", profile);
        rc = -EACCES;
    } else {
        rc = parse_output(buf, len, profile, out, note, notelen);
    }
    /* what was read is wiped */
    if (buf)
        cred_free_buf(buf, bufsize);
    return rc;
}
