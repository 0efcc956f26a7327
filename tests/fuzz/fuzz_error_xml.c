/* s3_xml_parse_error (s3/xml.c) on arbitrary bytes: never a crash, only 0
 * or -EINVAL, every field NUL-terminated inside its buffer, and all fields
 * empty when the body is not an <Error> document. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "s3/xml.h"
#include "tests/fuzz/fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct s3_xml_error doc;
    memset(&doc, 0xa5, sizeof doc); /* the parser must reset it */
    int rc = s3_xml_parse_error((const char *)data, size, &doc);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL);
    FUZZ_CHECK(memchr(doc.code, '\0', sizeof doc.code) != NULL);
    FUZZ_CHECK(memchr(doc.message, '\0', sizeof doc.message) != NULL);
    FUZZ_CHECK(memchr(doc.request_id, '\0', sizeof doc.request_id) != NULL);
    if (rc < 0)
        FUZZ_CHECK(doc.code[0] == '\0' && doc.message[0] == '\0' &&
                   doc.request_id[0] == '\0');
    return 0;
}
