#include "fs/scratch.h"

#include <errno.h>
#include <stdlib.h>

int scratch_new(struct scratch **out)
{
    struct scratch *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->refs = 1;
    clock_gettime(CLOCK_REALTIME, &s->mtime);
    *out = s;
    return 0;
}

void scratch_unref(struct scratch *s)
{
    if (s && --s->refs == 0) {
        free(s->data);
        free(s);
    }
}

void scratch_unref_cb(void *s) { scratch_unref(s); }
