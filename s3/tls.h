/* TLS trust for every HTTPS request of the S3 client: the system CA bundle,
 * or the bundle AWS_CA_BUNDLE / the profile's ca_bundle names in its place,
 * plus the certificates of --ca-file when given (README, "Credentials"). */
#ifndef BOOKMARKFS_S3_TLS_H
#define BOOKMARKFS_S3_TLS_H

#include <curl/curl.h>

/* Sets up h to verify peers against ca_bundle (PEM) instead of the system
 * bundle when ca_bundle is not NULL, else against the system bundle, and,
 * when ca_file is not NULL, also against the certificates in ca_file (PEM).
 * The strings must outlive the handle's requests. Returns 0, or -ENOMEM
 * or -EINVAL (libcurl refused an option). */
int tls_setup(CURL *h, const char *ca_bundle, const char *ca_file);

#endif
