/* Separable fixed-point resampling (see resample.h).
 *
 * Per call: tap tables for both axes are computed once into r->taps; the
 * horizontal pass runs only over the source rows the vertical taps touch and
 * writes the uint8 intermediate into r->tmp; the vertical pass writes dst.
 * An axis whose scale is exactly 1 on an integer-aligned box is an identity
 * and its pass is skipped (the taps would be a single weight of 1.0).
 *
 * Arithmetic follows Pillow's definition so results are bit-identical: weights
 * filter((i + 0.5 - center) / fscale) in double, normalised to sum 1, rounded
 * to 22-bit fixed point; accumulators start at 0.5 (1 << 21) and are shifted
 * down and clamped to uint8 after each pass. With 22-bit weights and uint8
 * inputs the int32 accumulator peaks near 255 * 2^22 < 2^31. */
#include <math.h>
#include <string.h>
#include "cpu.h"
#include "resample.h"

#if FL_X86
#define FL_X86_DISPATCH 1
#include <immintrin.h>
#define FL_AVX2 FL_TARGET("avx2")
#define FL_SSE41 FL_TARGET("sse4.1")
#else
#define FL_X86_DISPATCH 0
#endif
#if FL_NEON
#include <arm_neon.h>
#endif

#define PREC 22
#define HALF (1 << (PREC - 1))
#define HV_WORDS 16   /* int32 words of AVX2's expanded weights per load: 16 int16 hi parts, then 16 lo */
#define BOX_EPS 1e-3

void fl_resampler_free(fl_resampler *r)
{
    fl_buffer_free(&r->taps);
    fl_buffer_free(&r->tmp);
}

static inline uint8_t clip8(int32_t acc)
{
    acc >>= PREC;
    return (uint8_t)(acc < 0 ? 0 : acc > 255 ? 255 : acc);
}

/* ---- tap tables -------------------------------------------------------- */

static inline double tri_filter(double x)
{
    /* max(1 - |x|, 0): the same value as |x| < 1 ? 1 - |x| : 0, without a branch */
    double y = 1.0 - fabs(x);
    return y > 0.0 ? y : 0.0;
}

/* Half-open on the left so that an integer downscale gives every source pixel
 * to exactly one output pixel (the same convention as Pillow's BOX). */
static inline double box_filter(double x)
{
    return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
}

/* One axis. bounds[2*i] = first source index, bounds[2*i+1] = tap count;
 * k[i*stride + t] = fixed-point weight of tap t; w = ksize doubles of scratch. */
typedef struct {
    int ksize;       /* taps per output index (row stride of k) */
    double scale;    /* source pixels per output pixel */
    double support;  /* half-width of the filter in source pixels */
    double fscale;   /* support widening factor (>= 1) */
} axis_plan;

static axis_plan plan_axis(int in_size, float in0, float in1, int out_size,
                           int filter, int antialias)
{
    axis_plan p;
    double base = filter == FL_AREA ? 0.5 : 1.0;
    p.scale = (double)(in1 - in0) / out_size;   /* float difference, as Pillow */
    p.fscale = (antialias || filter == FL_AREA) && p.scale > 1.0 ? p.scale : 1.0;
    p.support = base * p.fscale;
    double ks = ceil(p.support) * 2.0 + 1.0;
    /* A window never holds more than the whole source axis. */
    p.ksize = ks > (double)in_size ? in_size : (int)ks;
    return p;
}

/* The filter is a constant in each instance (fill_axis picks one), so it
 * inlines: through a pointer the call cost as much as the weight itself. */
static FL_INLINE void fill_axis_with(const axis_plan *p, int in_size, float in0, int out_size,
                                     const int area, int32_t *bounds, int32_t *k, double *w)
{
    double inv = 1.0 / p->fscale;
    for (int i = 0; i < out_size; i++) {
        double center = in0 + (i + 0.5) * p->scale;
        int lo = (int)(center - p->support + 0.5);
        int hi = (int)(center + p->support + 0.5);
        if (lo < 0) lo = 0;
        if (hi > in_size) hi = in_size;
        int n = hi - lo;
        if (n > p->ksize) n = p->ksize;
        double sum = 0.0;
        for (int t = 0; t < n; t++) {
            double x = ((double)(t + lo) - center + 0.5) * inv;
            w[t] = area ? box_filter(x) : tri_filter(x);
            sum += w[t];
        }
        int32_t *kk = k + (size_t)i * p->ksize;
        if (n <= 0 || sum == 0.0) {
            /* Degenerate window (a sliver of a box at the border): take the
             * pixel under the centre rather than emit black. */
            int c = (int)center;
            lo = c < 0 ? 0 : c >= in_size ? in_size - 1 : c;
            n = 1;
            kk[0] = 1 << PREC;
        } else {
            for (int t = 0; t < n; t++) {
                double v = w[t] / sum * (double)(1 << PREC);
                kk[t] = (int32_t)(v < 0 ? v - 0.5 : v + 0.5);
            }
        }
        bounds[2 * i] = lo;
        bounds[2 * i + 1] = n;
    }
}

static void fill_axis(const axis_plan *p, int in_size, float in0, int out_size,
                      int filter, int32_t *bounds, int32_t *k, double *w)
{
    if (filter == FL_AREA)
        fill_axis_with(p, in_size, in0, out_size, 1, bounds, k, w);
    else
        fill_axis_with(p, in_size, in0, out_size, 0, bounds, k, w);
}

/* Taps of an axis the image shows reversed: fill_axis over the shown box
 * (in0 in shown coordinates), then turned back: stored output i is shown
 * output out_size-1-i, stored source t is shown source in_size-1-t. */
static void fill_axis_shown(const axis_plan *p, int in_size, float in0, int out_size, int filter, int rev,
                            int32_t *bounds, int32_t *k, double *w)
{
    fill_axis(p, in_size, in0, out_size, filter, bounds, k, w);
    if (!rev)
        return;
    const int ks = p->ksize;
    for (int i = 0, j = out_size - 1; i < j; i++, j--) {
        for (int t = 0; t < 2; t++) {
            int32_t b = bounds[2 * i + t];
            bounds[2 * i + t] = bounds[2 * j + t];
            bounds[2 * j + t] = b;
        }
        for (int t = 0; t < ks; t++) {
            int32_t v = k[(size_t)i * ks + t];
            k[(size_t)i * ks + t] = k[(size_t)j * ks + t];
            k[(size_t)j * ks + t] = v;
        }
    }
    for (int i = 0; i < out_size; i++) {
        int n = bounds[2 * i + 1];
        int32_t *kk = k + (size_t)i * ks;
        bounds[2 * i] = in_size - bounds[2 * i] - n;
        for (int a = 0, b = n - 1; a < b; a++, b--) {
            int32_t v = kk[a];
            kk[a] = kk[b];
            kk[b] = v;
        }
    }
}

/* Carve aligned pieces out of one scratch buffer. */
static size_t align_up(size_t n) { return (n + 63) & ~(size_t)63; }

/* ---- portable loops ---------------------------------------------------- */

static void hpass_pixel(const uint8_t *in, int ch, int lo, int n, const int32_t *k, uint8_t *out)
{
    const uint8_t *p = in + (size_t)lo * ch;
    if (ch == 3) {
        int32_t a0 = HALF, a1 = HALF, a2 = HALF;
        for (int t = 0; t < n; t++, p += 3) {
            a0 += p[0] * k[t];
            a1 += p[1] * k[t];
            a2 += p[2] * k[t];
        }
        out[0] = clip8(a0); out[1] = clip8(a1); out[2] = clip8(a2);
        return;
    }
    for (int c = 0; c < ch; c++) {
        int32_t a = HALF;
        for (int t = 0; t < n; t++)
            a += p[t * ch + c] * k[t];
        out[c] = clip8(a);
    }
}

static void hpass_portable(const uint8_t *in, ptrdiff_t in_stride, int rows, int ch,
                           uint8_t *out, ptrdiff_t out_stride, int out_w,
                           const int32_t *bounds, const int32_t *k, int ksize)
{
    for (int y = 0; y < rows; y++) {
        const uint8_t *row = in + y * in_stride;
        uint8_t *o = out + y * out_stride;
        for (int x = 0; x < out_w; x++)
            hpass_pixel(row, ch, bounds[2 * x], bounds[2 * x + 1], k + (size_t)x * ksize, o + x * ch);
    }
}

static void vpass_portable(const uint8_t *in, ptrdiff_t in_stride, int rowbytes,
                           uint8_t *out, ptrdiff_t out_stride, int out_h,
                           const int32_t *bounds, const int32_t *k, int ksize)
{
    for (int y = 0; y < out_h; y++) {
        const int32_t *kk = k + (size_t)y * ksize;
        const uint8_t *base = in + bounds[2 * y] * in_stride;
        int n = bounds[2 * y + 1];
        uint8_t *o = out + y * out_stride;
        for (int x = 0; x < rowbytes; x++) {
            int32_t a = HALF;
            for (int t = 0; t < n; t++)
                a += base[t * in_stride + x] * kk[t];
            o[x] = clip8(a);
        }
    }
}

/* ---- AVX2 loops -------------------------------------------------------- */
#if FL_X86_DISPATCH

/* Horizontal taps for AVX2, with 16-bit multiplies and the portable loop's
 * int32 sums: each weight is split as hi * 2^HSPLIT + lo (both fit int16),
 * vpmaddwd sums a channel's two taps against each part, and the parts are
 * joined as (hi << HSPLIT) + lo. A 16-byte load covers 4 taps (RGB, RGBA) or
 * 16 (1 channel), spread into sixteen uint16 lanes, a channel's tap pairs
 * side by side (HTAP_LANE):
 *   RGB   [R0 R1 G0 G1 B0 B1 R2 R3 | G2 G3 B2 B3 - - - -] -> [R01 G01 B01 R23 | G23 B23 - -]
 *   RGBA  [R0 R1 G0 G1 B0 B1 A0 A1 | R2 R3 G2 G3 B2 B3 A2 A3] -> [R01 G01 B01 A01 | R23 G23 B23 A23]
 *   1 ch  taps 0-15 -> eight pair sums
 * the int32 layouts the reductions below fold. Per tap, half the multiply
 * work of widening every byte to int32 for vpmulld. */
#define HSPLIT 11
static int taps_per_load(int ch) { return ch == 1 ? 16 : 4; }

/* The expanded weights: for each output pixel and load, a channel's taps put
 * where the load's lanes hold them (the layouts above), as hi then lo parts;
 * zero beyond the window. Masked loads read no weight past it. */
FL_AVX2 static void expand_htaps(int ch, int out_w, const int32_t *bounds, const int32_t *k, int ksize,
                                 int nload, int32_t *vk)
{
    const int per = taps_per_load(ch);
    const __m256i low = _mm256_set1_epi32((1 << HSPLIT) - 1);
    const __m256i first = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    /* RGB(A): the bytes of [hi0..hi3 lo0..lo3] (int16) each lane's hi takes; its lo, 8 on */
    const __m256i pick = ch == 3
        ? _mm256_setr_epi8(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 4, 5, 6, 7,
                           4, 5, 6, 7, 4, 5, 6, 7, -1, -1, -1, -1, -1, -1, -1, -1)
        : _mm256_setr_epi8(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3,
                           4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7);
    const __m256i pick_lo = _mm256_or_si256(pick, _mm256_and_si256(_mm256_cmpgt_epi8(pick, _mm256_set1_epi8(-1)),
                                                                   _mm256_set1_epi8(8)));
    for (int x = 0; x < out_w; x++) {
        const int n = bounds[2 * x + 1];
        const int32_t *kk = k + (size_t)x * ksize;
        __m256i *v = (__m256i *)(vk + (size_t)x * nload * HV_WORDS);
        for (int j = 0; j < nload; j++, v += 2) {
            const __m256i left = _mm256_set1_epi32(n - j * per);   /* taps of the window from this load on */
            if (ch == 1) {
                __m256i w0 = _mm256_maskload_epi32(kk + j * per, _mm256_cmpgt_epi32(left, first));
                __m256i w1 = _mm256_maskload_epi32(kk + j * per + 8, _mm256_cmpgt_epi32(
                    left, _mm256_add_epi32(first, _mm256_set1_epi32(8))));
                /* packs work within 128-bit halves: 0xD8 puts the four quarters back in order */
                _mm256_store_si256(v, _mm256_permute4x64_epi64(_mm256_packs_epi32(
                    _mm256_srai_epi32(w0, HSPLIT), _mm256_srai_epi32(w1, HSPLIT)), 0xD8));
                _mm256_store_si256(v + 1, _mm256_permute4x64_epi64(_mm256_packs_epi32(
                    _mm256_and_si256(w0, low), _mm256_and_si256(w1, low)), 0xD8));
            } else {
                __m128i w = _mm_maskload_epi32(kk + j * per, _mm_cmpgt_epi32(_mm256_castsi256_si128(left),
                                                                             _mm256_castsi256_si128(first)));
                __m256i hl = _mm256_broadcastsi128_si256(_mm_packs_epi32(
                    _mm_srai_epi32(w, HSPLIT), _mm_and_si128(w, _mm256_castsi256_si128(low))));
                _mm256_store_si256(v, _mm256_shuffle_epi8(hl, pick));
                _mm256_store_si256(v + 1, _mm256_shuffle_epi8(hl, pick_lo));
            }
        }
    }
}

/* Output pixels [0, end) can use nload 16-byte loads from their first tap
 * without reading past `avail` bytes from the row's start; window starts only
 * move right, so the rest of the row is a suffix handled by the portable code.
 * The bytes a load takes beyond the window meet zero weights, so a row may
 * read on into the next: only the last row stops at its own end. */
static int hsafe_end(int ch, size_t avail, int out_w, const int32_t *bounds, int nload)
{
    size_t reach = (size_t)(nload - 1) * taps_per_load(ch) * ch + 16;
    int end = out_w;
    while (end > 0 && (size_t)bounds[2 * (end - 1)] * ch + reach > avail)
        end--;
    return end;
}

/* One output pixel's products, summed over its loads (16-byte source loads
 * `step` bytes apart, each against its hi and lo weights). */
FL_AVX2 static FL_INLINE __m256i htaps_avx2(const uint8_t *p, const __m256i *v, const int nload, const int step,
                                            const int ch)
{
    const __m256i spread = ch == 3
        ? _mm256_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, 6, -1, 9, -1,
                           7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1, -1, -1, -1, -1)
        : _mm256_setr_epi8(0, -1, 4, -1, 1, -1, 5, -1, 2, -1, 6, -1, 3, -1, 7, -1,
                           8, -1, 12, -1, 9, -1, 13, -1, 10, -1, 14, -1, 11, -1, 15, -1);
    __m256i hi = _mm256_setzero_si256(), lo = _mm256_setzero_si256();
    for (int j = 0; j < nload; j++) {
        const __m128i b = _mm_loadu_si128((const __m128i *)(p + j * step));
        const __m256i x = ch == 1 ? _mm256_cvtepu8_epi16(b)
                                  : _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(b), spread);
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(x, _mm256_load_si256(v + 2 * j)));
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(x, _mm256_load_si256(v + 2 * j + 1)));
    }
    return _mm256_add_epi32(_mm256_slli_epi32(hi, HSPLIT), lo);
}

/* Every pixel runs the same number of loads (zero weights pad the short
 * windows): a fixed trip count keeps the branch predictor out of the loop,
 * which costs more than the wasted multiplies when windows alternate 2/3. */
FL_AVX2 static FL_INLINE void hpass_avx2_ch(const int ch, const uint8_t *in, ptrdiff_t in_stride, int rows,
                                         int in_w, uint8_t *out, ptrdiff_t out_stride, int out_w,
                                         const int32_t *bounds, const int32_t *k, int ksize,
                                         const int32_t *vk, const int nload)
{
    const int step = taps_per_load(ch) * ch;
    const __m128i half = _mm_set1_epi32(HALF);
    const size_t row_bytes = (size_t)in_w * ch;
    const int inner_end = hsafe_end(ch, (size_t)in_stride + row_bytes, out_w, bounds, nload);
    const int last_end = hsafe_end(ch, row_bytes, out_w, bounds, nload);
    for (int y = 0; y < rows; y++) {
        const uint8_t *row = in + y * in_stride;
        uint8_t *o = out + y * out_stride;
        const __m256i *v = (const __m256i *)vk;
        const int safe_end = y + 1 < rows ? inner_end : last_end;
        int x = 0;
        /* RGB, two pixels per step: their accumulators share one reduction
         * (each 128-bit half folds one pixel), which halves the shuffles and
         * packs per pixel. Both 4-byte stores land inside the row while
         * x + 2 < out_w (pixel x + 1's 4th byte is pixel x + 2's first). */
        if (ch == 3) {
            for (; x + 1 < safe_end && x + 2 < out_w; x += 2, v += 4 * nload) {
                __m256i a0 = htaps_avx2(row + (size_t)bounds[2 * x] * 3, v, nload, step, 3);
                __m256i a1 = htaps_avx2(row + (size_t)bounds[2 * x + 2] * 3, v + 2 * nload, nload, step, 3);
                /* lo = [x: R01 G01 B01 R23 | x+1: ...], hi = [x: G23 B23 - - | x+1: ...] */
                __m256i lo = _mm256_permute2x128_si256(a0, a1, 0x20);
                __m256i hi = _mm256_permute2x128_si256(a0, a1, 0x31);
                __m256i s = _mm256_add_epi32(lo, _mm256_alignr_epi8(hi, lo, 12));
                s = _mm256_srai_epi32(_mm256_add_epi32(s, _mm256_set1_epi32(HALF)), PREC);
                s = _mm256_packus_epi16(_mm256_packs_epi32(s, s), s);
                uint32_t px0 = (uint32_t)_mm256_cvtsi256_si32(s);
                uint32_t px1 = (uint32_t)_mm_cvtsi128_si32(_mm256_extracti128_si256(s, 1));
                memcpy(o + x * 3, &px0, 4);
                memcpy(o + x * 3 + 3, &px1, 4);
            }
        }
        for (; x < safe_end; x++, v += 2 * nload) {
            __m256i acc = htaps_avx2(row + (size_t)bounds[2 * x] * ch, v, nload, step, ch);
            __m128i lo4 = _mm256_castsi256_si128(acc), hi4 = _mm256_extracti128_si256(acc, 1);
            __m128i s;
            if (ch == 3)        /* lanes: R01 G01 B01 R23 | G23 B23 - -  ->  R G B - */
                s = _mm_add_epi32(lo4, _mm_alignr_epi8(hi4, lo4, 12));
            else                /* 4 channels: taps 0-1 | 2-3; 1 channel: eight pair sums */
                s = _mm_add_epi32(lo4, hi4);
            if (ch == 1) {
                s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
                s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
            }
            s = _mm_srai_epi32(_mm_add_epi32(s, half), PREC);
            s = _mm_packus_epi16(_mm_packs_epi32(s, s), s);
            uint32_t px4 = (uint32_t)_mm_cvtsi128_si32(s);
            if (ch == 1)
                o[x] = (uint8_t)px4;
            else if (ch == 4 || x + 1 < out_w)   /* RGB: the 4th byte is rewritten by pixel x+1 */
                memcpy(o + x * ch, &px4, 4);
            else
                memcpy(o + x * ch, &px4, 3);
        }
        for (; x < out_w; x++)
            hpass_pixel(row, ch, bounds[2 * x], bounds[2 * x + 1], k + (size_t)x * ksize, o + x * ch);
    }
}

FL_AVX2 static void hpass_avx2(const uint8_t *in, ptrdiff_t in_stride, int rows, int ch, int in_w,
                               uint8_t *out, ptrdiff_t out_stride, int out_w,
                               const int32_t *bounds, const int32_t *k, int ksize,
                               const int32_t *vk, int nload)
{
    /* Constant channel counts (and the common one- and two-load windows)
     * let the compiler drop the inner loop. */
#define HPASS(C, N) hpass_avx2_ch(C, in, in_stride, rows, in_w, out, out_stride, out_w, bounds, k, ksize, vk, N)
    if (ch == 3) {
        if (nload == 1) HPASS(3, 1); else if (nload == 2) HPASS(3, 2); else HPASS(3, nload);
    } else if (ch == 4) {
        if (nload == 1) HPASS(4, 1); else if (nload == 2) HPASS(4, 2); else HPASS(4, nload);
    } else {
        HPASS(1, nload);
    }
#undef HPASS
}

/* Eight int32 accumulators -> eight bytes, in order. */
FL_AVX2 static inline __m128i pack8(__m256i a)
{
    a = _mm256_srai_epi32(a, PREC);
    __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
    return _mm_packus_epi16(w, w);
}

FL_AVX2 static void vpass_avx2(const uint8_t *in, ptrdiff_t in_stride, int rowbytes,
                               uint8_t *out, ptrdiff_t out_stride, int out_h,
                               const int32_t *bounds, const int32_t *k, int ksize)
{
    const __m256i half = _mm256_set1_epi32(HALF);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int y = 0; y < out_h; y++) {
        const int32_t *kk = k + (size_t)y * ksize;
        const uint8_t *base = in + bounds[2 * y] * in_stride;
        int n = bounds[2 * y + 1];
        uint8_t *o = out + y * out_stride;
        int x = 0;
        for (; x + 32 <= rowbytes; x += 32) {
            __m256i a0 = half, a1 = half, a2 = half, a3 = half;
            const uint8_t *p = base + x;
            for (int t = 0; t < n; t++, p += in_stride) {
                __m256i c = _mm256_set1_epi32(kk[t]);
                a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)), c));
                a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 8))), c));
                a2 = _mm256_add_epi32(a2, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 16))), c));
                a3 = _mm256_add_epi32(a3, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + 24))), c));
            }
            /* packs work within 128-bit lanes; vpermd restores byte order. */
            a0 = _mm256_srai_epi32(a0, PREC); a1 = _mm256_srai_epi32(a1, PREC);
            a2 = _mm256_srai_epi32(a2, PREC); a3 = _mm256_srai_epi32(a3, PREC);
            __m256i b = _mm256_packus_epi16(_mm256_packs_epi32(a0, a1), _mm256_packs_epi32(a2, a3));
            _mm256_storeu_si256((__m256i *)(o + x), _mm256_permutevar8x32_epi32(b, order));
        }
        for (; x + 8 <= rowbytes; x += 8) {
            __m256i a = half;
            const uint8_t *p = base + x;
            for (int t = 0; t < n; t++, p += in_stride)
                a = _mm256_add_epi32(a, _mm256_mullo_epi32(
                        _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)), _mm256_set1_epi32(kk[t])));
            _mm_storel_epi64((__m128i *)(o + x), pack8(a));
        }
        for (; x < rowbytes; x++) {
            int32_t a = HALF;
            for (int t = 0; t < n; t++)
                a += base[t * in_stride + x] * kk[t];
            o[x] = clip8(a);
        }
    }
}
#endif /* FL_X86_DISPATCH */

/* ---- SSE4.1 and NEON loops ----------------------------------------------
 * Four int32 lanes: one pixel (3 or 4 channels) per horizontal step, sixteen
 * bytes of a row per vertical step. The same integer sums as the portable
 * loops, so the same bytes. */

/* A 3-channel pixel is read as 4 bytes: only when that stays inside the row. */
static inline int hfits(int lo, int n, int ch, int in_w)
{
    return (size_t)(lo + n) * ch + (ch == 3) <= (size_t)in_w * ch;
}

#if FL_X86_DISPATCH
FL_SSE41 static void hpass_sse41(const uint8_t *in, ptrdiff_t in_stride, int rows, int ch, int in_w,
                                 uint8_t *out, ptrdiff_t out_stride, int out_w,
                                 const int32_t *bounds, const int32_t *k, int ksize)
{
    if (ch == 1) {
        hpass_portable(in, in_stride, rows, ch, out, out_stride, out_w, bounds, k, ksize);
        return;
    }
    const __m128i half = _mm_set1_epi32(HALF);
    for (int y = 0; y < rows; y++) {
        const uint8_t *row = in + y * in_stride;
        uint8_t *o = out + y * out_stride;
        for (int x = 0; x < out_w; x++) {
            int lo = bounds[2 * x], n = bounds[2 * x + 1];
            const int32_t *kk = k + (size_t)x * ksize;
            if (!hfits(lo, n, ch, in_w)) {
                hpass_pixel(row, ch, lo, n, kk, o + x * ch);
                continue;
            }
            const uint8_t *p = row + (size_t)lo * ch;
            __m128i acc = half;
            for (int t = 0; t < n; t++, p += ch) {
                int32_t v;
                memcpy(&v, p, 4);
                acc = _mm_add_epi32(acc, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(v)),
                                                         _mm_set1_epi32(kk[t])));
            }
            acc = _mm_srai_epi32(acc, PREC);
            acc = _mm_packus_epi16(_mm_packs_epi32(acc, acc), acc);
            uint32_t px = (uint32_t)_mm_cvtsi128_si32(acc);
            memcpy(o + x * ch, &px, (size_t)ch);
        }
    }
}

FL_SSE41 static void vpass_sse41(const uint8_t *in, ptrdiff_t in_stride, int rowbytes,
                                 uint8_t *out, ptrdiff_t out_stride, int out_h,
                                 const int32_t *bounds, const int32_t *k, int ksize)
{
    const __m128i half = _mm_set1_epi32(HALF);
    for (int y = 0; y < out_h; y++) {
        const int32_t *kk = k + (size_t)y * ksize;
        const uint8_t *base = in + bounds[2 * y] * in_stride;
        int n = bounds[2 * y + 1];
        uint8_t *o = out + y * out_stride;
        int x = 0;
        for (; x + 16 <= rowbytes; x += 16) {
            __m128i a0 = half, a1 = half, a2 = half, a3 = half;
            const uint8_t *p = base + x;
            for (int t = 0; t < n; t++, p += in_stride) {
                __m128i c = _mm_set1_epi32(kk[t]), v = _mm_loadu_si128((const __m128i *)p);
                a0 = _mm_add_epi32(a0, _mm_mullo_epi32(_mm_cvtepu8_epi32(v), c));
                a1 = _mm_add_epi32(a1, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(v, 4)), c));
                a2 = _mm_add_epi32(a2, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(v, 8)), c));
                a3 = _mm_add_epi32(a3, _mm_mullo_epi32(_mm_cvtepu8_epi32(_mm_srli_si128(v, 12)), c));
            }
            a0 = _mm_srai_epi32(a0, PREC); a1 = _mm_srai_epi32(a1, PREC);
            a2 = _mm_srai_epi32(a2, PREC); a3 = _mm_srai_epi32(a3, PREC);
            _mm_storeu_si128((__m128i *)(o + x),
                             _mm_packus_epi16(_mm_packs_epi32(a0, a1), _mm_packs_epi32(a2, a3)));
        }
        for (; x < rowbytes; x++) {
            int32_t a = HALF;
            for (int t = 0; t < n; t++)
                a += base[t * in_stride + x] * kk[t];
            o[x] = clip8(a);
        }
    }
}
#endif /* FL_X86_DISPATCH */

#if FL_NEON
static inline uint8x8_t narrow8(int32x4_t a, int32x4_t b)
{
    return vqmovn_u16(vcombine_u16(vqmovun_s32(vshrq_n_s32(a, PREC)), vqmovun_s32(vshrq_n_s32(b, PREC))));
}

static void hpass_neon(const uint8_t *in, ptrdiff_t in_stride, int rows, int ch, int in_w,
                       uint8_t *out, ptrdiff_t out_stride, int out_w,
                       const int32_t *bounds, const int32_t *k, int ksize)
{
    if (ch == 1) {
        hpass_portable(in, in_stride, rows, ch, out, out_stride, out_w, bounds, k, ksize);
        return;
    }
    for (int y = 0; y < rows; y++) {
        const uint8_t *row = in + y * in_stride;
        uint8_t *o = out + y * out_stride;
        for (int x = 0; x < out_w; x++) {
            int lo = bounds[2 * x], n = bounds[2 * x + 1];
            const int32_t *kk = k + (size_t)x * ksize;
            if (!hfits(lo, n, ch, in_w)) {
                hpass_pixel(row, ch, lo, n, kk, o + x * ch);
                continue;
            }
            const uint8_t *p = row + (size_t)lo * ch;
            int32x4_t acc = vdupq_n_s32(HALF);
            for (int t = 0; t < n; t++, p += ch) {
                uint32_t v;
                memcpy(&v, p, 4);
                uint16x8_t w = vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(v)));
                acc = vmlaq_n_s32(acc, vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(w))), kk[t]);
            }
            uint32_t px = vget_lane_u32(vreinterpret_u32_u8(narrow8(acc, acc)), 0);
            memcpy(o + x * ch, &px, (size_t)ch);
        }
    }
}

static void vpass_neon(const uint8_t *in, ptrdiff_t in_stride, int rowbytes,
                       uint8_t *out, ptrdiff_t out_stride, int out_h,
                       const int32_t *bounds, const int32_t *k, int ksize)
{
    for (int y = 0; y < out_h; y++) {
        const int32_t *kk = k + (size_t)y * ksize;
        const uint8_t *base = in + bounds[2 * y] * in_stride;
        int n = bounds[2 * y + 1];
        uint8_t *o = out + y * out_stride;
        int x = 0;
        for (; x + 16 <= rowbytes; x += 16) {
            int32x4_t a0 = vdupq_n_s32(HALF), a1 = a0, a2 = a0, a3 = a0;
            const uint8_t *p = base + x;
            for (int t = 0; t < n; t++, p += in_stride) {
                uint8x16_t v = vld1q_u8(p);
                uint16x8_t lo = vmovl_u8(vget_low_u8(v)), hi = vmovl_u8(vget_high_u8(v));
                a0 = vmlaq_n_s32(a0, vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(lo))), kk[t]);
                a1 = vmlaq_n_s32(a1, vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(lo))), kk[t]);
                a2 = vmlaq_n_s32(a2, vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(hi))), kk[t]);
                a3 = vmlaq_n_s32(a3, vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(hi))), kk[t]);
            }
            vst1q_u8(o + x, vcombine_u8(narrow8(a0, a1), narrow8(a2, a3)));
        }
        for (; x < rowbytes; x++) {
            int32_t a = HALF;
            for (int t = 0; t < n; t++)
                a += base[t * in_stride + x] * kk[t];
            o[x] = clip8(a);
        }
    }
}
#endif /* FL_NEON */

/* ---- nearest ----------------------------------------------------------- */

/* NEAREST_EXACT's floor((i + 0.5) * in / out), of the box's part of the resized
 * grid. A centre exactly on a pixel edge takes the pixel to its right; through a
 * crop's fractional offset (Resize then CenterCrop, fused into one box) it lands
 * a rounding error to the left, which moved whole columns: NEAREST_EPS puts it
 * back, far below the least distance of any other centre from an edge
 * (1 / (2 * the resized size) pixels). */
#define NEAREST_EPS 1e-9

static void nearest_index(int in_size, double in0, double in1, int out_size, int32_t *idx)
{
    double scale = (in1 - in0) / out_size;
    for (int i = 0; i < out_size; i++) {
        double c = floor(in0 + (i + 0.5) * scale + NEAREST_EPS);
        idx[i] = c < 0 ? 0 : c >= in_size ? in_size - 1 : (int32_t)c;
    }
}

/* nearest_index over the shown box, turned back to stored indices when the
 * axis is shown reversed (in0, in1 in shown coordinates). */
static void nearest_index_shown(int in_size, double in0, double in1, int out_size, int rev, int32_t *idx)
{
    nearest_index(in_size, in0, in1, out_size, idx);
    if (!rev)
        return;
    for (int i = 0, j = out_size - 1; i <= j; i++, j--) {
        int32_t a = idx[i];
        idx[i] = in_size - 1 - idx[j];
        idx[j] = in_size - 1 - a;
    }
}

static void nearest(const fl_view *src, fl_view *dst, const int32_t *xi, const int32_t *yi)
{
    int ch = src->channels;
    for (int y = 0; y < dst->height; y++) {
        const uint8_t *row = src->data + yi[y] * src->stride;
        uint8_t *o = dst->data + y * dst->stride;
        if (ch == 3) {
            for (int x = 0; x < dst->width; x++, o += 3) {
                const uint8_t *p = row + (size_t)xi[x] * 3;
                o[0] = p[0]; o[1] = p[1]; o[2] = p[2];
            }
        } else if (ch == 4) {
            for (int x = 0; x < dst->width; x++)
                memcpy(o + (size_t)x * 4, row + (size_t)xi[x] * 4, 4);
        } else {
            for (int x = 0; x < dst->width; x++)
                o[x] = row[xi[x]];
        }
    }
}

/* ---- driver ------------------------------------------------------------ */

static int valid_view(const fl_view *v)
{
    return v && v->data && v->width > 0 && v->height > 0 &&
           (v->channels == 1 || v->channels == 3 || v->channels == 4) &&
           v->stride >= (ptrdiff_t)v->width * v->channels;
}

/* Snap a coordinate that is within BOX_EPS of the image border onto it. */
static int clamp_box(double *a0, double *a1, int size)
{
    if (!(*a0 >= -BOX_EPS) || !(*a1 <= size + BOX_EPS) || !(*a1 > *a0))
        return 0;
    if (*a0 < 0) *a0 = 0;
    if (*a1 > size) *a1 = size;
    return *a1 > *a0;
}

/* The axis is a plain copy of source indices [*first, *first + out). */
static int is_identity(double a0, double a1, int out, int *first)
{
    if (a1 - a0 != (double)out || a0 != floor(a0))
        return 0;
    *first = (int)a0;
    return 1;
}

/* The horizontal pass over `rows` rows of `in` (in_w pixels each), on the
 * process's SIMD path; hv is scratch for AVX2's expanded taps. */
static void run_hpass(const uint8_t *in, ptrdiff_t in_stride, int rows, int ch, int in_w,
                      uint8_t *out, ptrdiff_t out_stride, int out_w,
                      const int32_t *hb, const int32_t *hk, int ksize, int32_t *hv)
{
#if FL_X86_DISPATCH
    if (fl_simd == FL_SIMD_AVX2) {
        int maxn = 1;
        for (int x = 0; x < out_w; x++)
            if (hb[2 * x + 1] > maxn) maxn = hb[2 * x + 1];
        int nload = (maxn + taps_per_load(ch) - 1) / taps_per_load(ch);
        expand_htaps(ch, out_w, hb, hk, ksize, nload, hv);
        hpass_avx2(in, in_stride, rows, ch, in_w, out, out_stride, out_w, hb, hk, ksize, hv, nload);
        return;
    }
    if (fl_simd == FL_SIMD_SSE41) {
        hpass_sse41(in, in_stride, rows, ch, in_w, out, out_stride, out_w, hb, hk, ksize);
        return;
    }
#else
    (void)hv;
#endif
#if FL_NEON
    if (fl_simd == FL_SIMD_NEON) {
        hpass_neon(in, in_stride, rows, ch, in_w, out, out_stride, out_w, hb, hk, ksize);
        return;
    }
#endif
    (void)in_w;
    hpass_portable(in, in_stride, rows, ch, out, out_stride, out_w, hb, hk, ksize);
}

/* The vertical pass: `rowbytes` bytes of each output row, on the process's
 * SIMD path. */
static void run_vpass(const uint8_t *in, ptrdiff_t in_stride, int rowbytes,
                      uint8_t *out, ptrdiff_t out_stride, int out_h,
                      const int32_t *vb, const int32_t *vk, int ksize)
{
#if FL_X86_DISPATCH
    if (fl_simd == FL_SIMD_AVX2) {
        vpass_avx2(in, in_stride, rowbytes, out, out_stride, out_h, vb, vk, ksize);
        return;
    }
    if (fl_simd == FL_SIMD_SSE41) {
        vpass_sse41(in, in_stride, rowbytes, out, out_stride, out_h, vb, vk, ksize);
        return;
    }
#endif
#if FL_NEON
    if (fl_simd == FL_SIMD_NEON) {
        vpass_neon(in, in_stride, rowbytes, out, out_stride, out_h, vb, vk, ksize);
        return;
    }
#endif
    vpass_portable(in, in_stride, rowbytes, out, out_stride, out_h, vb, vk, ksize);
}

/* Shift a pass's window starts by -first, where first is the lowest; returns
 * it and sets *count to the span of source indices the windows cover. */
static int rebase(int32_t *bounds, int n, int *count)
{
    int first = bounds[0], last = 0;
    for (int i = 0; i < n; i++) {
        if (bounds[2 * i] < first) first = bounds[2 * i];
        if (bounds[2 * i] + bounds[2 * i + 1] > last) last = bounds[2 * i] + bounds[2 * i + 1];
    }
    for (int i = 0; i < n; i++)
        bounds[2 * i] -= first;
    *count = last - first;
    return first;
}

int fl_resample(fl_resampler *r, const fl_view *src, fl_rect box,
                int filter, int antialias, fl_view *dst)
{
    return fl_resample_shown(r, src, box, filter, antialias, 0, dst);
}

int fl_resample_shown(fl_resampler *r, const fl_view *src, fl_rect box,
                      int filter, int antialias, int shown, fl_view *dst)
{
    if (!r || !valid_view(src) || !valid_view(dst) || dst->channels != src->channels)
        return FL_ERR_ARG;
    if (filter != FL_NEAREST && filter != FL_BILINEAR && filter != FL_AREA)
        return FL_ERR_ARG;
    if (!clamp_box(&box.x0, &box.x1, src->width) || !clamp_box(&box.y0, &box.y1, src->height))
        return FL_ERR_ARG;
    const int ch = src->channels, ow = dst->width, oh = dst->height;
    const int iw = src->width, ih = src->height;
    const int rev_x = (shown & FL_SHOWN_REV_X) != 0, rev_y = (shown & FL_SHOWN_REV_Y) != 0;
    /* Each axis's box in shown coordinates. */
    const double sx0 = rev_x ? iw - box.x1 : box.x0, sx1 = rev_x ? iw - box.x0 : box.x1;
    const double sy0 = rev_y ? ih - box.y1 : box.y0, sy1 = rev_y ? ih - box.y0 : box.y1;
    /* Pillow takes the box as float; rounding it the same way keeps the tap
     * positions, and so the pixels, identical (and costs < 1e-4 px). */
    const float bx0 = (float)sx0, bx1 = (float)sx1, by0 = (float)sy0, by1 = (float)sy1;

    if (filter == FL_NEAREST) {
        if (fl_buffer_reserve(&r->taps, ((size_t)ow + oh) * sizeof(int32_t)))
            return FL_ERR_NOMEM;
        int32_t *xi = (int32_t *)r->taps.data, *yi = xi + ow;
        nearest_index_shown(iw, sx0, sx1, ow, rev_x, xi);
        nearest_index_shown(ih, sy0, sy1, oh, rev_y, yi);
        nearest(src, dst, xi, yi);
        return FL_OK;
    }

    int x_first = 0, y_first = 0;
    int need_h = !is_identity(bx0, bx1, ow, &x_first);
    int need_v = !is_identity(by0, by1, oh, &y_first);
    if (rev_x)
        x_first = iw - x_first - ow;
    if (rev_y)
        y_first = ih - y_first - oh;

    axis_plan ph = plan_axis(iw, bx0, bx1, ow, filter, antialias);
    axis_plan pv = plan_axis(ih, by0, by1, oh, filter, antialias);
    int nload = 0;   /* 16-byte loads per output pixel in the AVX2 horizontal pass */
#if FL_X86_DISPATCH
    if (fl_simd == FL_SIMD_AVX2 && need_h)   /* the AVX2 horizontal pass needs expanded taps */
        nload = (ph.ksize + taps_per_load(ch) - 1) / taps_per_load(ch);   /* upper bound for sizing */
#endif
    size_t kmax = (size_t)(ph.ksize > pv.ksize ? ph.ksize : pv.ksize);
    size_t sz_hb = align_up((size_t)ow * 2 * sizeof(int32_t));
    size_t sz_hk = align_up((size_t)ow * ph.ksize * sizeof(int32_t));
    size_t sz_vk8 = align_up((size_t)ow * nload * HV_WORDS * sizeof(int32_t));
    size_t sz_vb = align_up((size_t)oh * 2 * sizeof(int32_t));
    size_t sz_vk = align_up((size_t)oh * pv.ksize * sizeof(int32_t));
    size_t sz_w = align_up(kmax * sizeof(double));
    if (fl_buffer_reserve(&r->taps, sz_hb + sz_hk + sz_vk8 + sz_vb + sz_vk + sz_w + 64))
        return FL_ERR_NOMEM;
    uint8_t *base = (uint8_t *)align_up((size_t)r->taps.data);
    int32_t *hb = (int32_t *)base;
    int32_t *hk = (int32_t *)(base + sz_hb);
    int32_t *hv = (int32_t *)(base + sz_hb + sz_hk);
    int32_t *vb = (int32_t *)(base + sz_hb + sz_hk + sz_vk8);
    int32_t *vk = (int32_t *)(base + sz_hb + sz_hk + sz_vk8 + sz_vb);
    double *w = (double *)(base + sz_hb + sz_hk + sz_vk8 + sz_vb + sz_vk);
    if (need_h)
        fill_axis_shown(&ph, iw, bx0, ow, filter, rev_x, hb, hk, w);
    if (need_v)
        fill_axis_shown(&pv, ih, by0, oh, filter, rev_y, vb, vk, w);

    if (!need_h && !need_v) {
        for (int y = 0; y < oh; y++)
            memcpy(dst->data + y * dst->stride, src->data + (y_first + y) * src->stride + (size_t)x_first * ch,
                   (size_t)ow * ch);
        return FL_OK;
    }
    if (!need_v) {
        run_hpass(src->data + y_first * src->stride, src->stride, oh, ch, iw, dst->data, dst->stride, ow,
                  hb, hk, ph.ksize, hv);
        return FL_OK;
    }
    if (!need_h) {
        run_vpass(src->data + (size_t)x_first * ch, src->stride, ow * ch, dst->data, dst->stride, oh,
                  vb, vk, pv.ksize);
        return FL_OK;
    }
    /* Both passes, through a uint8 intermediate (rounded as Pillow rounds
     * it): the shown image's horizontal pass first, which is the stored
     * vertical pass when the axes are swapped. Each first pass covers only
     * the source span the second one reads. */
    if (shown & FL_SHOWN_SWAP) {
        int ncols;
        int col0 = rebase(hb, ow, &ncols);
        ptrdiff_t tmp_stride = (ptrdiff_t)ncols * ch;
        if (fl_buffer_reserve(&r->tmp, (size_t)oh * tmp_stride))
            return FL_ERR_NOMEM;
        run_vpass(src->data + (size_t)col0 * ch, src->stride, ncols * ch, r->tmp.data, tmp_stride, oh,
                  vb, vk, pv.ksize);
        run_hpass(r->tmp.data, tmp_stride, oh, ch, ncols, dst->data, dst->stride, ow, hb, hk, ph.ksize, hv);
    } else {
        int nrows;
        int row0 = rebase(vb, oh, &nrows);
        ptrdiff_t tmp_stride = (ptrdiff_t)ow * ch;
        if (fl_buffer_reserve(&r->tmp, (size_t)nrows * tmp_stride))
            return FL_ERR_NOMEM;
        run_hpass(src->data + row0 * src->stride, src->stride, nrows, ch, iw, r->tmp.data, tmp_stride, ow,
                  hb, hk, ph.ksize, hv);
        run_vpass(r->tmp.data, tmp_stride, ow * ch, dst->data, dst->stride, oh, vb, vk, pv.ksize);
    }
    return FL_OK;
}
