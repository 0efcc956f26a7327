/* The environment as the AWS CLI and SDKs read it: a variable set to the
 * empty string counts as unset. */
#ifndef BOOKMARKFS_UTIL_ENV_H
#define BOOKMARKFS_UTIL_ENV_H

/* The value of name, or NULL when it is unset or empty. */
const char *env_nonempty(const char *name);

#endif
