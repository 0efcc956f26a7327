/* STS: AssumeRoleWithWebIdentity with the token in
 * AWS_WEB_IDENTITY_TOKEN_FILE (re-read every time: it rotates) for
 * AWS_ROLE_ARN, or a profile's web_identity_token_file and role_arn; and
 * AssumeRole for a profile's role_arn, signed with SigV4 by the source
 * credentials. Requests are form POSTs, so no token goes into a URL; the XML
 * answer is parsed with libxml2. */
#include "s3/cred_internal.h"
#include "s3/sigv4.h"
#include "s3/xml.h"
#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <openssl/crypto.h>

#define TOKEN_FILE_MAX (64 * 1024)

/* First element named `name` (local name, any namespace) under n, depth
 * first. */
static xmlNodePtr find_elem(xmlNodePtr n, const char *name)
{
    for (; n; n = n->next) {
        if (n->type != XML_ELEMENT_NODE)
            continue;
        if (xmlStrcmp(n->name, (const xmlChar *)name) == 0)
            return n;
        xmlNodePtr c = find_elem(n->children, name);
        if (c)
            return c;
    }
    return NULL;
}

/* Text of the child element `name` of parent (malloc'd by libxml2), or
 * NULL. */
static xmlChar *child_text(xmlNodePtr parent, const char *name)
{
    if (!parent)
        return NULL;
    for (xmlNodePtr c = parent->children; c; c = c->next)
        if (c->type == XML_ELEMENT_NODE &&
            xmlStrcmp(c->name, (const xmlChar *)name) == 0)
            return xmlNodeGetContent(c);
    return NULL;
}

static void free_secret_xml(xmlChar *s)
{
    if (!s)
        return;
    OPENSSL_cleanse(s, (size_t)xmlStrlen(s));
    xmlFree(s);
}

/* Wipes every text node before the document is freed. */
static void wipe_doc(xmlNodePtr n)
{
    for (; n; n = n->next) {
        if ((n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) &&
            n->content)
            OPENSSL_cleanse(n->content, (size_t)xmlStrlen(n->content));
        wipe_doc(n->children);
    }
}

static xmlDocPtr parse_xml(const struct cred_http_resp *rs)
{
    if (rs->len > (size_t)INT32_MAX)
        return NULL;
    return xmlReadMemory(rs->body, (int)rs->len, "sts.xml", NULL,
                         XML_PARSE_NONET | XML_PARSE_NOERROR |
                             XML_PARSE_NOWARNING | XML_PARSE_NOBLANKS);
}

/* Where STS is and which region signs for it: AWS_ENDPOINT_URL_STS (or
 * AWS_ENDPOINT_URL), else the regional endpoint of AWS_REGION,
 * AWS_DEFAULT_REGION or the profile's region, else the global one. */
static int sts_target(const char *profile, char **url, char **region)
{
    *url = *region = NULL;
    const char *r = env_nonempty("AWS_REGION");
    if (!r)
        r = env_nonempty("AWS_DEFAULT_REGION");
    char *cfg = NULL;
    if (!r && cred_config_region(profile, &cfg) < 0)
        cfg = NULL; /* unreadable: as if none were set */
    if (cfg)
        r = cfg;
    const char *ep = env_nonempty("AWS_ENDPOINT_URL_STS");
    if (!ep)
        ep = env_nonempty("AWS_ENDPOINT_URL");
    int rc = 0;
    if (ep) {
        *url = strdup(ep);
    } else if (!r) {
        *url = strdup("https://sts.amazonaws.com/");
    } else if (asprintf(url, "https://sts.%s.amazonaws.com%s/", r,
                        strncmp(r, "cn-", 3) == 0 ? ".cn" : "") < 0) {
        *url = NULL;
    }
    *region = strdup(r ? r : "us-east-1");
    if (!*url || !*region) {
        free(*url);
        free(*region);
        *url = *region = NULL;
        rc = -ENOMEM;
    }
    free(cfg);
    return rc;
}

/* Appends "&name=escaped(value)" (no '&' when first) to a malloc'd form body
 * that may hold a secret; returns the new body or NULL (body freed). */
static char *form_add(char *body, size_t *blen, const char *name, const char *value)
{
    char *esc = curl_easy_escape(NULL, value, 0);
    if (!esc) {
        cred_free_buf(body, *blen);
        return NULL;
    }
    size_t el = strlen(esc), nl = strlen(name);
    size_t nlen = *blen + (*blen ? 1 : 0) + nl + 1 + el;
    char *nb = malloc(nlen + 1);
    if (!nb) {
        OPENSSL_cleanse(esc, el);
        curl_free(esc);
        cred_free_buf(body, *blen);
        return NULL;
    }
    size_t o = 0;
    if (*blen) {
        memcpy(nb, body, *blen);
        o = *blen;
        nb[o++] = '&';
    }
    memcpy(nb + o, name, nl);
    o += nl;
    nb[o++] = '=';
    memcpy(nb + o, esc, el);
    o += el;
    nb[o] = '\0';
    OPENSSL_cleanse(esc, el);
    curl_free(esc);
    cred_free_buf(body, *blen);
    *blen = o;
    return nb;
}

/* Error answer: "Code: Message" into note, without echoing the token. */
static int sts_error(const struct cred_http_resp *rs, const char *action,
                     const char *token, char *note, size_t notelen)
{
    static const char *const denied[] = {
        "AccessDenied", "InvalidIdentityToken", "ExpiredTokenException",
        "ExpiredToken", "SignatureDoesNotMatch", "InvalidClientTokenId",
    };
    struct s3_xml_error doc;
    int parsed = s3_xml_parse_error(rs->body, rs->len, &doc) == 0;
    const char *code = parsed && doc.code[0] ? doc.code : NULL;
    const char *m = parsed ? doc.message : "";
    if (token && strstr(m, token))
        m = "(message withheld: it quotes the token)";
    snprintf(note, notelen, "STS %s failed with HTTP %ld%s%s%s%.300s.", action,
             rs->status, code ? " " : "", code ? code : "", *m ? ": " : "", m);
    int rc = -EIO;
    for (size_t i = 0; code && i < sizeof denied / sizeof denied[0]; i++)
        if (strcmp(code, denied[i]) == 0)
            rc = -EACCES;
    if (!code && (rs->status == 401 || rs->status == 403))
        rc = -EACCES;
    OPENSSL_cleanse(&doc, sizeof doc);
    return rc;
}

static int sts_answer(const struct cred_http_resp *rs, const char *source,
                      struct cred_keys *out, char *note, size_t notelen)
{
    xmlDocPtr doc = parse_xml(rs);
    if (!doc) {
        snprintf(note, notelen, "The STS answer is not XML.");
        return -EIO;
    }
    xmlNodePtr root = xmlDocGetRootElement(doc);
    xmlNodePtr creds = find_elem(root, "Credentials");
    xmlChar *ak = child_text(creds, "AccessKeyId");
    xmlChar *sk = child_text(creds, "SecretAccessKey");
    xmlChar *tok = child_text(creds, "SessionToken");
    xmlChar *exp = child_text(creds, "Expiration");
    int rc;
    int64_t expiration = 0;
    if (!ak || !sk || !tok || !*ak || !*sk || !*tok) {
        snprintf(note, notelen, "The STS answer lacks Credentials (AccessKeyId, "
                 "SecretAccessKey, SessionToken).");
        rc = -EIO;
    } else if (!exp || cred_parse_expiration((const char *)exp, &expiration) < 0) {
        snprintf(note, notelen, "The STS answer has an unreadable Expiration.");
        rc = -EIO;
    } else {
        rc = cred_fill(out, source, (const char *)ak, (const char *)sk,
                       (const char *)tok, expiration);
        if (rc < 0)
            snprintf(note, notelen, "Out of memory.");
    }
    xmlFree(ak);
    free_secret_xml(sk);
    free_secret_xml(tok);
    xmlFree(exp);
    wipe_doc(root);
    xmlFreeDoc(doc);
    return rc;
}

/* POSTs the form and reads the answer into out (source names it). */
static int sts_call(const struct cred_options *o, const char *url,
                    const char *const *headers, const char *body, size_t blen,
                    const char *action, const char *token, const char *source,
                    struct cred_keys *out, char *note, size_t notelen)
{
    struct cred_http_req rq;
    cred_http_req_init(&rq, o, "POST", url, headers);
    rq.body = body;
    rq.body_len = blen;
    struct cred_http_resp rs;
    char err[CURL_ERROR_SIZE + 64];
    int rc = cred_http(&rq, &rs, err, sizeof err);
    if (rc < 0) {
        snprintf(note, notelen, "STS at %s did not answer: %s.", url, err);
        return rc == -ECONNREFUSED ? -EIO : rc;
    }
    if (rs.status != 200)
        rc = sts_error(&rs, action, token, note, notelen);
    else
        rc = sts_answer(&rs, source, out, note, notelen);
    cred_http_resp_free(&rs);
    return rc;
}

static const char *session_name(const char *given, char *buf, size_t len)
{
    if (given)
        return given;
    snprintf(buf, len, "bookmarkfs-%lld", (long long)time(NULL));
    return buf;
}

int cred_sts_web_identity(const struct cred_options *o, const char *file,
                          const char *arn, const char *sname, const char *profile,
                          struct cred_keys *out, char *note, size_t notelen)
{
    char *token = NULL, *body = NULL, *url = NULL, *region = NULL;
    size_t tlen = 0, blen = 0;
    struct stat st;
    int rc = cred_read_file(file, TOKEN_FILE_MAX, &token, &tlen, &st);
    if (rc < 0) {
        snprintf(note, notelen, "Cannot read the web identity token file %s: %s.",
                 file, strerror(-rc));
        return rc == -ENOMEM ? rc : -EACCES;
    }
    size_t tsize = tlen + 1;
    while (tlen && (token[tlen - 1] == '\n' || token[tlen - 1] == '\r' ||
                    token[tlen - 1] == ' ' || token[tlen - 1] == '\t'))
        token[--tlen] = '\0';
    if (tlen == 0 || strlen(token) != tlen) {
        snprintf(note, notelen, "The web identity token file %s is empty or "
                 "holds NUL bytes.", file);
        rc = -EACCES;
        goto out;
    }

    char session[64];
    sname = session_name(sname, session, sizeof session);
    body = form_add(body, &blen, "Action", "AssumeRoleWithWebIdentity");
    if (body)
        body = form_add(body, &blen, "Version", "2011-06-15");
    if (body)
        body = form_add(body, &blen, "RoleArn", arn);
    if (body)
        body = form_add(body, &blen, "RoleSessionName", sname);
    if (body)
        body = form_add(body, &blen, "WebIdentityToken", token);
    if (!body || sts_target(profile, &url, &region) < 0) {
        snprintf(note, notelen, "Out of memory.");
        rc = -ENOMEM;
        goto out;
    }

    const char *headers[] = {
        "Content-Type: application/x-www-form-urlencoded; charset=utf-8",
        "Accept: text/xml", NULL};
    log_debug("assuming role %s with a web identity at %s (session %s)", arn, url,
              sname);
    rc = sts_call(o, url, headers, body, blen, "AssumeRoleWithWebIdentity", token,
                  "web-identity", out, note, notelen);
out:
    cred_free_buf(token, tsize);
    cred_free_buf(body, blen);
    free(url);
    free(region);
    return rc;
}

int cred_web_identity_get(const struct cred_options *o, const char *profile,
                          struct cred_keys *out, char *note, size_t notelen)
{
    const char *file, *arn;
    int rc = cred_env_pair("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", &file, &arn,
                           note, notelen);
    if (rc < 0)
        return rc;
    return cred_sts_web_identity(o, file, arn, env_nonempty("AWS_ROLE_SESSION_NAME"),
                                 profile, out, note, notelen);
}

/* Host (with ":port" when the URL gives one) and path of url. */
static int split_url(const char *url, char **host, char **path)
{
    *host = *path = NULL;
    CURLU *u = curl_url();
    if (!u)
        return -ENOMEM;
    char *h = NULL, *port = NULL, *p = NULL;
    int rc = 0;
    if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PATH, &p, CURLU_URLDECODE) != CURLUE_OK) {
        rc = -EINVAL;
        goto out;
    }
    if (curl_url_get(u, CURLUPART_PORT, &port, 0) != CURLUE_OK)
        port = NULL;
    if (port ? asprintf(host, "%s:%s", h, port) < 0 : !(*host = strdup(h))) {
        *host = NULL;
        rc = -ENOMEM;
        goto out;
    }
    /* Raw (decoded): sigv4_sign encodes it as it signs it. */
    if (!(*path = strdup(p && *p ? p : "/"))) {
        free(*host);
        *host = NULL;
        rc = -ENOMEM;
    }
out:
    curl_free(h);
    curl_free(port);
    curl_free(p);
    curl_url_cleanup(u);
    return rc;
}

int cred_sts_assume_role(const struct cred_options *o,
                         const struct cred_keys *src,
                         const struct cred_assume_role *ar,
                         struct cred_keys *out, char *note, size_t notelen)
{
    char *body = NULL, *url = NULL, *region = NULL, *host = NULL, *path = NULL;
    size_t blen = 0;
    char session[64], dur[24];
    const char *sname = session_name(ar->session_name, session, sizeof session);
    struct sigv4_signed sig;
    memset(&sig, 0, sizeof sig);
    const char **headers = NULL;
    int rc;

    body = form_add(body, &blen, "Action", "AssumeRole");
    if (body)
        body = form_add(body, &blen, "Version", "2011-06-15");
    if (body)
        body = form_add(body, &blen, "RoleArn", ar->role_arn);
    if (body)
        body = form_add(body, &blen, "RoleSessionName", sname);
    if (body && ar->external_id)
        body = form_add(body, &blen, "ExternalId", ar->external_id);
    if (body && ar->duration_s > 0) {
        snprintf(dur, sizeof dur, "%ld", ar->duration_s);
        body = form_add(body, &blen, "DurationSeconds", dur);
    }
    if (!body || sts_target(ar->profile, &url, &region) < 0) {
        snprintf(note, notelen, "Out of memory.");
        rc = -ENOMEM;
        goto out;
    }
    rc = split_url(url, &host, &path);
    if (rc < 0) {
        snprintf(note, notelen, rc == -ENOMEM ? "Out of memory."
                 : "The STS endpoint %s is not a valid URL.", url);
        goto out;
    }

    char payload_hash[65];
    sigv4_sha256_hex(body, blen, payload_hash);
    const struct sigv4_pair extra[] = {
        {"content-type", "application/x-www-form-urlencoded; charset=utf-8"},
    };
    struct sigv4_request rq = {
        .method = "POST",
        .host = host,
        .path = path,
        .headers = extra,
        .nheaders = 1,
        .payload_hash = payload_hash,
        .region = region,
        .service = "sts",
        .now = time(NULL),
    };
    struct sigv4_credentials sc = {src->access_key, src->secret_key,
                                   src->session_token};
    rc = sigv4_sign(&rq, &sc, &sig);
    if (rc < 0) {
        snprintf(note, notelen, rc == -ENOMEM ? "Out of memory."
                 : "The AssumeRole request to %s cannot be signed.", url);
        goto out;
    }
    headers = calloc(sig.nsend_headers + 2, sizeof *headers);
    if (!headers) {
        snprintf(note, notelen, "Out of memory.");
        rc = -ENOMEM;
        goto out;
    }
    size_t n = 0;
    for (size_t i = 0; i < sig.nsend_headers; i++)
        headers[n++] = sig.send_headers[i];
    headers[n++] = "Accept: text/xml";
    headers[n] = NULL;
    log_debug("assuming role %s at %s (session %s, access key %s)", ar->role_arn,
              url, sname, src->access_key);
    rc = sts_call(o, url, headers, body, blen, "AssumeRole", NULL, "assume-role",
                  out, note, notelen);
out:
    free(headers);
    sigv4_signed_free(&sig);
    cred_free_buf(body, blen);
    free(url);
    free(region);
    free(host);
    free(path);
    return rc;
}
