/* Colour jitter and the final write of a sample into its batch slot
 * (see augment.h). */
#include <math.h>
#include <string.h>
#include "augment.h"
#include "cpu.h"
#if FL_NEON
#include <arm_neon.h>
#endif
#if FL_X86
#include <immintrin.h>
#endif

/* ---- colour jitter ----------------------------------------------------- */

static inline float clamp255(float v) { return v < 0.f ? 0.f : v > 255.f ? 255.f : v; }

/* Values are in [0, 255] after clamping, so adding 0.5 and truncating rounds
 * to nearest with halves going up (= away from zero). */
static inline uint8_t to_u8(float v) { return (uint8_t)(v + 0.5f); }

/* Mean luma of lut[img] without a per-pixel float pass: brightness and
 * contrast map each value independently, so a histogram per colour channel
 * and a dot product with the table give the same sum. */
static double mean_luma(const fl_view *img, int ncolor, const float *lut)
{
    static const double wts[3] = {0.299, 0.587, 0.114};
    uint64_t hist[3][256];
    memset(hist, 0, sizeof(hist));
    const int ch = img->channels;
    for (int y = 0; y < img->height; y++) {
        const uint8_t *p = img->data + y * img->stride;
        if (ncolor == 3)
            for (int x = 0; x < img->width; x++, p += ch) {
                hist[0][p[0]]++; hist[1][p[1]]++; hist[2][p[2]]++;
            }
        else
            for (int x = 0; x < img->width; x++, p += ch)
                hist[0][p[0]]++;
    }
    double sum = 0.0;
    for (int c = 0; c < ncolor; c++) {
        double s = 0.0;
        for (int v = 0; v < 256; v++)
            s += (double)hist[c][v] * lut[v];
        sum += ncolor == 3 ? wts[c] * s : s;
    }
    return sum / ((double)img->width * img->height);
}

/* Four pixels' saturation in 4-lane vectors (SSE4.1, NEON): the same float
 * operations in the same order as the scalar loop below, so the same bytes.
 * Returns how many pixels of the row it did. */
#if FL_X86
__attribute__((target("sse4.1")))
static int saturate_row_sse41(uint8_t *p, int width, int ch, const float *lut, float s)
{
    const __m128 vs = _mm_set1_ps(s), vt = _mm_set1_ps(1.f - s), lo = _mm_setzero_ps();
    const __m128 hi = _mm_set1_ps(255.f), half = _mm_set1_ps(0.5f);
    const __m128 w0 = _mm_set1_ps(0.299f), w1 = _mm_set1_ps(0.587f), w2 = _mm_set1_ps(0.114f);
    int x = 0;
    for (; x + 4 <= width; x += 4, p += 4 * ch) {
        __m128 r = _mm_setr_ps(lut[p[0]], lut[p[ch]], lut[p[2 * ch]], lut[p[3 * ch]]);
        __m128 g = _mm_setr_ps(lut[p[1]], lut[p[ch + 1]], lut[p[2 * ch + 1]], lut[p[3 * ch + 1]]);
        __m128 b = _mm_setr_ps(lut[p[2]], lut[p[ch + 2]], lut[p[2 * ch + 2]], lut[p[3 * ch + 2]]);
        __m128 l = _mm_mul_ps(_mm_add_ps(_mm_add_ps(_mm_mul_ps(w0, r), _mm_mul_ps(w1, g)), _mm_mul_ps(w2, b)), vt);
        __m128 c[3] = {r, g, b};
        for (int k = 0; k < 3; k++) {
            __m128 v = _mm_add_ps(_mm_min_ps(_mm_max_ps(_mm_add_ps(_mm_mul_ps(c[k], vs), l), lo), hi), half);
            int32_t q[4];
            _mm_storeu_si128((__m128i *)q, _mm_cvttps_epi32(v));
            for (int i = 0; i < 4; i++)
                p[i * ch + k] = (uint8_t)q[i];
        }
    }
    return x;
}
#endif
#if FL_NEON
static int saturate_row_neon(uint8_t *p, int width, int ch, const float *lut, float s)
{
    const float32x4_t vs = vdupq_n_f32(s), vt = vdupq_n_f32(1.f - s), lo = vdupq_n_f32(0.f);
    const float32x4_t hi = vdupq_n_f32(255.f), half = vdupq_n_f32(0.5f);
    const float32x4_t w0 = vdupq_n_f32(0.299f), w1 = vdupq_n_f32(0.587f), w2 = vdupq_n_f32(0.114f);
    int x = 0;
    for (; x + 4 <= width; x += 4, p += 4 * ch) {
        float fr[4] = {lut[p[0]], lut[p[ch]], lut[p[2 * ch]], lut[p[3 * ch]]};
        float fg[4] = {lut[p[1]], lut[p[ch + 1]], lut[p[2 * ch + 1]], lut[p[3 * ch + 1]]};
        float fb[4] = {lut[p[2]], lut[p[ch + 2]], lut[p[2 * ch + 2]], lut[p[3 * ch + 2]]};
        float32x4_t c[3] = {vld1q_f32(fr), vld1q_f32(fg), vld1q_f32(fb)};
        /* separate multiplies and adds: a fused vfmaq would round differently */
        float32x4_t l = vmulq_f32(vaddq_f32(vaddq_f32(vmulq_f32(w0, c[0]), vmulq_f32(w1, c[1])),
                                            vmulq_f32(w2, c[2])), vt);
        for (int k = 0; k < 3; k++) {
            float32x4_t v = vaddq_f32(vminq_f32(vmaxq_f32(vaddq_f32(vmulq_f32(c[k], vs), l), lo), hi), half);
            uint32_t q[4];
            vst1q_u32(q, vcvtq_u32_f32(v));
            for (int i = 0; i < 4; i++)
                p[i * ch + k] = (uint8_t)q[i];
        }
    }
    return x;
}
#endif

static void saturate_rgb(const fl_view *img, const float *lut, float s)
{
    const int ch = img->channels;
    const float t = 1.f - s;
    for (int y = 0; y < img->height; y++) {
        uint8_t *p = img->data + y * img->stride;
        int x = 0;
#if FL_X86
        if (fl_simd == FL_SIMD_SSE41)
            x = saturate_row_sse41(p, img->width, ch, lut, s);
#endif
#if FL_NEON
        if (fl_simd == FL_SIMD_NEON)
            x = saturate_row_neon(p, img->width, ch, lut, s);
#endif
        for (p += (size_t)x * ch; x < img->width; x++, p += ch) {
            float r = lut[p[0]], g = lut[p[1]], b = lut[p[2]];
            float l = (0.299f * r + 0.587f * g + 0.114f * b) * t;
            p[0] = to_u8(clamp255(r * s + l));
            p[1] = to_u8(clamp255(g * s + l));
            p[2] = to_u8(clamp255(b * s + l));
        }
    }
}

/* ---- AVX2 path for 3-channel images --------------------------------------
 * The same float operations as the tables above, in the same order, on 8
 * values (or 8 pixels) at a time, chosen at run time. Instead of one pass per
 * step there are at most two: one that only reads (the per-channel sums of
 * the brightness-adjusted values, for the contrast mean) and one that applies
 * brightness, contrast, saturation and the rounding and writes in place.
 *
 * Results equal the scalar path bit for bit:
 *  - The channel sums are exact: in integers (each table value times a power
 *    of two is an integer, see jit_mean_avx2) or, for tables where that
 *    fails, in double, exact while a channel's sum stays below 2^24 and no
 *    non-zero value is below 2^-6. The histogram dot product is exact under
 *    the same conditions (e.g. 224 x 224), so the means agree bit for bit.
 *  - A clamp between two steps is left out only when it cannot change any of
 *    the 256 values that step can produce (checked on the tables).
 *  - The clamp after the last step is done by the saturating packs: with
 *    |y| < 2^30, trunc(y + 0.5) saturated to [0, 255] equals
 *    trunc(clamp(y, 0, 255) + 0.5) (y > 255 gives >= 255, y < 0 gives <= 0). */
#if FL_X86
#define FL_JITTER_AVX2 1
#define FL_AVX2 __attribute__((target("avx2")))
#define FL_AVX2_INLINE __attribute__((target("avx2"), always_inline)) inline

/* Largest factor magnitude taken by this path (keeps |y| < 2^30). */
#define JIT_MAX_FACTOR 1e6f

/* Which operations the second pass does: brightness (and its upper clamp),
 * contrast (and its lower and upper clamps). Only the valid combinations are
 * instantiated. */
enum { JB = 1, JB_MIN = 2, JC = 4, JC_MAX = 8, JC_MIN = 16 };

typedef struct {
    __m256 b, c, m, s, t, lo, hi, half, w0, w1, w2;
} jit_vec;

static FL_AVX2_INLINE __m256 jit_bc(__m256 x, const jit_vec *k, int f)
{
    if (f & JB) {
        x = _mm256_mul_ps(x, k->b);               /* b >= 0: no lower clamp */
        if (f & JB_MIN)
            x = _mm256_min_ps(x, k->hi);
    }
    if (f & JC) {
        x = _mm256_add_ps(_mm256_mul_ps(x, k->c), k->m);
        if (f & JC_MAX)
            x = _mm256_max_ps(x, k->lo);
        if (f & JC_MIN)
            x = _mm256_min_ps(x, k->hi);
    }
    return x;
}

static FL_AVX2_INLINE __m256i jit_round(__m256 x, const jit_vec *k)
{
    return _mm256_cvttps_epi32(_mm256_add_ps(x, k->half));
}

/* Sum of the per-channel sums with the luma weights, as mean_luma. */
static double luma_of_sums(const double *s, const fl_view *img)
{
    double sum = 0.0;
    sum += 0.299 * s[0];
    sum += 0.587 * s[1];
    sum += 0.114 * s[2];
    return sum / ((double)img->width * img->height);
}

/* Mean luma of clamp255(v * b), exactly, in integers: every table value is
 * an integer multiple of 2^-K below 2^(31-K) (checked by the caller), so
 * A = value * 2^K is an exact int32 (computed as v * (b 2^K), clamped to
 * 255 2^K: scaling by a power of two commutes with the rounding). Each lane
 * sums A modulo 2^32 in int32 and approximately in float; every JIT_FLUSH
 * chunks the float sum (off by less than 2^26 there) supplies the multiple
 * of 2^32 the integer sum lost, and the exact lane sum goes into int64. */
#define JIT_FLUSH 1024

FL_AVX2 static void jit_flush(const __m256i *li, const __m256 *fa, uint64_t *st)
{
    for (int k = 0; k < 3; k++) {
        uint32_t l[8];
        float f[8];
        _mm256_storeu_si256((__m256i *)l, li[k]);
        _mm256_storeu_ps(f, fa[k]);
        for (int j = 0; j < 8; j++) {
            double q = nearbyint(((double)f[j] - (double)l[j]) * 0x1p-32);
            st[(8 * k + j) % 3] += (uint64_t)l[j] + ((uint64_t)q << 32);
        }
    }
}

static FL_AVX2_INLINE double jit_mean_int_body(const fl_view *img, float b, int K,
                                               const uint32_t *tab, int clamp)
{
    const __m256 vb = _mm256_set1_ps(ldexpf(b, K)), hi = _mm256_set1_ps(ldexpf(255.f, K));
    __m256i li[3];
    __m256 fa[3];
    for (int k = 0; k < 3; k++) {
        li[k] = _mm256_setzero_si256();
        fa[k] = _mm256_setzero_ps();
    }
    uint64_t st[3] = {0, 0, 0};
    const int n = img->width * 3;
    int count = 0;
    for (int y = 0; y < img->height; y++) {
        const uint8_t *p = img->data + (ptrdiff_t)y * img->stride;
        int i = 0;
        for (; i + 24 <= n; i += 24) {
            for (int k = 0; k < 3; k++) {
                __m128i u = _mm_loadl_epi64((const __m128i *)(p + i + 8 * k));
                __m256 x = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(u)), vb);
                if (clamp)
                    x = _mm256_min_ps(x, hi);
                li[k] = _mm256_add_epi32(li[k], _mm256_cvtps_epi32(x));
                fa[k] = _mm256_add_ps(fa[k], x);
            }
            if (++count == JIT_FLUSH) {
                jit_flush(li, fa, st);
                for (int k = 0; k < 3; k++) {
                    li[k] = _mm256_setzero_si256();
                    fa[k] = _mm256_setzero_ps();
                }
                count = 0;
            }
        }
        for (; i < n; i += 3) {
            st[0] += tab[p[i]];
            st[1] += tab[p[i + 1]];
            st[2] += tab[p[i + 2]];
        }
    }
    jit_flush(li, fa, st);
    double s[3];
    for (int c = 0; c < 3; c++)
        s[c] = ldexp((double)st[c], -K);
    return luma_of_sums(s, img);
}

/* |R| < 2^16 and v < 2^8: int32 lanes take JIT_FLUSH more of each. */
static FL_AVX2_INLINE void jit_flush_res(__m256i *sv, __m256i *sr, int64_t *tv, int64_t *tr)
{
    for (int k = 0; k < 3; k++) {
        int32_t a[8], c[8];
        _mm256_storeu_si256((__m256i *)a, sv[k]);
        _mm256_storeu_si256((__m256i *)c, sr[k]);
        for (int j = 0; j < 8; j++) {
            tv[(8 * k + j) % 3] += a[j];
            tr[(8 * k + j) % 3] += c[j];
        }
        sv[k] = sr[k] = _mm256_setzero_si256();
    }
}

/* Without the clamp, as residuals: with M = b 2^K a 24-bit integer and
 * Mt = M with its low 8 bits cleared, v Mt is exact in float and
 * R = fl(v M) - v Mt is an exact integer below 2^16 in magnitude, so
 * sum(A) = Mt sum(v) + sum(R) with both sums in int32 lanes. */
static FL_AVX2_INLINE double jit_mean_res_body(const fl_view *img, float b, int K, const uint32_t *tab)
{
    const float mf = ldexpf(b, K);
    const uint32_t mt = (uint32_t)mf & ~0xffu;
    const __m256 vm = _mm256_set1_ps(mf), vmt = _mm256_set1_ps((float)mt);
    __m256i sv[3], sr[3];
    for (int k = 0; k < 3; k++)
        sv[k] = sr[k] = _mm256_setzero_si256();
    int64_t tv[3] = {0, 0, 0}, tr[3] = {0, 0, 0};
    uint64_t st[3] = {0, 0, 0};
    const int n = img->width * 3;
    int count = 0;
    for (int y = 0; y < img->height; y++) {
        const uint8_t *p = img->data + (ptrdiff_t)y * img->stride;
        int i = 0;
        for (; i + 24 <= n; i += 24) {
            for (int k = 0; k < 3; k++) {
                __m256i vi = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + i + 8 * k)));
                __m256 v = _mm256_cvtepi32_ps(vi);
                __m256 r = _mm256_sub_ps(_mm256_mul_ps(v, vm), _mm256_mul_ps(v, vmt));
                sr[k] = _mm256_add_epi32(sr[k], _mm256_cvtps_epi32(r));
                sv[k] = _mm256_add_epi32(sv[k], vi);
            }
            if (++count == JIT_FLUSH) {
                jit_flush_res(sv, sr, tv, tr);
                count = 0;
            }
        }
        for (; i < n; i += 3) {
            st[0] += tab[p[i]];
            st[1] += tab[p[i + 1]];
            st[2] += tab[p[i + 2]];
        }
    }
    jit_flush_res(sv, sr, tv, tr);
    double s[3];
    for (int c = 0; c < 3; c++)
        s[c] = ldexp((double)(st[c] + (uint64_t)((int64_t)mt * tv[c] + tr[c])), -K);
    return luma_of_sums(s, img);
}

/* The same in double, for tables the integer form cannot hold: every value
 * is a float in [0, 255], so while a channel's sum stays below 2^24 and no
 * non-zero value is below 2^-6 each partial sum is exact, in any order. */
static FL_AVX2_INLINE double jit_mean_body(const fl_view *img, float b, const float *lut, int clamp)
{
    const __m256 vb = _mm256_set1_ps(b), hi = _mm256_set1_ps(255.f);
    __m256d acc[6];
    for (int k = 0; k < 6; k++)
        acc[k] = _mm256_setzero_pd();
    double s[3] = {0.0, 0.0, 0.0};
    const int n = img->width * 3;
    for (int y = 0; y < img->height; y++) {
        const uint8_t *p = img->data + (ptrdiff_t)y * img->stride;
        int i = 0;
        for (; i + 24 <= n; i += 24)
            for (int k = 0; k < 3; k++) {
                __m128i u = _mm_loadl_epi64((const __m128i *)(p + i + 8 * k));
                __m256 x = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(u)), vb);
                if (clamp)
                    x = _mm256_min_ps(x, hi);
                acc[2 * k] = _mm256_add_pd(acc[2 * k], _mm256_cvtps_pd(_mm256_castps256_ps128(x)));
                acc[2 * k + 1] = _mm256_add_pd(acc[2 * k + 1], _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
            }
        for (; i < n; i += 3) {
            s[0] += lut[p[i]];
            s[1] += lut[p[i + 1]];
            s[2] += lut[p[i + 2]];
        }
    }
    for (int k = 0; k < 6; k++) {
        double lanes[4];
        _mm256_storeu_pd(lanes, acc[k]);
        for (int j = 0; j < 4; j++)
            s[(4 * k + j) % 3] += lanes[j];   /* byte 8 * (k / 2) + 4 * (k % 2) + j */
    }
    return luma_of_sums(s, img);
}

/* Mean luma of lut[img] where lut[v] = clamp255(v * b). */
FL_AVX2 static double jit_mean_avx2(const fl_view *img, float b, const float *lut, int clamp)
{
    /* K makes b 2^K an integer in [2^23, 2^24); every other value's steps are
     * at least as coarse, so each lut[v] 2^K is an integer below 2^32 (below
     * 2^31 with the clamp, which needs b > 1). Checked on the table all the
     * same; anything else (tiny b) takes the double sums. */
    int e = 0, K = 0, ok = b > 0.f;
    if (ok) {
        frexpf(b, &e);
        K = 24 - e;
        ok = K > -100 && K < 100;
    }
    uint32_t tab[256];
    const double lim = clamp ? 2147483648.0 : 4294967296.0;
    for (int v = 0; v < 256 && ok; v++) {
        double a = ldexp((double)lut[v], K);
        ok = a == floor(a) && a < lim;
        tab[v] = ok ? (uint32_t)a : 0;
    }
    if (ok && clamp)
        return jit_mean_int_body(img, b, K, tab, 1);
    if (ok)
        return jit_mean_res_body(img, b, K, tab);
    return clamp ? jit_mean_body(img, b, lut, 1) : jit_mean_body(img, b, lut, 0);
}

/* No saturation: every value independently, 32 at a time; the last step's
 * clamp is the packs'. */
static FL_AVX2_INLINE void jit_values_body(const fl_view *img, const jit_vec *k,
                                           const uint8_t *lut8, int f)
{
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const int n = img->width * 3;
    for (int y = 0; y < img->height; y++) {
        uint8_t *p = img->data + (ptrdiff_t)y * img->stride;
        int i = 0;
        for (; i + 32 <= n; i += 32) {
            __m256i q[4];
            for (int j = 0; j < 4; j++) {
                __m128i u = _mm_loadl_epi64((const __m128i *)(p + i + 8 * j));
                __m256 x = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(u));
                q[j] = jit_round(jit_bc(x, k, f), k);
            }
            __m256i o = _mm256_packus_epi16(_mm256_packs_epi32(q[0], q[1]),
                                            _mm256_packs_epi32(q[2], q[3]));
            _mm256_storeu_si256((__m256i *)(p + i), _mm256_permutevar8x32_epi32(o, order));
        }
        for (; i < n; i++)
            p[i] = lut8[p[i]];
    }
}

FL_AVX2 static void jit_values_avx2(const fl_view *img, const jit_vec *k, const uint8_t *lut8, int f)
{
    switch (f) {
    case JB:              jit_values_body(img, k, lut8, JB); break;
    case JB | JC:         jit_values_body(img, k, lut8, JB | JC); break;
    case JB | JB_MIN | JC: jit_values_body(img, k, lut8, JB | JB_MIN | JC); break;
    default:              jit_values_body(img, k, lut8, JC); break;
    }
}

#define FL_SHUF(i) ((int)(0x80808000u | (unsigned)(i)))

/* With saturation, 8 pixels at a time: the 24 bytes are split into R, G and
 * B lanes of 8 int32 by byte shuffles (low half from p[0..15], high half
 * from p[8..23]) and packed back the same way. */
static FL_AVX2_INLINE void jit_rgb_body(const fl_view *img, const jit_vec *k, const float *lut,
                                        float s, int f)
{
    const __m256i mr = _mm256_setr_epi32(FL_SHUF(0), FL_SHUF(3), FL_SHUF(6), FL_SHUF(9),
                                         FL_SHUF(4), FL_SHUF(7), FL_SHUF(10), FL_SHUF(13));
    const __m256i mg = _mm256_setr_epi32(FL_SHUF(1), FL_SHUF(4), FL_SHUF(7), FL_SHUF(10),
                                         FL_SHUF(5), FL_SHUF(8), FL_SHUF(11), FL_SHUF(14));
    const __m256i mb = _mm256_setr_epi32(FL_SHUF(2), FL_SHUF(5), FL_SHUF(8), FL_SHUF(11),
                                         FL_SHUF(6), FL_SHUF(9), FL_SHUF(12), FL_SHUF(15));
    /* each 128-bit lane after packing: r0..r3 g0..g3 b0..b3 b0..b3 */
    const __m256i inter = _mm256_setr_epi8(0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11, 12, 13, 14, 15,
                                           0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11, 12, 13, 14, 15);
    const __m256i order = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7);
    const float t = 1.f - s;
    const int w = img->width;
    for (int y = 0; y < img->height; y++) {
        uint8_t *p = img->data + (ptrdiff_t)y * img->stride;
        int x = 0;
        for (; x + 8 <= w; x += 8, p += 24) {
            __m256i v = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p)),
                _mm_loadu_si128((const __m128i *)(p + 8)), 1);
            __m256 r = jit_bc(_mm256_cvtepi32_ps(_mm256_shuffle_epi8(v, mr)), k, f);
            __m256 g = jit_bc(_mm256_cvtepi32_ps(_mm256_shuffle_epi8(v, mg)), k, f);
            __m256 b = jit_bc(_mm256_cvtepi32_ps(_mm256_shuffle_epi8(v, mb)), k, f);
            __m256 l = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(k->w0, r), _mm256_mul_ps(k->w1, g)),
                                     _mm256_mul_ps(k->w2, b));
            l = _mm256_mul_ps(l, k->t);
            __m256i bi = jit_round(_mm256_add_ps(_mm256_mul_ps(b, k->s), l), k);
            __m256i o = _mm256_packus_epi16(
                _mm256_packs_epi32(jit_round(_mm256_add_ps(_mm256_mul_ps(r, k->s), l), k),
                                   jit_round(_mm256_add_ps(_mm256_mul_ps(g, k->s), l), k)),
                _mm256_packs_epi32(bi, bi));
            o = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(o, inter), order);
            _mm_storeu_si128((__m128i *)p, _mm256_castsi256_si128(o));
            _mm_storel_epi64((__m128i *)(p + 16), _mm256_extracti128_si256(o, 1));
        }
        for (; x < w; x++, p += 3) {
            float r = lut[p[0]], g = lut[p[1]], b = lut[p[2]];
            float l = (0.299f * r + 0.587f * g + 0.114f * b) * t;
            p[0] = to_u8(clamp255(r * s + l));
            p[1] = to_u8(clamp255(g * s + l));
            p[2] = to_u8(clamp255(b * s + l));
        }
    }
}

#define JIT_RGB_CASE(F) case (F): jit_rgb_body(img, k, lut, s, (F)); break;
#define JIT_RGB_CCASES(B) \
    JIT_RGB_CASE(B) JIT_RGB_CASE((B) | JC) JIT_RGB_CASE((B) | JC | JC_MAX) \
    JIT_RGB_CASE((B) | JC | JC_MIN) JIT_RGB_CASE((B) | JC | JC_MAX | JC_MIN)

FL_AVX2 static void jit_rgb_avx2(const fl_view *img, const jit_vec *k, const float *lut, float s, int f)
{
    switch (f) {
    JIT_RGB_CCASES(0)
    JIT_RGB_CCASES(JB)
    JIT_RGB_CCASES(JB | JB_MIN)
    default: break;
    }
}

/* Whole jitter of a 3-channel image with 0 <= brightness and all factors
 * finite and at most JIT_MAX_FACTOR in magnitude. */
FL_AVX2 static void color_jitter_avx2(fl_view *img, float brightness, float contrast, float saturation)
{
    const int do_b = brightness != 1.f, do_c = contrast != 1.f, do_s = saturation != 1.f;
    float lut[256];
    int bmin = 0;
    for (int v = 0; v < 256; v++) {
        float x = (float)v * brightness;
        bmin |= x > 255.f;
        lut[v] = clamp255(x);
    }
    float m = 0.f;
    int cmax = 0, cmin = 0;
    if (do_c) {
        m = (float)jit_mean_avx2(img, brightness, lut, bmin) * (1.f - contrast);
        for (int v = 0; v < 256; v++) {
            float x = lut[v] * contrast + m;
            cmax |= x < 0.f;
            cmin |= x > 255.f;
            lut[v] = clamp255(x);
        }
    }
    jit_vec k;
    k.b = _mm256_set1_ps(brightness);
    k.c = _mm256_set1_ps(contrast);
    k.m = _mm256_set1_ps(m);
    k.s = _mm256_set1_ps(saturation);
    k.t = _mm256_set1_ps(1.f - saturation);
    k.lo = _mm256_setzero_ps();
    k.hi = _mm256_set1_ps(255.f);
    k.half = _mm256_set1_ps(0.5f);
    k.w0 = _mm256_set1_ps(0.299f);
    k.w1 = _mm256_set1_ps(0.587f);
    k.w2 = _mm256_set1_ps(0.114f);
    int f = (do_b ? JB : 0) | (do_c ? JC : 0);
    if (do_s) {
        /* every clamp before the last step that can bite */
        f |= (do_b && bmin ? JB_MIN : 0) | (cmax ? JC_MAX : 0) | (cmin ? JC_MIN : 0);
        jit_rgb_avx2(img, &k, lut, saturation, f);
    } else {
        /* contrast (or brightness alone) is the last step */
        f |= (do_b && do_c && bmin ? JB_MIN : 0);
        uint8_t lut8[256];
        for (int v = 0; v < 256; v++)
            lut8[v] = to_u8(lut[v]);
        jit_values_avx2(img, &k, lut8, f);
    }
}
#else
#define FL_JITTER_AVX2 0
#endif


void fl_color_jitter(fl_view *img, float brightness, float contrast, float saturation)
{
    if (!img || !img->data || img->width <= 0 || img->height <= 0 || img->channels <= 0)
        return;
    /* Colour channels: RGB(A) -> 3, grey(+alpha) -> 1; alpha is left alone. */
    const int ncolor = img->channels >= 3 ? 3 : 1;
    const int do_sat = saturation != 1.f && ncolor == 3;
    if (brightness == 1.f && contrast == 1.f && !do_sat)
        return;
#if FL_JITTER_AVX2
    /* 3-channel fast path; needs brightness >= 0 (no lower clamp after it)
     * and bounded factors (NaN fails the comparisons), else the tables below. */
    if (img->channels == 3 && brightness >= 0.f && brightness <= JIT_MAX_FACTOR
        && contrast >= -JIT_MAX_FACTOR && contrast <= JIT_MAX_FACTOR
        && saturation >= -JIT_MAX_FACTOR && saturation <= JIT_MAX_FACTOR
        && fl_simd == FL_SIMD_AVX2) {
        color_jitter_avx2(img, brightness, contrast, saturation);
        return;
    }
#endif

    /* Brightness and contrast act on each value independently: one float
     * table of 256 entries holds both (clamped after each step). */
    float lut[256];
    for (int v = 0; v < 256; v++)
        lut[v] = clamp255((float)v * brightness);
    if (contrast != 1.f) {
        float m = (float)mean_luma(img, ncolor, lut) * (1.f - contrast);
        for (int v = 0; v < 256; v++)
            lut[v] = clamp255(lut[v] * contrast + m);
    }
    if (do_sat) {
        saturate_rgb(img, lut, saturation);
        return;
    }
    uint8_t lut8[256];
    for (int v = 0; v < 256; v++)
        lut8[v] = to_u8(lut[v]);
    const int ch = img->channels;
    for (int y = 0; y < img->height; y++) {
        uint8_t *p = img->data + y * img->stride;
        if (ch == 3)
            for (int x = 0; x < img->width * 3; x++)
                p[x] = lut8[p[x]];
        else
            for (int x = 0; x < img->width; x++, p += ch)
                for (int c = 0; c < ncolor; c++)
                    p[c] = lut8[p[c]];
    }
}

/* ---- hue ----------------------------------------------------------------- */

void fl_adjust_hue(fl_view *img, float factor)
{
    if (!img || !img->data || img->channels < 3 || factor == 0.f)
        return;
    const int ch = img->channels;
    for (int y = 0; y < img->height; y++) {
        uint8_t *p = img->data + y * img->stride;
        for (int x = 0; x < img->width; x++, p += ch) {
            float r = p[0] / 255.f, g = p[1] / 255.f, b = p[2] / 255.f;
            float maxc = fmaxf(r, fmaxf(g, b)), minc = fminf(r, fminf(g, b));
            if (maxc == minc)
                continue;   /* grey: no hue to turn */
            float cr = maxc - minc, s = cr / maxc;
            float rc = (maxc - r) / cr, gc = (maxc - g) / cr, bc = (maxc - b) / cr;
            float h = maxc == r ? bc - gc : maxc == g ? 2.f + rc - bc : 4.f + gc - rc;
            h = fmodf(h / 6.f + 1.f, 1.f);
            h = fmodf(h + factor + 1.f, 1.f);
            float i = floorf(h * 6.f), f = h * 6.f - i, v = maxc;
            float pp = fminf(fmaxf(v * (1.f - s), 0.f), 1.f);
            float q = fminf(fmaxf(v * (1.f - s * f), 0.f), 1.f);
            float t = fminf(fmaxf(v * (1.f - s * (1.f - f)), 0.f), 1.f);
            float o[3];
            switch ((int)i % 6) {
            case 0: o[0] = v; o[1] = t; o[2] = pp; break;
            case 1: o[0] = q; o[1] = v; o[2] = pp; break;
            case 2: o[0] = pp; o[1] = v; o[2] = t; break;
            case 3: o[0] = pp; o[1] = q; o[2] = v; break;
            case 4: o[0] = t; o[1] = pp; o[2] = v; break;
            default: o[0] = v; o[1] = pp; o[2] = q; break;
            }
            for (int c = 0; c < 3; c++)
                p[c] = to_u8(clamp255(o[c] * 255.f));
        }
    }
}

/* ---- write into the batch slot ------------------------------------------ */

/* Output pixel (i, j) reads source pixel at byte offset o00 + i*di + j*dj:
 * the rotation and flips are an affine map of indices, so they fold into a
 * start offset and two signed steps and the loops below never branch on them. */
typedef struct {
    const uint8_t *s0;
    ptrdiff_t di, dj;
    int oh, ow, nch;
    const int *perm;
} walk;

#define DEFINE_WRITE(NAME, T)                                                   \
static void NAME(const walk *w, const T *lut, T *out, int layout)              \
{                                                                               \
    const int oh = w->oh, ow = w->ow, nch = w->nch;                            \
    const ptrdiff_t di = w->di, dj = w->dj;                                    \
    if (layout == FL_NCHW && nch == 3) {                                        \
        const size_t plane = (size_t)oh * ow;                                  \
        const T *l0 = lut, *l1 = lut + 256, *l2 = lut + 512;                    \
        const int p0 = w->perm[0], p1 = w->perm[1], p2 = w->perm[2];           \
        for (int i = 0; i < oh; i++) {                                          \
            const uint8_t *s = w->s0 + i * di;                                  \
            T *o0 = out + (size_t)i * ow, *o1 = o0 + plane, *o2 = o1 + plane;   \
            for (int j = 0; j < ow; j++, s += dj) {                             \
                o0[j] = l0[s[p0]]; o1[j] = l1[s[p1]]; o2[j] = l2[s[p2]];        \
            }                                                                   \
        }                                                                       \
    } else if (layout == FL_NCHW) {                                             \
        const size_t plane = (size_t)oh * ow;                                  \
        for (int c = 0; c < nch; c++) {                                         \
            const T *l = lut + 256 * c;                                         \
            const int pc = w->perm[c];                                          \
            for (int i = 0; i < oh; i++) {                                      \
                const uint8_t *s = w->s0 + i * di + pc;                         \
                T *o = out + c * plane + (size_t)i * ow;                        \
                for (int j = 0; j < ow; j++, s += dj)                           \
                    o[j] = l[*s];                                               \
            }                                                                   \
        }                                                                       \
    } else if (nch == 3) {                                                      \
        const T *l0 = lut, *l1 = lut + 256, *l2 = lut + 512;                    \
        const int p0 = w->perm[0], p1 = w->perm[1], p2 = w->perm[2];           \
        for (int i = 0; i < oh; i++) {                                          \
            const uint8_t *s = w->s0 + i * di;                                  \
            T *o = out + (size_t)i * ow * 3;                                    \
            for (int j = 0; j < ow; j++, s += dj, o += 3) {                     \
                o[0] = l0[s[p0]]; o[1] = l1[s[p1]]; o[2] = l2[s[p2]];           \
            }                                                                   \
        }                                                                       \
    } else {                                                                    \
        for (int i = 0; i < oh; i++) {                                          \
            const uint8_t *s = w->s0 + i * di;                                  \
            T *o = out + (size_t)i * ow * nch;                                  \
            for (int j = 0; j < ow; j++, s += dj, o += nch)                     \
                for (int c = 0; c < nch; c++)                                   \
                    o[c] = lut[256 * c + s[w->perm[c]]];                        \
        }                                                                       \
    }                                                                           \
}

DEFINE_WRITE(write_u8, uint8_t)
DEFINE_WRITE(write_u16, uint16_t)
DEFINE_WRITE(write_u32, uint32_t)

/* Source byte offset of output pixel (i, j); valid for any integers, so it
 * also yields the steps when the output is a single row or column. */
static ptrdiff_t src_offset(const fl_view *src, int k, int hflip, int vflip,
                            int oh, int ow, ptrdiff_t i, ptrdiff_t j)
{
    if (vflip) i = oh - 1 - i;
    if (hflip) j = ow - 1 - j;
    ptrdiff_t y, x;
    switch (k) {   /* inverse of np.rot90(img, k) */
    case 0: y = i; x = j; break;
    case 1: y = j; x = src->width - 1 - i; break;
    case 2: y = src->height - 1 - i; x = src->width - 1 - j; break;
    default: y = src->height - 1 - j; x = i; break;
    }
    return y * src->stride + x * src->channels;
}

/* NHWC uint8 with identity tables and no rotation or mirror: plain row copies. */
static int is_plain_copy(const fl_view *src, int k, int hflip, const int *perm,
                         const uint8_t *lut, const fl_out *out)
{
    if (out->dtype != FL_U8 || out->layout != FL_NHWC || k != 0 || hflip ||
        out->channels != src->channels)
        return 0;
    for (int c = 0; c < out->channels; c++) {
        if (perm[c] != c)
            return 0;
        for (int v = 0; v < 256; v++)
            if (lut[256 * c + v] != v)
                return 0;
    }
    return 1;
}

int fl_write_sample(const fl_view *src, int rot90, int hflip, int vflip,
                    const int *perm, const void *lut, fl_out *out)
{
    if (!src || !src->data || src->width <= 0 || src->height <= 0 || src->channels <= 0 ||
        src->stride < (ptrdiff_t)src->width * src->channels || !perm || !lut || !out ||
        !out->data || out->channels <= 0 || (out->layout != FL_NCHW && out->layout != FL_NHWC))
        return FL_ERR_ARG;
    const int k = ((rot90 % 4) + 4) % 4;
    const int oh = k & 1 ? src->width : src->height;
    const int ow = k & 1 ? src->height : src->width;
    if (out->height != oh || out->width != ow)
        return FL_ERR_ARG;
    for (int c = 0; c < out->channels; c++)
        if (perm[c] < 0 || perm[c] >= src->channels)
            return FL_ERR_ARG;

    ptrdiff_t o00 = src_offset(src, k, hflip, vflip, oh, ow, 0, 0);
    walk w;
    w.s0 = src->data + o00;
    w.di = src_offset(src, k, hflip, vflip, oh, ow, 1, 0) - o00;
    w.dj = src_offset(src, k, hflip, vflip, oh, ow, 0, 1) - o00;
    w.oh = oh; w.ow = ow; w.nch = out->channels; w.perm = perm;

    switch (out->dtype) {
    case FL_U8:
        if (is_plain_copy(src, k, hflip, perm, (const uint8_t *)lut, out)) {
            size_t row = (size_t)ow * out->channels;
            for (int i = 0; i < oh; i++)
                memcpy((uint8_t *)out->data + i * row, w.s0 + i * w.di, row);
        } else {
            write_u8(&w, (const uint8_t *)lut, (uint8_t *)out->data, out->layout);
        }
        return FL_OK;
    case FL_F16:   /* half values are copied as their bit patterns */
        write_u16(&w, (const uint16_t *)lut, (uint16_t *)out->data, out->layout);
        return FL_OK;
    case FL_F32:
        write_u32(&w, (const uint32_t *)lut, (uint32_t *)out->data, out->layout);
        return FL_OK;
    default:
        return FL_ERR_ARG;
    }
}
