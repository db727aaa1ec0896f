/* PNG row filters: see png_unfilter.h. */
#include <stdlib.h>
#include <string.h>
#include "fl_port.h"
#include "png_unfilter.h"

#if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
#include <emmintrin.h>
#define FL_UNFILTER_SSE2 1
#else
#define FL_UNFILTER_SSE2 0
#endif
#if FL_NEON
#include <arm_neon.h>
#endif

/* The Paeth predictor: of left, up and upper-left, the one nearest to
 * left + up - upper-left, ties in that order. */
static FL_INLINE int paeth(int a, int b, int c)
{
    int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
    return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

int fl_png_unfilter_portable(int type, uint8_t *row, const uint8_t *up, size_t n, size_t bpp)
{
    size_t i = 0;
    switch (type) {
    case 0:
        return 0;
    case 1:
        for (i = bpp; i < n; i++)
            row[i] = (uint8_t)(row[i] + row[i - bpp]);
        return 0;
    case 2:   /* byte-parallel: compilers vectorise it */
        for (; i < n; i++)
            row[i] = (uint8_t)(row[i] + up[i]);
        return 0;
    case 3:
        for (; i < bpp && i < n; i++)
            row[i] = (uint8_t)(row[i] + (up[i] >> 1));
        for (; i < n; i++)
            row[i] = (uint8_t)(row[i] + ((row[i - bpp] + up[i]) >> 1));
        return 0;
    case 4:
        for (; i < bpp && i < n; i++)
            row[i] = (uint8_t)(row[i] + up[i]);
        for (; i < n; i++)
            row[i] = (uint8_t)(row[i] + paeth(row[i - bpp], up[i], up[i - bpp]));
        return 0;
    }
    return -1;
}

/* A pixel is held with its bytes in 16-bit lanes (px), built from the 4
 * bytes of a uint32_t (px_of) and turned back into them (bytes_of); the
 * lanes past bpp hold whatever followed the pixel and are never stored. */
#if FL_UNFILTER_SSE2
#define FL_UNFILTER_VECTOR "sse2"
typedef __m128i px;

static FL_INLINE px px_of(uint32_t v) { return _mm_unpacklo_epi8(_mm_cvtsi32_si128((int)v), _mm_setzero_si128()); }
static FL_INLINE uint32_t bytes_of(px a) { return (uint32_t)_mm_cvtsi128_si32(_mm_packus_epi16(a, a)); }
static FL_INLINE px add(px a, px b) { return _mm_add_epi16(a, b); }
static FL_INLINE px sub(px a, px b) { return _mm_sub_epi16(a, b); }
static FL_INLINE px abs16(px v) { return _mm_max_epi16(v, _mm_sub_epi16(_mm_setzero_si128(), v)); }
static FL_INLINE px min16(px a, px b) { return _mm_min_epi16(a, b); }
static FL_INLINE px half(px v) { return _mm_srli_epi16(v, 1); }
static FL_INLINE px low8(px v) { return _mm_and_si128(v, _mm_set1_epi16(0xFF)); }
static FL_INLINE px pick_if_eq(px x, px y, px yes, px no)   /* x == y ? yes : no, per lane */
{
    px m = _mm_cmpeq_epi16(x, y);
    return _mm_or_si128(_mm_and_si128(m, yes), _mm_andnot_si128(m, no));
}
#elif FL_NEON
#define FL_UNFILTER_VECTOR "neon"
typedef int16x8_t px;

static FL_INLINE px px_of(uint32_t v) { return vreinterpretq_s16_u16(vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(v)))); }
static FL_INLINE uint32_t bytes_of(px a) { return vget_lane_u32(vreinterpret_u32_u8(vqmovun_s16(a)), 0); }
static FL_INLINE px add(px a, px b) { return vaddq_s16(a, b); }
static FL_INLINE px sub(px a, px b) { return vsubq_s16(a, b); }
static FL_INLINE px abs16(px v) { return vabsq_s16(v); }
static FL_INLINE px min16(px a, px b) { return vminq_s16(a, b); }
static FL_INLINE px half(px v) { return vshrq_n_s16(v, 1); }
static FL_INLINE px low8(px v) { return vandq_s16(v, vdupq_n_s16(0xFF)); }
static FL_INLINE px pick_if_eq(px x, px y, px yes, px no) { return vbslq_s16(vceqq_s16(x, y), yes, no); }
#endif

#ifdef FL_UNFILTER_VECTOR
static FL_INLINE px load4(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return px_of(v);
}

/* Pixel x unfiltered from the pixels left (a), above (b) and above-left (c)
 * of it, masked back to 8 bits a lane so that the byte sums wrap as the
 * specification says. */
static FL_INLINE px unfilter_px(const int type, px x, px a, px b, px c)
{
    px pred;
    if (type == 1) {
        pred = a;
    } else if (type == 3) {
        pred = half(add(a, b));
    } else {
        px pa = abs16(sub(b, c)), pb = abs16(sub(a, c)), pc = abs16(add(sub(b, c), sub(a, c)));
        px least = min16(min16(pa, pb), pc);
        pred = pick_if_eq(pa, least, a, pick_if_eq(pb, least, b, c));
    }
    return low8(add(x, pred));
}

/* Sub, Average or Paeth for 3- or 4-byte pixels. A block of four pixels is
 * read before any of it is written and then stored at once, the dependency
 * from pixel to pixel staying in registers (a store and reload per pixel
 * stalled on store forwarding: 10 ns a pixel). Inlined with constant
 * arguments: a memcpy of a variable length is a library call. */
static FL_INLINE void unfilter_vector(const int type, uint8_t *row, const uint8_t *up, size_t n, const size_t bpp)
{
    px a = px_of(0), c = px_of(0);
    size_t i = 0;
    for (; i + 16 <= n; i += 4 * bpp) {   /* the last 4-byte load ends 3 * bpp + 4 <= 16 bytes in */
        uint64_t p[4];
        for (int k = 0; k < 4; k++) {
            px b = load4(up + i + k * bpp);
            a = unfilter_px(type, load4(row + i + k * bpp), a, b, c);
            c = b;
            p[k] = bytes_of(a);
        }
        if (bpp == 4) {
            uint64_t out[2] = {p[0] | p[1] << 32, p[2] | p[3] << 32};
            memcpy(row + i, out, 16);
        } else {   /* 12 bytes: the next 4 are the next pixel's, still filtered */
            const uint64_t m = 0xFFFFFF;
            uint64_t lo = (p[0] & m) | (p[1] & m) << 24 | p[2] << 48;
            uint32_t hi = (uint32_t)((p[2] & m) >> 16 | (p[3] & m) << 8);
            memcpy(row + i, &lo, 8);
            memcpy(row + i + 8, &hi, 4);
        }
    }
    for (; i < n; i += bpp) {
        uint32_t x = 0, above = 0;
        memcpy(&x, row + i, bpp);
        memcpy(&above, up + i, bpp);
        px b = px_of(above);
        a = unfilter_px(type, px_of(x), a, b, c);
        c = b;
        x = bytes_of(a);
        memcpy(row + i, &x, bpp);
    }
}
#endif

int fl_png_unfilter(int type, uint8_t *row, const uint8_t *up, size_t n, size_t bpp)
{
#ifdef FL_UNFILTER_VECTOR
    if ((type == 1 || type == 3 || type == 4) && (bpp == 3 || bpp == 4)) {
        if (type == 1)
            bpp == 3 ? unfilter_vector(1, row, up, n, 3) : unfilter_vector(1, row, up, n, 4);
        else if (type == 3)
            bpp == 3 ? unfilter_vector(3, row, up, n, 3) : unfilter_vector(3, row, up, n, 4);
        else
            bpp == 3 ? unfilter_vector(4, row, up, n, 3) : unfilter_vector(4, row, up, n, 4);
        return 0;
    }
#endif
    return fl_png_unfilter_portable(type, row, up, n, bpp);
}

const char *fl_png_unfilter_path(void)
{
#ifdef FL_UNFILTER_VECTOR
    return FL_UNFILTER_VECTOR;
#else
    return "portable";
#endif
}
