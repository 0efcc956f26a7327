/* S3 XML documents with libxml2 (DOM). The parser never fetches anything
 * and never expands entities from a DTD. */
#include "s3/xml.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "util/iso8601.h"
#include "util/log.h"

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

static void xml_init_once(void)
{
    xmlInitParser();
}

void s3_xml_init(void)
{
    pthread_once(&xml_once, xml_init_once);
}

static xmlDocPtr parse_doc(const char *body, size_t len)
{
    if (!body || len == 0 || len > INT_MAX)
        return NULL;
    s3_xml_init();
    return xmlReadMemory(body, (int)len, "s3.xml", NULL,
                         XML_PARSE_NONET | XML_PARSE_NOERROR |
                             XML_PARSE_NOWARNING | XML_PARSE_NOBLANKS);
}

static int name_is(const xmlNode *n, const char *name)
{
    return n->type == XML_ELEMENT_NODE && n->name &&
           strcmp((const char *)n->name, name) == 0;
}

static const xmlNode *child(const xmlNode *parent, const char *name)
{
    for (const xmlNode *c = parent->children; c; c = c->next)
        if (name_is(c, name))
            return c;
    return NULL;
}

/* Text content of an element, malloc'd ("" for an empty element). */
static char *text_of(const xmlNode *n)
{
    xmlChar *t = xmlNodeGetContent(n);
    if (!t)
        return strdup("");
    char *s = strdup((const char *)t);
    xmlFree(t);
    return s;
}

static void copy_text(const xmlNode *parent, const char *name, char *dst,
                      size_t dstlen)
{
    dst[0] = '\0';
    const xmlNode *n = child(parent, name);
    if (!n)
        return;
    xmlChar *t = xmlNodeGetContent(n);
    if (!t)
        return;
    snprintf(dst, dstlen, "%s", (const char *)t);
    explicit_bzero(t, (size_t)xmlStrlen(t)); /* errors' texts: see s3_xml_parse_error */
    xmlFree(t);
}

/* The first element named name at or under n and its siblings, depth
 * first. Only elements are descended into: an entity reference's children
 * are the entity's shared content (a document may nest references to blow
 * a walk up exponentially), and libxml2 bounds the elements' depth. */
static const xmlNode *find_elem(const xmlNode *n, const char *name)
{
    for (; n; n = n->next) {
        if (name_is(n, name))
            return n;
        if (n->type != XML_ELEMENT_NODE)
            continue;
        const xmlNode *c = find_elem(n->children, name);
        if (c)
            return c;
    }
    return NULL;
}

/* Wipes every text node of the elements (an error's message may quote a
 * token); descends as find_elem does. */
static void wipe_text(xmlNode *n)
{
    for (; n; n = n->next) {
        if ((n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) &&
            n->content)
            explicit_bzero(n->content, (size_t)xmlStrlen(n->content));
        else if (n->type == XML_ELEMENT_NODE)
            wipe_text(n->children);
    }
}

int s3_xml_parse_error(const char *body, size_t len, struct s3_xml_error *out)
{
    memset(out, 0, sizeof *out);
    xmlDocPtr doc = parse_doc(body, len);
    if (!doc)
        return -EINVAL;
    int rc = -EINVAL;
    xmlNode *root = xmlDocGetRootElement(doc);
    const xmlNode *err = root && name_is(root, "ErrorResponse")
                             ? find_elem(root->children, "Error")
                             : root && name_is(root, "Error") ? root : NULL;
    if (err) {
        copy_text(err, "Code", out->code, sizeof out->code);
        copy_text(err, "Message", out->message, sizeof out->message);
        copy_text(err, "RequestId", out->request_id, sizeof out->request_id);
        if (!out->request_id[0] && err != root) /* STS: beside the Error */
            copy_text(root, "RequestId", out->request_id, sizeof out->request_id);
        rc = 0;
    }
    wipe_text(root);
    xmlFreeDoc(doc);
    return rc;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !end || *end != '\0')
        return -EINVAL;
    *out = (uint64_t)v;
    return 0;
}

void s3_xml_etag_copy(char *dst, size_t dstlen, const char *src)
{
    size_t n = strlen(src);
    if (n >= 2 && src[0] == '"' && src[n - 1] == '"') {
        src++;
        n -= 2;
    }
    if (n >= dstlen)
        n = dstlen - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* An object of a listing whose key cannot be told: skipped, not an error. */
#define KEY_UNTOLD (-EILSEQ)

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A key of a listing with encoding-type=url, decoded in place as S3's SDKs
 * do (botocore's unquote_plus): "%XX" is the byte XX and "+" a space (S3
 * writes a '+' of the key as %2B). -EINVAL for a broken escape; KEY_UNTOLD
 * for a key holding a NUL byte, which no name can carry. */
static int url_decode(char *s)
{
    char *out = s;
    for (const char *p = s; *p; p++) {
        if (*p == '+') {
            *out++ = ' ';
        } else if (*p == '%') {
            int hi = hex_digit(p[1]), lo = hi < 0 ? -1 : hex_digit(p[2]);
            if (lo < 0)
                return -EINVAL;
            if (hi == 0 && lo == 0)
                return KEY_UNTOLD;
            *out++ = (char)(hi * 16 + lo);
            p += 2;
        } else {
            *out++ = *p;
        }
    }
    *out = '\0';
    return 0;
}

#define REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD */

/* Whether a key read from a listing that was not URL-encoded may have lost
 * what it holds: XML turns a CR (and CR LF) into LF, and bytes XML cannot
 * carry were replaced with U+FFFD before parsing (see s3_xml_parse_list). */
static int key_may_be_altered(const char *key, int scrubbed)
{
    return strchr(key, '\n') || (scrubbed && strstr(key, REPLACEMENT));
}

/* 0, KEY_UNTOLD when the object is to be skipped (its key cannot be
 * told), or another negative errno. */
static int parse_object(const xmlNode *c, int encoded, int scrubbed,
                        struct store_object *o)
{
    const xmlNode *k = child(c, "Key");
    const xmlNode *lm = child(c, "LastModified");
    const xmlNode *sz = child(c, "Size");
    if (!k || !lm || !sz)
        return -EINVAL;
    int rc = 0;
    char *lms = text_of(lm), *szs = text_of(sz);
    o->key = text_of(k);
    if (!lms || !szs || !o->key)
        rc = -ENOMEM;
    else if (encoded && scrubbed && strstr(o->key, REPLACEMENT))
        rc = KEY_UNTOLD; /* a raw control byte in an encoded key: not S3's encoding */
    else if (encoded)
        rc = url_decode(o->key);
    else if (key_may_be_altered(o->key, scrubbed))
        rc = KEY_UNTOLD;
    if (rc == 0 && (o->key[0] == '\0' || iso8601_parse_ms(lms, &o->last_modified_ms) < 0 ||
                    parse_u64(szs, &o->size) < 0))
        rc = -EINVAL;
    const xmlNode *et = child(c, "ETag");
    if (rc == 0 && et) {
        char *ets = text_of(et);
        if (!ets)
            rc = -ENOMEM;
        else
            s3_xml_etag_copy(o->etag, sizeof o->etag, ets);
        free(ets);
    }
    free(lms);
    free(szs);
    if (rc != 0) {
        free(o->key);
        o->key = NULL;
    }
    return rc;
}

/* Bytes that XML 1.0 allows nowhere: C0 controls but tab, LF and CR. */
static int xml_forbidden(unsigned char c)
{
    return c < 0x20 && c != '\t' && c != '\n' && c != '\r';
}

/* A copy of body with each byte XML cannot carry replaced with U+FFFD, or
 * NULL (and *copy NULL) when it has none. A server that ignores
 * encoding-type=url puts a key's control characters into its XML as they
 * are, and the page would be unreadable for every job: so only that
 * object's key is lost (and skipped), not the page. */
static int scrub(const char *body, size_t len, char **copy, size_t *copy_len)
{
    *copy = NULL;
    size_t bad = 0;
    for (size_t i = 0; i < len; i++)
        bad += xml_forbidden((unsigned char)body[i]);
    if (!bad)
        return 0;
    if (len > INT_MAX - 2 * bad)
        return -EINVAL;
    char *out = malloc(len + 2 * bad);
    if (!out)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (xml_forbidden((unsigned char)body[i])) {
            memcpy(out + n, REPLACEMENT, 3);
            n += 3;
        } else {
            out[n++] = body[i];
        }
    }
    *copy = out;
    *copy_len = n;
    return 0;
}

int s3_xml_parse_list(const char *body, size_t len, struct store_page *out)
{
    memset(out, 0, sizeof *out);
    char *clean = NULL;
    size_t clean_len = 0;
    int rc = scrub(body, len, &clean, &clean_len);
    if (rc < 0)
        return rc;
    int scrubbed = clean != NULL;
    xmlDocPtr doc = scrubbed ? parse_doc(clean, clean_len) : parse_doc(body, len);
    free(clean);
    if (!doc)
        return -EINVAL;
    const xmlNode *root = xmlDocGetRootElement(doc);
    if (!root || !name_is(root, "ListBucketResult")) {
        rc = -EINVAL;
        goto done;
    }
    /* Keys are URL-encoded when the server says so (S3 encodes Key,
     * Prefix, Delimiter and StartAfter, never the continuation token). */
    int encoded = 0;
    const xmlNode *enc = child(root, "EncodingType");
    if (enc) {
        char *t = text_of(enc);
        if (!t) {
            rc = -ENOMEM;
            goto done;
        }
        encoded = strcasecmp(t, "url") == 0;
        free(t);
    }
    size_t n = 0;
    for (const xmlNode *c = root->children; c; c = c->next)
        if (name_is(c, "Contents"))
            n++;
    if (n) {
        out->objects = calloc(n, sizeof *out->objects);
        if (!out->objects) {
            rc = -ENOMEM;
            goto done;
        }
    }
    for (const xmlNode *c = root->children; c && rc == 0; c = c->next) {
        if (!name_is(c, "Contents"))
            continue;
        rc = parse_object(c, encoded, scrubbed, &out->objects[out->count]);
        if (rc == 0)
            out->count++;
        else if (rc == KEY_UNTOLD) {
            out->skipped++;
            rc = 0;
        }
    }
    if (rc < 0)
        goto done;

    const xmlNode *tr = child(root, "IsTruncated");
    int truncated = 0;
    if (tr) {
        char *t = text_of(tr);
        if (!t) {
            rc = -ENOMEM;
            goto done;
        }
        if (strcmp(t, "true") == 0)
            truncated = 1;
        else if (strcmp(t, "false") != 0)
            rc = -EINVAL;
        free(t);
        if (rc < 0)
            goto done;
    }
    if (truncated) {
        const xmlNode *nt = child(root, "NextContinuationToken");
        if (!nt) {
            rc = -EINVAL; /* truncated without a way on: would loop */
            goto done;
        }
        out->next_token = text_of(nt);
        if (!out->next_token)
            rc = -ENOMEM;
        else if (out->next_token[0] == '\0')
            rc = -EINVAL;
    }
done:
    xmlFreeDoc(doc);
    if (rc < 0)
        store_page_free(out);
    return rc;
}
