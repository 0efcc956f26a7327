#include "s3/tls.h"

#include <errno.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "util/log.h"

/* libcurl calls this with the SSL_CTX it built from the system bundle: the
 * extra certificates are added to that store, not put in its place. */
static CURLcode add_ca_file(CURL *h, void *ssl_ctx, void *arg)
{
    (void)h;
    const char *path = arg;
    X509_STORE *store = SSL_CTX_get_cert_store((SSL_CTX *)ssl_ctx);
    if (!store || X509_STORE_load_file(store, path) != 1) {
        log_error("cannot load the CA certificates of %s", path);
        return CURLE_SSL_CACERT_BADFILE;
    }
    return CURLE_OK;
}

int tls_setup(CURL *h, const char *ca_bundle, const char *ca_file)
{
    CURLcode rc = curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
    /* A named bundle replaces the system's, as in the AWS SDKs: the default
     * CA directory goes too. */
    if (rc == CURLE_OK && ca_bundle)
        rc = curl_easy_setopt(h, CURLOPT_CAINFO, ca_bundle);
    if (rc == CURLE_OK && ca_bundle)
        rc = curl_easy_setopt(h, CURLOPT_CAPATH, (char *)NULL);
    if (rc == CURLE_OK && ca_file)
        rc = curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, add_ca_file);
    if (rc == CURLE_OK && ca_file)
        rc = curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, (void *)ca_file);
    if (rc == CURLE_OK)
        return 0;
    return rc == CURLE_OUT_OF_MEMORY ? -ENOMEM : -EINVAL;
}
