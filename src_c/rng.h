/* Counter-based random numbers: every draw is a pure function of
 * (seed, epoch, sample index, slot), so an augmentation does not depend on
 * which thread ran it, how many workers there are, or where a resumed epoch
 * started. A stream is cheap to create (no state beyond two words). */
#ifndef FL_RNG_H
#define FL_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t key;
} fl_rng;

static inline uint64_t fl_mix64(uint64_t z)
{
    /* splitmix64's finaliser: a bijection with full avalanche */
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline fl_rng fl_rng_for(uint64_t seed, uint64_t epoch, uint64_t index)
{
    fl_rng r;
    r.key = fl_mix64(fl_mix64(fl_mix64(seed) ^ epoch) ^ index);
    return r;
}

/* Uniform double in [0, 1) for draw number `slot` of this stream. */
static inline double fl_rng_uniform(const fl_rng *r, uint64_t slot)
{
    return (double)(fl_mix64(r->key ^ fl_mix64(slot)) >> 11) * 0x1.0p-53;
}

/* Draw slots are grouped so each decision owns a fixed range: a transform
 * that draws a variable number of values (RandomResizedCrop's retries) never
 * shifts the draws of the transforms after it. */
enum {
    FL_SLOT_GEOMETRY = 0,      /* 64 slots per geometric op, up to 8 ops */
    FL_SLOT_HFLIP = 512,
    FL_SLOT_VFLIP = 513,
    FL_SLOT_ROT90 = 514,
    FL_SLOT_JITTER = 520       /* brightness, contrast, saturation */
};

#endif
