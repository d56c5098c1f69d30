/* rng: counter-based random numbers, reproducible across runs, thread counts and chunking.
 *
 * Algorithm: Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as
 * 1, 2, 3", SC 2011; checked against Random123's known-answer vectors). One call maps a 128-bit
 * counter and a 64-bit key to 128 random bits with no state in between, so any element can be
 * computed on its own.
 *
 *   key     = (seed & 0xffffffff, seed >> 32)
 *   counter = (block & 0xffffffff, block >> 32, stream & 0xffffffff, stream >> 32)
 *   output  = 4 x u32 -> two u64 words  w0 = out0 | out1 << 32,  w1 = out2 | out3 << 32
 *
 * u64 word k of (seed, stream) is word k & 1 of block k / 2 (rng_uniform_u64; rng_t walks the
 * same words in order). Normal element i of (seed, stream) uses block i / 2 and Box-Muller in
 * double: u1 = ((w0 >> 11) + 1) * 2^-53 in (0, 1], u2 = (w1 >> 11) * 2^-53 in [0, 1),
 * r = sqrt(-2 ln u1), element 2b = (float)(r cos 2 pi u2), element 2b+1 = (float)(r sin 2 pi u2).
 * So element i depends only on (seed, stream, i). Normals and u64 words of one (seed, stream)
 * come from the same blocks: give each purpose its own stream.
 */
#ifndef SS_RNG_H
#define SS_RNG_H

#include <stddef.h>
#include <stdint.h>

/* The raw bijection (exposed for the known-answer test). */
void rng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Word `counter` of the (seed, stream) sequence. */
uint64_t rng_uniform_u64(uint64_t seed, uint64_t stream, uint64_t counter);

/* dst[j] = N(0,1) element (first + j) of (seed, stream). OpenMP-parallel for large n; the values
 * do not depend on the thread count. rng_normal_fill is the first = 0 case. */
void rng_normal_fill_at(float *dst, size_t n, uint64_t seed, uint64_t stream, uint64_t first);
void rng_normal_fill(float *dst, size_t n, uint64_t seed, uint64_t stream);

/* Small sequential generator (shuffles, choices): walks the u64 words of (seed, stream). */
typedef struct {
    uint64_t seed, stream, counter;
} rng_t;

void rng_init(rng_t *r, uint64_t seed, uint64_t stream);
uint64_t rng_next_u64(rng_t *r);
/* Uniform double in [0, 1) with 53 random bits. */
double rng_uniform(rng_t *r);
/* Uniform integer in [0, n) without modulo bias (rejection); n == 0 returns 0. */
uint64_t rng_below(rng_t *r, uint64_t n);

#endif
