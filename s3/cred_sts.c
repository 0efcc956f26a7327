/* Web identity: STS AssumeRoleWithWebIdentity with the token in
 * AWS_WEB_IDENTITY_TOKEN_FILE (re-read every time: it rotates) for
 * AWS_ROLE_ARN. The request is an unsigned form POST, so the token never
 * goes into a URL; the XML answer is parsed with libxml2. */
#include "s3/cred_internal.h"
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

static char *sts_endpoint(const char *profile)
{
    const char *ep = cred_getenv("AWS_ENDPOINT_URL_STS");
    if (!ep)
        ep = cred_getenv("AWS_ENDPOINT_URL");
    if (ep)
        return strdup(ep);
    const char *region = cred_getenv("AWS_REGION");
    if (!region)
        region = cred_getenv("AWS_DEFAULT_REGION");
    char *cfg = region ? NULL : aws_config_region(profile);
    if (cfg)
        region = cfg;
    char *url = NULL;
    if (!region) {
        url = strdup("https://sts.amazonaws.com/");
    } else if (asprintf(&url, "https://sts.%s.amazonaws.com%s/", region,
                        strncmp(region, "cn-", 3) == 0 ? ".cn" : "") < 0) {
        url = NULL;
    }
    free(cfg);
    return url;
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
static int sts_error(const struct cred_http_resp *rs, const char *token,
                     char *note, size_t notelen)
{
    xmlDocPtr doc = parse_xml(rs);
    xmlChar *code = NULL, *message = NULL;
    if (doc) {
        xmlNodePtr err = find_elem(xmlDocGetRootElement(doc), "Error");
        code = child_text(err, "Code");
        message = child_text(err, "Message");
        wipe_doc(xmlDocGetRootElement(doc));
        xmlFreeDoc(doc);
    }
    const char *m = message ? (const char *)message : "";
    if (strstr(m, token))
        m = "(message withheld: it quotes the token)";
    snprintf(note, notelen, "STS AssumeRoleWithWebIdentity failed with HTTP %ld%s%s%s%.300s.",
             rs->status, code ? " " : "", code ? (const char *)code : "",
             *m ? ": " : "", m);
    int rc = -EIO;
    if (code && (xmlStrcmp(code, (const xmlChar *)"AccessDenied") == 0 ||
                 xmlStrcmp(code, (const xmlChar *)"InvalidIdentityToken") == 0 ||
                 xmlStrcmp(code, (const xmlChar *)"ExpiredTokenException") == 0 ||
                 xmlStrcmp(code, (const xmlChar *)"InvalidClientTokenId") == 0))
        rc = -EACCES;
    else if (!code && (rs->status == 401 || rs->status == 403))
        rc = -EACCES;
    free_secret_xml(message);
    xmlFree(code);
    return rc;
}

static int sts_answer(const struct cred_http_resp *rs, struct aws_credentials *out,
                      char *note, size_t notelen)
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
    } else if (!exp || cred_parse_time((const char *)exp, &expiration) < 0 ||
               expiration <= 0) {
        snprintf(note, notelen, "The STS answer has an unreadable Expiration.");
        rc = -EIO;
    } else {
        rc = cred_fill(out, "web-identity", (const char *)ak, (const char *)sk,
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

int cred_web_identity_get(const struct cred_options *o, const char *profile,
                          struct aws_credentials *out, char *note, size_t notelen)
{
    const char *file = cred_getenv("AWS_WEB_IDENTITY_TOKEN_FILE");
    const char *arn = cred_getenv("AWS_ROLE_ARN");
    if (!file && !arn) {
        snprintf(note, notelen, "AWS_WEB_IDENTITY_TOKEN_FILE is not set");
        return CRED_ABSENT;
    }
    if (!file || !arn) {
        snprintf(note, notelen, "%s is set but %s is not.",
                 file ? "AWS_WEB_IDENTITY_TOKEN_FILE" : "AWS_ROLE_ARN",
                 file ? "AWS_ROLE_ARN" : "AWS_WEB_IDENTITY_TOKEN_FILE");
        return -EACCES;
    }

    char *token = NULL, *body = NULL, *url = NULL;
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
    const char *sname = cred_getenv("AWS_ROLE_SESSION_NAME");
    if (!sname) {
        snprintf(session, sizeof session, "bookmarkfs-%lld", (long long)time(NULL));
        sname = session;
    }
    body = form_add(body, &blen, "Action", "AssumeRoleWithWebIdentity");
    if (body)
        body = form_add(body, &blen, "Version", "2011-06-15");
    if (body)
        body = form_add(body, &blen, "RoleArn", arn);
    if (body)
        body = form_add(body, &blen, "RoleSessionName", sname);
    if (body)
        body = form_add(body, &blen, "WebIdentityToken", token);
    url = sts_endpoint(profile);
    if (!body || !url) {
        snprintf(note, notelen, "Out of memory.");
        rc = -ENOMEM;
        goto out;
    }

    const char *headers[] = {
        "Content-Type: application/x-www-form-urlencoded; charset=utf-8",
        "Accept: text/xml", NULL};
    struct cred_http_req rq = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = blen,
        .connect_timeout_ms = cred_timeout_ms(o),
        .timeout_ms = cred_timeout_ms(o),
        .ca_file = o ? o->ca_file : NULL,
    };
    struct cred_http_resp rs;
    char err[CURL_ERROR_SIZE + 64];
    log_debug("assuming role %s with a web identity at %s (session %s)", arn, url,
              sname);
    rc = cred_http(&rq, &rs, err, sizeof err);
    if (rc < 0) {
        snprintf(note, notelen, "STS at %s did not answer: %s.", url, err);
        if (rc == -ECONNREFUSED)
            rc = -EIO;
        goto out;
    }
    if (rs.status != 200)
        rc = sts_error(&rs, token, note, notelen);
    else
        rc = sts_answer(&rs, out, note, notelen);
    cred_http_resp_free(&rs);
out:
    cred_free_buf(token, tsize);
    cred_free_buf(body, blen);
    free(url);
    return rc;
}
