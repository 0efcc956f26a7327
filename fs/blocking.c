#include "fs/blocking.h"

#include <stdatomic.h>
#include <stddef.h>

static void (*_Atomic blocking_hook)(void);

void blocking_set_hook(void (*hook)(void))
{
    atomic_store_explicit(&blocking_hook, hook, memory_order_release);
}

void blocking_may_block(void)
{
    void (*hook)(void) = atomic_load_explicit(&blocking_hook, memory_order_acquire);
    if (hook)
        hook();
}
