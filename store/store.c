#include "store/store.h"

#include <stdlib.h>

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
    page->next_token = NULL;
}

int store_list_all(struct store *st, const char *bucket, const char *prefix,
                   int (*cb)(const struct store_object *obj, void *arg),
                   void *arg)
{
    char *token = NULL;
    int rc = 0;
    do {
        struct store_page page = {0};
        rc = st->ops->list_page(st, bucket, prefix, token, &page);
        free(token);
        token = NULL;
        if (rc < 0)
            break;
        for (size_t i = 0; i < page.count && rc == 0; i++)
            rc = cb(&page.objects[i], arg);
        token = page.next_token;
        page.next_token = NULL;
        store_page_free(&page);
    } while (rc == 0 && token);
    free(token);
    return rc;
}
