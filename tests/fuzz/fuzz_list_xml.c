/* s3_xml_parse_list (s3/xml.c) on arbitrary bytes: never a crash, and the
 * result honours the header's contract. On success every object has a
 * non-empty key and a terminated ETag, and a next token is either absent
 * or non-empty; on failure the page is left empty. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "s3/xml.h"
#include "store/store.h"
#include "tests/fuzz/fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct store_page page;
    memset(&page, 0xa5, sizeof page); /* the parser must reset it */
    int rc = s3_xml_parse_list((const char *)data, size, &page);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
    if (rc < 0) {
        FUZZ_CHECK(page.objects == NULL);
        FUZZ_CHECK(page.count == 0);
        FUZZ_CHECK(page.next_token == NULL);
        return 0;
    }
    FUZZ_CHECK(page.count == 0 || page.objects != NULL);
    for (size_t i = 0; i < page.count; i++) {
        const struct store_object *o = &page.objects[i];
        FUZZ_CHECK(o->key != NULL);
        FUZZ_CHECK(o->key[0] != '\0');
        FUZZ_CHECK(memchr(o->etag, '\0', sizeof o->etag) != NULL);
    }
    FUZZ_CHECK(page.next_token == NULL || page.next_token[0] != '\0');
    store_page_free(&page);
    FUZZ_CHECK(page.objects == NULL && page.count == 0 &&
               page.next_token == NULL);
    return 0;
}
