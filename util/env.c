#include "util/env.h"

#include <stdlib.h>

const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}
