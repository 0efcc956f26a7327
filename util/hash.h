/* The one string hash of the hash tables (util/strmap and the entries of a
 * job's state): 64-bit FNV-1a. */
#ifndef BOOKMARKFS_UTIL_HASH_H
#define BOOKMARKFS_UTIL_HASH_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a over len bytes. */
uint64_t hash_fnv1a(const void *data, size_t len);

/* A final avalanche (MurmurHash3's fmix64), for tables that index buckets
 * by the low bits, which FNV-1a alone spreads poorly for keys that differ
 * only in their last bytes. */
uint64_t hash_mix(uint64_t h);

#endif
