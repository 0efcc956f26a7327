/* TLS trust for every HTTPS request of the S3 client: the system CA bundle,
 * plus the certificates of --ca-file when given. */
#ifndef BOOKMARKFS_S3_TLS_H
#define BOOKMARKFS_S3_TLS_H

#include <curl/curl.h>

/* Sets up h to verify peers against the system bundle and, when ca_file is
 * not NULL, also against the certificates in ca_file (PEM). The string must
 * outlive the handle's requests. Returns a CURLcode. */
CURLcode tls_setup(CURL *h, const char *ca_file);

#endif
