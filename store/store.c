#include "store/store.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"

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

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int store_list_all(struct store *st, const char *bucket, const char *prefix,
                   int (*cb)(const struct store_object *obj, void *arg),
                   void *arg)
{
    return store_list_from(st, bucket, prefix, NULL, cb, arg);
}

int store_list_from(struct store *st, const char *bucket, const char *prefix,
                    const char *start_after,
                    int (*cb)(const struct store_object *obj, void *arg),
                    void *arg)
{
    if (start_after && !*start_after)
        start_after = NULL;
    char *token = NULL, *last_key = NULL;
    int64_t deadline = st->list_bound_ms > 0 ? mono_ms() + st->list_bound_ms : 0;
    size_t pages = 0;
    int rc = 0;
    do {
        struct store_page page = {0};
        rc = start_after ? st->ops->list_from(st, bucket, prefix, start_after, token, &page)
                         : st->ops->list_page(st, bucket, prefix, token, &page);
        pages++;
        if (rc == 0 && token && page.next_token && strcmp(token, page.next_token) == 0) {
            log_error("listing %s/%s: the store handed out the continuation token it "
                      "was asked with (page %zu); stopping", bucket, prefix ? prefix : "",
                      pages);
            rc = -EIO;
        } else if (rc == 0 && last_key && page.count &&
                   strcmp(page.objects[0].key, last_key) <= 0) {
            log_error("listing %s/%s: page %zu starts at or before the end of the "
                      "previous page; stopping", bucket, prefix ? prefix : "", pages);
            rc = -EIO;
        } else if (rc == 0 && page.next_token && deadline && mono_ms() > deadline) {
            log_error("listing %s/%s: not finished after %zu pages and %ld ms; stopping",
                      bucket, prefix ? prefix : "", pages, st->list_bound_ms);
            rc = -EIO;
        }
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
    free(token);
    free(last_key);
    return rc;
}
