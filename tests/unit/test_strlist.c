/* util/strlist: copies, takes ownership, grows past its first block, and
 * is usable again after a clear. */
#include <stdio.h>
#include <string.h>

#include "tests/unit/check.h"
#include "util/strlist.h"

int main(void)
{
    struct strlist l = {0};
    char name[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "k%d", i);
        REQUIRE((i % 2 ? strlist_add(&l, name) : strlist_take(&l, strdup(name))) == 0);
    }
    name[0] = 'X'; /* added names are copies */
    CHECK(l.n == 1000 && l.cap >= 1000);
    for (size_t i = 0; i < l.n; i++) {
        snprintf(name, sizeof name, "k%zu", i);
        CHECK(strcmp(l.v[i], name) == 0);
    }
    CHECK(strlist_take(&l, NULL) != 0 && l.n == 1000); /* a failed strdup */
    strlist_clear(&l);
    CHECK(l.n == 0 && l.v == NULL);
    REQUIRE(strlist_add(&l, "again") == 0);
    CHECK(l.n == 1 && strcmp(l.v[0], "again") == 0);
    strlist_clear(&l);
    return failures != 0;
}
