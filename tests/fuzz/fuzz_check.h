/* Shared by the libFuzzer targets: a property that does not hold is a
 * crash (abort), so libFuzzer saves the input that broke it. */
#ifndef BOOKMARKFS_TESTS_FUZZ_CHECK_H
#define BOOKMARKFS_TESTS_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__,        \
                    __LINE__, #cond);                                         \
            abort();                                                          \
        }                                                                     \
    } while (0)

#endif
