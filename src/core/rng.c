#include "core/rng.h"

#include <math.h>

/* Philox4x32 constants: round multipliers and the Weyl key increments. */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void rng_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0, p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0, c1 = (uint32_t)p1, c2 = n2, c3 = (uint32_t)p0;
        k0 += PHILOX_W0, k1 += PHILOX_W1; /* the bump after the last round is unused */
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

static void block_words(uint64_t seed, uint64_t stream, uint64_t block, uint64_t w[2]) {
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)};
    uint32_t o[4];
    rng_philox4x32_10(ctr, key, o);
    w[0] = o[0] | (uint64_t)o[1] << 32;
    w[1] = o[2] | (uint64_t)o[3] << 32;
}

uint64_t rng_uniform_u64(uint64_t seed, uint64_t stream, uint64_t counter) {
    uint64_t w[2];
    block_words(seed, stream, counter >> 1, w);
    return w[counter & 1];
}

#define TWO_POW_M53 (1.0 / 9007199254740992.0)
#define TWO_PI 6.283185307179586476925286766559

void rng_normal_fill_at(float *dst, size_t n, uint64_t seed, uint64_t stream, uint64_t first) {
    if (n == 0) return;
    /* Blocks b0..b1 cover elements first..first+n-1; each block yields elements 2b and 2b+1. */
    uint64_t b0 = first >> 1, b1 = (first + n - 1) >> 1;
#pragma omp parallel for schedule(static) if (b1 - b0 > 8192)
    for (uint64_t b = b0; b <= b1; b++) {
        uint64_t w[2];
        block_words(seed, stream, b, w);
        double u1 = (double)((w[0] >> 11) + 1) * TWO_POW_M53; /* (0, 1]: log never sees 0 */
        double u2 = (double)(w[1] >> 11) * TWO_POW_M53;
        double r = sqrt(-2.0 * log(u1)), th = TWO_PI * u2;
        uint64_t e = 2 * b;
        if (e >= first) dst[e - first] = (float)(r * cos(th));
        if (e + 1 - first < n) dst[e + 1 - first] = (float)(r * sin(th));
    }
}

void rng_normal_fill(float *dst, size_t n, uint64_t seed, uint64_t stream) {
    rng_normal_fill_at(dst, n, seed, stream, 0);
}

void rng_init(rng_t *r, uint64_t seed, uint64_t stream) {
    r->seed = seed;
    r->stream = stream;
    r->counter = 0;
}

uint64_t rng_next_u64(rng_t *r) { return rng_uniform_u64(r->seed, r->stream, r->counter++); }

double rng_uniform(rng_t *r) { return (double)(rng_next_u64(r) >> 11) * TWO_POW_M53; }

uint64_t rng_below(rng_t *r, uint64_t n) {
    if (n == 0) return 0;
    /* Reject the lowest 2^64 mod n values so every residue has the same number of preimages. */
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t x = rng_next_u64(r);
        if (x >= threshold) return x % n;
    }
}

/* ---- splitmix64, xoshiro256**, xorshift64* (bits frozen: see rng.h) ---- */

uint64_t rng_splitmix64_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t rng_splitmix64_hash(uint64_t z) { return rng_splitmix64_mix(z + RNG_SPLITMIX64_GAMMA); }

uint64_t rng_splitmix64_next(rng_splitmix64 *r) {
    r->s += RNG_SPLITMIX64_GAMMA;
    return rng_splitmix64_mix(r->s);
}

rng_splitmix64 rng_splitmix64_keyed(uint64_t seed, uint64_t index, uint64_t stream) {
    rng_splitmix64 r = {rng_splitmix64_mix(seed + RNG_SPLITMIX64_GAMMA) ^
                        rng_splitmix64_mix(index * 0xd1b54a32d192ed03ull + stream)};
    return r;
}

int rng_splitmix64_below32(rng_splitmix64 *r, int n) {
    return (int)(((rng_splitmix64_next(r) >> 32) * (uint64_t)n) >> 32);
}

static uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void rng_xoshiro256ss_seed(rng_xoshiro256ss *r, uint64_t seed) {
    rng_splitmix64 sm = {seed};
    for (int i = 0; i < 4; i++) r->s[i] = rng_splitmix64_next(&sm);
}

uint64_t rng_xoshiro256ss_next(rng_xoshiro256ss *r) {
    uint64_t *s = r->s;
    const uint64_t out = rotl64(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return out;
}

uint64_t rng_xoshiro256ss_below(rng_xoshiro256ss *r, uint64_t n) {
    const uint64_t threshold = (0 - n) % n;
    for (;;) {
        const uint64_t v = rng_xoshiro256ss_next(r);
        if (v >= threshold) return v % n;
    }
}

double rng_xorshift64s_uniform01(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (double)((*s * 2685821657736338717ull) >> 11) * 0x1.0p-53;
}

uint64_t rng_xorshift64s_seed(uint64_t seed) { return seed * RNG_SPLITMIX64_GAMMA + 1; }
