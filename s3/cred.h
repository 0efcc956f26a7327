/* The AWS credential chain, in order: environment, shared credentials and
 * config files (profile), container credentials, web identity (STS
 * AssumeRoleWithWebIdentity), EC2 instance metadata (IMDSv2). Temporary
 * credentials are refreshed before they expire. Thread-safe. Never logs a
 * secret. */
#ifndef BOOKMARKFS_S3_CRED_H
#define BOOKMARKFS_S3_CRED_H

#include <stddef.h>
#include <stdint.h>

struct cred_keys {
    char *access_key;
    char *secret_key;
    char *session_token; /* NULL when not temporary */
    int64_t expiration;  /* seconds since 1970 UTC; 0 = does not expire */
    char source[32];     /* "environment", "shared-files", "container",
                            "web-identity", "imds" */
};

struct cred_provider;

struct cred_options {
    const char *profile;   /* NULL: AWS_PROFILE, else "default" */
    const char *ca_file;   /* extra CA bundle for HTTPS providers (STS) */
    const char *ca_bundle; /* bundle in place of the system's, or NULL */
    long timeout_ms;       /* per request to a credential endpoint */
};

/* Creates the chain in *out. Nothing is fetched yet. 0 or -ENOMEM. */
int cred_provider_new(const struct cred_options *opts, struct cred_provider **out);

/* Copies the current credentials into out (caller clears them with
 * cred_keys_clear). Resolves the chain on first use and refreshes
 * temporary credentials within 5 minutes of expiry; force_refresh refreshes
 * now (after an ExpiredToken answer). Returns 0, or -EACCES when no provider
 * has credentials (msg says why, one plain sentence), -EIO/-ETIMEDOUT. */
int cred_provider_get(struct cred_provider *p, struct cred_keys *out,
                      int force_refresh, char *msg, size_t msglen);

void cred_provider_free(struct cred_provider *p);

/* Wipes the secrets and frees the strings. */
void cred_keys_clear(struct cred_keys *c);

/* The CA bundle the AWS SDKs use in place of the system's: AWS_CA_BUNDLE,
 * else the profile's ca_bundle in the config file ("~/" expanded). Returns
 * 0 with *out malloc'd (or NULL when neither is set) and *from naming
 * where it came from, or -ENOMEM. */
int cred_ca_bundle(const char *profile, char **out, const char **from);

/* Region from the config file for the profile (AWS_CONFIG_FILE or
 * ~/.aws/config, section "profile NAME" or "default"): 0 with *out
 * malloc'd, or NULL when none is set, or -ENOMEM. */
int cred_config_region(const char *profile, char **out);

#endif
