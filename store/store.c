#include "store/store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/clock.h"

void store_page_free(struct store_page *page)
{
    if (!page)
        return;
    for (size_t i = 0; i < page->count; i++)
        free(page->objects[i].key);
    free(page->objects);
    free(page->next_token);
    page->objects = NULL;
    page->count = 0;
    page->skipped = 0;
    page->next_token = NULL;
}

int store_fail(struct store_error *e, int err, const char *fmt, ...)
{
    if (!e)
        return err;
    e->err = err;
    e->code[0] = e->request_id[0] = '\0';
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return err;
}

void store_error_text(const struct store_error *e, char *buf, size_t len)
{
    if (!len)
        return;
    const char *msg = e && e->message[0] ? e->message
                                         : strerror(e && e->err ? -e->err : EIO);
    if (e && e->code[0])
        snprintf(buf, len, "%s: %s (RequestId %s)", e->code, msg,
                 e->request_id[0] ? e->request_id : "-");
    else
        snprintf(buf, len, "%s", msg);
}

/* The error every wrapper starts from: none yet. */
static struct store_error *error_init(struct store_error *e, struct store_error *local)
{
    if (!e)
        e = local;
    memset(e, 0, sizeof *e);
    return e;
}

/* A failure that the store left undescribed still has a message. */
static int error_done(struct store_error *e, int rc)
{
    if (rc < 0) {
        e->err = rc;
        if (!e->message[0])
            snprintf(e->message, sizeof e->message, "%s", strerror(-rc));
    } else {
        memset(e, 0, sizeof *e);
    }
    return rc;
}

int store_get(struct store *st, const char *bucket, const char *key, char **data,
              size_t *len, struct store_error *err)
{
    struct store_error local;
    err = error_init(err, &local);
    return error_done(err, st->ops->get(st, bucket, key, data, len, err));
}

int store_get_info(struct store *st, const char *bucket, const char *key, char **data,
                   size_t *len, struct store_get_info *info, struct store_error *err)
{
    struct store_error local;
    err = error_init(err, &local);
    return error_done(err, st->ops->get_info(st, bucket, key, data, len, info, err));
}

int store_put(struct store *st, const char *bucket, const char *key, const void *body,
              size_t len, struct store_put_result *res, struct store_error *err)
{
    struct store_error local;
    struct store_put_result dummy;
    err = error_init(err, &local);
    res = res ? res : &dummy;
    memset(res, 0, sizeof *res); /* what a store leaves unset reads as nothing */
    return error_done(err, st->ops->put(st, bucket, key, body, len, res, err));
}

int store_put_if(struct store *st, const char *bucket, const char *key,
                 const void *body, size_t len, const char *if_match,
                 struct store_put_result *res, struct store_error *err)
{
    struct store_error local;
    struct store_put_result dummy;
    err = error_init(err, &local);
    res = res ? res : &dummy;
    memset(res, 0, sizeof *res);
    return error_done(err, st->ops->put_if(st, bucket, key, body, len, if_match,
                                           res, err));
}

int store_del(struct store *st, const char *bucket, const char *key,
              struct store_error *err)
{
    struct store_error local;
    err = error_init(err, &local);
    return error_done(err, st->ops->del(st, bucket, key, err));
}

int store_check_bucket(struct store *st, const char *bucket, char *msg, size_t msglen)
{
    return st->ops->check_bucket(st, bucket, msg, msglen);
}

void store_locate(struct store *st, const char *bucket, const char *key, char *buf,
                  size_t len)
{
    if (!len)
        return;
    buf[0] = '\0';
    if (st && st->ops->locate)
        st->ops->locate(st, bucket, key ? key : "", buf, len);
    else
        snprintf(buf, len, "%s/%s", bucket, key ? key : "");
}

int store_list_all(struct store *st, const char *bucket, const char *prefix,
                   int (*cb)(const struct store_object *obj, void *arg),
                   void *arg, struct store_error *err)
{
    return store_list_from(st, bucket, prefix, NULL, cb, arg, err);
}

int store_list_from(struct store *st, const char *bucket, const char *prefix,
                    const char *start_after,
                    int (*cb)(const struct store_object *obj, void *arg),
                    void *arg, struct store_error *err)
{
    struct store_error local;
    err = error_init(err, &local);
    char where[STORE_LOCATION_MAX];
    store_locate(st, bucket, prefix, where, sizeof where);
    if (start_after && !*start_after)
        start_after = NULL;
    char *token = NULL, *last_key = NULL;
    int64_t deadline = st->list_bound_ms > 0 ? clock_mono_ms() + st->list_bound_ms : 0;
    size_t pages = 0;
    int rc = 0;
    do {
        struct store_page page = {0};
        rc = start_after
                 ? st->ops->list_from(st, bucket, prefix, start_after, token, &page, err)
                 : st->ops->list_page(st, bucket, prefix, token, &page, err);
        pages++;
        if (rc < 0)
            error_done(err, rc);
        else if (token && page.next_token && strcmp(token, page.next_token) == 0)
            rc = store_fail(err, -EIO, "listing %s: the store handed out the "
                            "continuation token it was asked with (page %zu); stopping",
                            where, pages);
        else if (last_key && page.count && strcmp(page.objects[0].key, last_key) <= 0)
            rc = store_fail(err, -EIO, "listing %s: page %zu starts at or before the end "
                            "of the previous page; stopping", where, pages);
        else if (page.next_token && deadline && clock_mono_ms() > deadline)
            rc = store_fail(err, -EIO, "listing %s: not finished after %zu pages and %ld "
                            "ms; stopping", where, pages, st->list_bound_ms);
        free(token);
        token = NULL;
        if (rc < 0) {
            store_page_free(&page);
            break;
        }
        for (size_t i = 0; i < page.count && rc == 0; i++)
            rc = cb(&page.objects[i], arg);
        if (page.count) {
            free(last_key);
            last_key = page.objects[page.count - 1].key;
            page.objects[page.count - 1].key = NULL;
        }
        token = page.next_token;
        page.next_token = NULL;
        store_page_free(&page);
    } while (rc == 0 && token);
    if (rc < 0 && err->err == 0)
        error_done(err, rc); /* cb's */
    free(token);
    free(last_key);
    return rc;
}
