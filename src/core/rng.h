/* rng: every random number generator of sinkscope. First the counter-based one (Philox),
 * reproducible across runs, thread counts and chunking; then, at the end, the older generators
 * (splitmix64, xoshiro256**, xorshift64*) kept bit for bit so earlier outputs stay reproducible.
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

/* ---- The other generators of sinkscope, one named function each, bits frozen ----------------
 * Each is used where reproducing earlier outputs matters (weights, data sets, random key draws,
 * bootstrap intervals), so none may change a bit; tests/test_rng.c pins a golden sequence of
 * each, captured from the code before it moved here. New code should prefer Philox above. */

/* Golden-ratio increment of splitmix64 (2^64 / phi, odd). */
#define RNG_SPLITMIX64_GAMMA 0x9e3779b97f4a7c15ull

/* The splitmix64 output function (Steele, Lea, Flood 2014; Stafford's "Mix13" constants):
 * z ^= z >> 30; z *= 0xbf58476d1ce4e5b9; z ^= z >> 27; z *= 0x94d049bb133111eb; z ^= z >> 31.
 * A bijection of u64 with 0 -> 0. */
uint64_t rng_splitmix64_mix(uint64_t z);

/* rng_splitmix64_mix(z + RNG_SPLITMIX64_GAMMA): one splitmix64 step taken from state z, used as a
 * stateless hash (sink.c's random key draws: mix(key ^ mix(counter))). */
uint64_t rng_splitmix64_hash(uint64_t z);

/* splitmix64 as a sequence: state += GAMMA, output rng_splitmix64_mix(state). */
typedef struct {
    uint64_t s;
} rng_splitmix64;

uint64_t rng_splitmix64_next(rng_splitmix64 *r);

/* The ShapeWorld seeding of a splitmix64 sequence from (seed, index, stream):
 * s = mix(seed + GAMMA) ^ mix(index * 0xd1b54a32d192ed03 + stream). */
rng_splitmix64 rng_splitmix64_keyed(uint64_t seed, uint64_t index, uint64_t stream);

/* An int in [0, n) from the high 32 bits of one word: ((next >> 32) * n) >> 32 (multiply-shift,
 * no rejection, so the bias is below n / 2^32; n in [1, 2^31)). ShapeWorld's draws. */
int rng_splitmix64_below32(rng_splitmix64 *r, int n);

/* xoshiro256** (Blackman, Vigna 2018), state seeded with four successive splitmix64 words of
 * seed (state s = seed, then rng_splitmix64_next). Used by the statistics' bootstrap. */
typedef struct {
    uint64_t s[4];
} rng_xoshiro256ss;

void rng_xoshiro256ss_seed(rng_xoshiro256ss *r, uint64_t seed);
uint64_t rng_xoshiro256ss_next(rng_xoshiro256ss *r);
/* Uniform in [0, n) without modulo bias: words below 2^64 mod n are rejected; n >= 1. */
uint64_t rng_xoshiro256ss_below(rng_xoshiro256ss *r, uint64_t n);

/* xorshift64* (Vigna 2016; shifts 12, 25, 27, multiplier 2685821657736338717) returning a double
 * in [0, 1) from the top 53 bits of the product; *s is the state (never 0). Random weight init
 * (sd3_init.c) seeds it with rng_xorshift64s_seed. */
double rng_xorshift64s_uniform01(uint64_t *s);
/* seed * GAMMA + 1: the xorshift64* state of a user seed (odd, so never 0). */
uint64_t rng_xorshift64s_seed(uint64_t seed);

#endif
