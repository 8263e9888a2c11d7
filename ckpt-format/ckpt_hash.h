/*
 * XXH3, as libxxhash dispatches it at run time: AVX2 or AVX-512 where the
 * CPU has them, SSE2 otherwise. Every XXH3 call in the project includes
 * this rather than <xxhash.h>: the plain entry points are the SSE2
 * baseline, 5.6 GB/s on 4 KiB pages here against 12 GB/s dispatched, and
 * a migration hashes each page at both ends. Same hashes either way.
 */
#ifndef CKPT_HASH_H
#define CKPT_HASH_H

#if defined(__x86_64__)	/* Debian's amd64 libxxhash.so has the _dispatch symbols */
#include <xxh_x86dispatch.h>	/* maps XXH3_64bits & co to their _dispatch forms */
#else
#include <xxhash.h>
#endif

#endif
