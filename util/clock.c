#include "util/clock.h"

#include <pthread.h>
#include <stdlib.h>

#ifdef BOOKMARKFS_TEST_HOOKS
static pthread_once_t shift_once = PTHREAD_ONCE_INIT;
static int64_t shift_ms;

static void read_shift(void)
{
    const char *v = getenv("BOOKMARKFS_TEST_CLOCK_SHIFT");
    if (v && *v) {
        char *end = NULL;
        long long s = strtoll(v, &end, 10);
        if (end && !*end && s > -86400LL * 365 && s < 86400LL * 365)
            shift_ms = (int64_t)s * 1000;
    }
}
#endif

int64_t clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
#ifdef BOOKMARKFS_TEST_HOOKS
    pthread_once(&shift_once, read_shift);
    ms += shift_ms;
#endif
    return ms;
}

int64_t clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
