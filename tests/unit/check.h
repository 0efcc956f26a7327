/* The checks of the C unit tests: CHECK counts a failure and goes on,
 * REQUIRE stops the test when it cannot meaningfully go on. A test's main
 * returns `failures != 0`. */
#ifndef BOOKMARKFS_TESTS_UNIT_CHECK_H
#define BOOKMARKFS_TESTS_UNIT_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int failures;

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            failures++;                                                      \
        }                                                                    \
    } while (0)

#define REQUIRE(cond)                                                        \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: required: %s\n", __FILE__, __LINE__,     \
                    #cond);                                                  \
            exit(1);                                                         \
        }                                                                    \
    } while (0)

#endif
