/* A growing array of owned strings, e.g. the names of one directory
 * listing. */
#ifndef BOOKMARKFS_UTIL_STRLIST_H
#define BOOKMARKFS_UTIL_STRLIST_H

#include <stddef.h>

struct strlist {
    char **v;
    size_t n, cap;
};

/* Appends a copy of s. 0 or -ENOMEM (the list is unchanged then). */
int strlist_add(struct strlist *l, const char *s);
/* Appends s itself, which the list then owns (freed on failure too). */
int strlist_take(struct strlist *l, char *s);
/* Frees every string; the list is empty and usable again. */
void strlist_clear(struct strlist *l);

#endif
