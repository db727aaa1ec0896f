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
FL_TARGET("sse4.1")
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
#define FL_AVX2 FL_TARGET("avx2")
#define FL_AVX2_INLINE FL_TARGET("avx2") FL_INLINE

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

/* One pixel's hue turned by factor (of a full turn), through HSV in float as
 * torchvision's tensor adjust_hue does. */
static inline void hue_pixel(uint8_t *p, float factor)
{
    float r = p[0] / 255.f, g = p[1] / 255.f, b = p[2] / 255.f;
    float maxc = fmaxf(r, fmaxf(g, b)), minc = fminf(r, fminf(g, b));
    if (maxc == minc)
        return;   /* grey: no hue to turn */
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

/* A vector path's hue turn: HUE_BLOCK(in, out, factor) turns LANES pixels,
 * gathered as v / 255.f (as hue_pixel divides), and returns the mask of the
 * grey ones (lane k: bit k), which it need not turn (their lanes divide by
 * zero) and which are not stored; a row's last few go to hue_pixel. A macro,
 * as WV_KERNEL, so that the block inlines under the path's target. */
#define HUE_ROWS(ATTR, NAME, LANES, HUE_BLOCK)                                               \
    ATTR static void NAME(fl_view *img, float factor)                                      \
    {                                                                                       \
        const int ch = img->channels;                                                       \
        float unit[256];                                                                    \
        for (int v = 0; v < 256; v++)                                                       \
            unit[v] = v / 255.f;                                                            \
        for (int y = 0; y < img->height; y++) {                                             \
            uint8_t *row = img->data + y * img->stride;                                     \
            int x = 0;                                                                      \
            for (; x + (LANES) <= img->width; x += (LANES)) {                               \
                uint8_t *p = row + (size_t)x * ch;                                          \
                _Alignas(32) float in[3][LANES];                                            \
                _Alignas(32) int32_t out[3][LANES];                                         \
                for (int k = 0; k < (LANES); k++)                                           \
                    for (int c = 0; c < 3; c++)                                             \
                        in[c][k] = unit[p[k * ch + c]];                                     \
                const unsigned grey = HUE_BLOCK(in, out, factor);                           \
                for (int k = 0; k < (LANES); k++)                                           \
                    if (!(grey >> k & 1))                                                   \
                        for (int c = 0; c < 3; c++)                                         \
                            p[k * ch + c] = (uint8_t)out[c][k];                             \
            }                                                                               \
            for (; x < img->width; x++)                                                     \
                hue_pixel(row + (size_t)x * ch, factor);                                    \
        }                                                                                   \
    }

#if FL_JITTER_AVX2
static FL_AVX2_INLINE __m256 hue_clamp01(__m256 x)
{
    return _mm256_min_ps(_mm256_max_ps(x, _mm256_setzero_ps()), _mm256_set1_ps(1.f));
}

/* hue_pixel on eight pixels at a time, with the same float operations in the
 * same order (separate multiplies and adds, never fused), so the same bytes.
 * The two fmodf(x, 1) become x - floor(x), exact where they are used: h / 6 + 1
 * lies in [5/6, 11/6] and h + factor + 1 in [0.5, 2.5) for |factor| <= 0.5, and
 * x - 1 on [1, 2), x - 2 on [2, 2.5) are exact (Sterbenz). */
static FL_AVX2_INLINE unsigned hue_avx2(const float in[3][8], int32_t out[3][8], float factor)
{
    const __m256 k255 = _mm256_set1_ps(255.f), one = _mm256_set1_ps(1.f), six = _mm256_set1_ps(6.f);
    const __m256 two = _mm256_set1_ps(2.f), four = _mm256_set1_ps(4.f), half = _mm256_set1_ps(0.5f);
    const __m256 r = _mm256_load_ps(in[0]), g = _mm256_load_ps(in[1]), b = _mm256_load_ps(in[2]);
    const __m256 maxc = _mm256_max_ps(r, _mm256_max_ps(g, b)), minc = _mm256_min_ps(r, _mm256_min_ps(g, b));
    const unsigned grey = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(maxc, minc, _CMP_EQ_OQ));
    if (grey == 0xFF)
        return grey;
    const __m256 cr = _mm256_sub_ps(maxc, minc), s = _mm256_div_ps(cr, maxc);
    const __m256 rc = _mm256_div_ps(_mm256_sub_ps(maxc, r), cr);
    const __m256 gc = _mm256_div_ps(_mm256_sub_ps(maxc, g), cr);
    const __m256 bc = _mm256_div_ps(_mm256_sub_ps(maxc, b), cr);
    __m256 h = _mm256_sub_ps(_mm256_add_ps(four, gc), rc);
    h = _mm256_blendv_ps(h, _mm256_sub_ps(_mm256_add_ps(two, rc), bc), _mm256_cmp_ps(maxc, g, _CMP_EQ_OQ));
    h = _mm256_blendv_ps(h, _mm256_sub_ps(bc, gc), _mm256_cmp_ps(maxc, r, _CMP_EQ_OQ));
    h = _mm256_add_ps(_mm256_div_ps(h, six), one);
    h = _mm256_sub_ps(h, _mm256_floor_ps(h));
    h = _mm256_add_ps(_mm256_add_ps(h, _mm256_set1_ps(factor)), one);
    h = _mm256_sub_ps(h, _mm256_floor_ps(h));
    const __m256 h6 = _mm256_mul_ps(h, six), i = _mm256_floor_ps(h6), f = _mm256_sub_ps(h6, i), v = maxc;
    const __m256 pp = hue_clamp01(_mm256_mul_ps(v, _mm256_sub_ps(one, s)));
    const __m256 q = hue_clamp01(_mm256_mul_ps(v, _mm256_sub_ps(one, _mm256_mul_ps(s, f))));
    const __m256 t = hue_clamp01(_mm256_mul_ps(v, _mm256_sub_ps(one, _mm256_mul_ps(s, _mm256_sub_ps(one, f)))));
    /* sector (int)i % 6: i is 0..6, 6 when h * 6 rounds up to 6 */
    __m256i sec = _mm256_cvttps_epi32(i);
    sec = _mm256_andnot_si256(_mm256_cmpeq_epi32(sec, _mm256_set1_epi32(6)), sec);
#define SEC(k) _mm256_castsi256_ps(_mm256_cmpeq_epi32(sec, _mm256_set1_epi32(k)))
    const __m256 s1 = SEC(1), s2 = SEC(2), s3 = SEC(3), s4 = SEC(4), s5 = SEC(5);
#undef SEC
    /* sectors 0..5: R = v q pp pp t v, G = t v v q pp pp, B = pp pp t v v q */
    __m256 o0 = v, o1 = t, o2 = pp;
    o0 = _mm256_blendv_ps(o0, q, s1);
    o0 = _mm256_blendv_ps(o0, pp, _mm256_or_ps(s2, s3));
    o0 = _mm256_blendv_ps(o0, t, s4);
    o1 = _mm256_blendv_ps(o1, v, _mm256_or_ps(s1, s2));
    o1 = _mm256_blendv_ps(o1, q, s3);
    o1 = _mm256_blendv_ps(o1, pp, _mm256_or_ps(s4, s5));
    o2 = _mm256_blendv_ps(o2, t, s2);
    o2 = _mm256_blendv_ps(o2, v, _mm256_or_ps(s3, s4));
    o2 = _mm256_blendv_ps(o2, q, s5);
    const __m256 o[3] = {o0, o1, o2};
    for (int c = 0; c < 3; c++) {
        __m256 w = _mm256_mul_ps(o[c], k255);
        w = _mm256_min_ps(_mm256_max_ps(w, _mm256_setzero_ps()), k255);
        _mm256_store_si256((__m256i *)out[c], _mm256_cvttps_epi32(_mm256_add_ps(w, half)));
    }
    return grey;
}

HUE_ROWS(FL_AVX2, hue_rows_avx2, 8, hue_avx2)
#endif

#if FL_NEON
static inline float32x4_t hue_clamp01_neon(float32x4_t x)
{
    return vminq_f32(vmaxq_f32(x, vdupq_n_f32(0.f)), vdupq_n_f32(1.f));
}

/* hue_avx2 in four lanes: the same operations in the same order, never fused
 * (vfmaq would round differently), so the same bytes as hue_pixel. */
static inline unsigned hue_neon(const float in[3][4], int32_t out[3][4], float factor)
{
    const float32x4_t k255 = vdupq_n_f32(255.f), one = vdupq_n_f32(1.f), six = vdupq_n_f32(6.f);
    const float32x4_t two = vdupq_n_f32(2.f), four = vdupq_n_f32(4.f), half = vdupq_n_f32(0.5f);
    const float32x4_t zero = vdupq_n_f32(0.f);
    const float32x4_t r = vld1q_f32(in[0]), g = vld1q_f32(in[1]), b = vld1q_f32(in[2]);
    const float32x4_t maxc = vmaxq_f32(r, vmaxq_f32(g, b)), minc = vminq_f32(r, vminq_f32(g, b));
    uint32_t eq[4];
    vst1q_u32(eq, vceqq_f32(maxc, minc));
    const unsigned grey = (eq[0] & 1) | (eq[1] & 2) | (eq[2] & 4) | (eq[3] & 8);
    if (grey == 0xF)
        return grey;
    const float32x4_t cr = vsubq_f32(maxc, minc), s = vdivq_f32(cr, maxc);
    const float32x4_t rc = vdivq_f32(vsubq_f32(maxc, r), cr);
    const float32x4_t gc = vdivq_f32(vsubq_f32(maxc, g), cr);
    const float32x4_t bc = vdivq_f32(vsubq_f32(maxc, b), cr);
    float32x4_t h = vsubq_f32(vaddq_f32(four, gc), rc);
    h = vbslq_f32(vceqq_f32(maxc, g), vsubq_f32(vaddq_f32(two, rc), bc), h);
    h = vbslq_f32(vceqq_f32(maxc, r), vsubq_f32(bc, gc), h);
    h = vaddq_f32(vdivq_f32(h, six), one);
    h = vsubq_f32(h, vrndmq_f32(h));
    h = vaddq_f32(vaddq_f32(h, vdupq_n_f32(factor)), one);
    h = vsubq_f32(h, vrndmq_f32(h));
    const float32x4_t h6 = vmulq_f32(h, six), i = vrndmq_f32(h6), f = vsubq_f32(h6, i), v = maxc;
    const float32x4_t pp = hue_clamp01_neon(vmulq_f32(v, vsubq_f32(one, s)));
    const float32x4_t q = hue_clamp01_neon(vmulq_f32(v, vsubq_f32(one, vmulq_f32(s, f))));
    const float32x4_t t = hue_clamp01_neon(vmulq_f32(v, vsubq_f32(one, vmulq_f32(s, vsubq_f32(one, f)))));
    /* sector (int)i % 6: i is 0..6, 6 when h * 6 rounds up to 6 (no lane compares equal to 6) */
    const int32x4_t sec = vcvtq_s32_f32(i);
    const uint32x4_t s1 = vceqq_s32(sec, vdupq_n_s32(1)), s2 = vceqq_s32(sec, vdupq_n_s32(2));
    const uint32x4_t s3 = vceqq_s32(sec, vdupq_n_s32(3)), s4 = vceqq_s32(sec, vdupq_n_s32(4));
    const uint32x4_t s5 = vceqq_s32(sec, vdupq_n_s32(5));
    /* sectors 0..5: R = v q pp pp t v, G = t v v q pp pp, B = pp pp t v v q */
    float32x4_t o0 = v, o1 = t, o2 = pp;
    o0 = vbslq_f32(s1, q, o0);
    o0 = vbslq_f32(vorrq_u32(s2, s3), pp, o0);
    o0 = vbslq_f32(s4, t, o0);
    o1 = vbslq_f32(vorrq_u32(s1, s2), v, o1);
    o1 = vbslq_f32(s3, q, o1);
    o1 = vbslq_f32(vorrq_u32(s4, s5), pp, o1);
    o2 = vbslq_f32(s2, t, o2);
    o2 = vbslq_f32(vorrq_u32(s3, s4), v, o2);
    o2 = vbslq_f32(s5, q, o2);
    const float32x4_t o[3] = {o0, o1, o2};
    for (int c = 0; c < 3; c++) {
        const float32x4_t w = vminq_f32(vmaxq_f32(vmulq_f32(o[c], k255), zero), k255);
        vst1q_s32(out[c], vcvtq_s32_f32(vaddq_f32(w, half)));
    }
    return grey;
}

HUE_ROWS(, hue_rows_neon, 4, hue_neon)
#endif

void fl_adjust_hue(fl_view *img, float factor)
{
    if (!img || !img->data || img->channels < 3 || factor == 0.f)
        return;
#if FL_JITTER_AVX2
    if (fl_simd == FL_SIMD_AVX2 && factor >= -0.5f && factor <= 0.5f) {   /* see hue_avx2 */
        hue_rows_avx2(img, factor);
        return;
    }
#endif
#if FL_NEON
    if (fl_simd == FL_SIMD_NEON && factor >= -0.5f && factor <= 0.5f) {   /* see hue_avx2 */
        hue_rows_neon(img, factor);
        return;
    }
#endif
    const int ch = img->channels;
    for (int y = 0; y < img->height; y++) {
        uint8_t *p = img->data + y * img->stride;
        for (int x = 0; x < img->width; x++, p += ch)
            hue_pixel(p, factor);
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

/* Whether every channel's uint8 table maps each value to itself. */
static int is_identity(const uint8_t *lut, int nch)
{
    for (int c = 0; c < nch; c++)
        for (int v = 0; v < 256; v++)
            if (lut[256 * c + v] != v)
                return 0;
    return 1;
}

/* NHWC uint8 with identity tables and no rotation or mirror: plain row copies. */
static int is_plain_copy(const fl_view *src, int k, int hflip, const int *perm,
                         const uint8_t *lut, const fl_out *out)
{
    if (out->dtype != FL_U8 || out->layout != FL_NHWC || k != 0 || hflip ||
        out->channels != src->channels)
        return 0;
    for (int c = 0; c < out->channels; c++)
        if (perm[c] != c)
            return 0;
    return is_identity(lut, out->channels);
}

/* ---- vector paths of the write -------------------------------------------
 * Taken when the row walk is contiguous (dj = +-channels: no rotation or a
 * half turn, any flips; the output of RandomResizedCrop + flips), the
 * source has 2 to 4 channels, the output 1 to 4 and at least 8 columns;
 * other walks (quarter turns) take the portable loops above.
 *
 * A row is written in blocks of 8 output pixels; when the width is not a
 * multiple of 8 the last block overlaps the one before and writes the same
 * values again. A block's output is `nv` vectors of 8 elements: one per
 * channel (NCHW), or the block's interleaved elements in order (NHWC). Each
 * half vector (4 elements) takes its source bytes from one 16-byte window
 * of the block's 8 x channels source bytes through a byte shuffle (pshufb,
 * or tbl on NEON) that also applies the channel permutation and the
 * reversal of a mirror. wv_init works out the windows and shuffles.
 *
 * The values, bit for bit those of the tables:
 *  - uint8 only with identity tables (raw pixels): the shuffles are the
 *    whole write.
 *  - float32, and float16 where the vector unit converts to half (AVX2 with
 *    F16C, NEON; a conversion in SSE4.1 integer arithmetic was measured
 *    slower than the portable loops), when each channel's table is
 *    reproduced exactly by
 *        u = v - v0,  r = (u * a1 + c1) + (u * a2 + c2)
 *    in float (separate multiplies and adds, never fused; then rounded to
 *    half, to nearest even, for float16), where a1 and c1 lie on a
 *    power-of-two grid coarse enough that u * a1 + c1 is exact (an integer
 *    below 2^24 times the grid) and a2, c2 are what is left of the slope
 *    and offset. The sum keeps about twice float's precision until its last
 *    rounding, so tables computed in double (make_lut: (v / max - mean) /
 *    std, rounded once) come out exactly: wv_fit finds a slope and offset
 *    inside every entry's rounding interval, and the path's own kernel is
 *    then run over all 256 values of every channel and compared with the
 *    tables. Only a table reproduced bit for bit takes the vector path, any
 *    other the portable loops (so does a float32 table holding -0.0 where
 *    its line is zero, from a negative std: the sum gives +0.0 there). The
 *    verdict is cached per thread (wv_lookup), keyed by the table's bytes,
 *    the path and the floating-point control register (rounding mode,
 *    flush-to-zero), so it holds for every write that uses it.
 * A gather from the tables (AVX2 vpgatherdd) is exact for any table too,
 * but measured barely faster than the portable loop, so it is not used. */
#if FL_MSVC
#pragma fp_contract(off)   /* the default from VS 2022 on; earlier ones may contract under /fp:precise */
#elif defined(__clang__)
#pragma STDC FP_CONTRACT OFF   /* GCC: off already under -std=c11 */
#endif
#define WV_MAXC 4

typedef struct {
    int nv;                      /* output vectors per block */
    int rev;                     /* the row walks the source right to left */
    int sc;                      /* source bytes per pixel */
    ptrdiff_t orow, epx;         /* output elements per row, per pixel along a row */
    ptrdiff_t dst[WV_MAXC];      /* vector m's first element, from the block's first */
    int win[WV_MAXC][2];         /* each half's 16-byte window, from the block's lowest byte */
    _Alignas(32) uint8_t mask[WV_MAXC][2][16];   /* the halves' byte shuffles */
    /* per element: v0, a1, c1, a2, c2 of its channel */
    _Alignas(32) float v0[WV_MAXC][8], a1[WV_MAXC][8], c1[WV_MAXC][8], a2[WV_MAXC][8], c2[WV_MAXC][8];
} wplan;

/* Windows, shuffles and per-element constants for writing w with sc source
 * channels. uint8 halves put their 4 bytes at bytes 4L..4L+3; the float
 * halves put each byte in the low byte of a 32-bit lane. prm[c] holds
 * channel c's v0, a1, c1, a2, c2 (NULL for uint8). 0 when a half's bytes do
 * not fit one window (never for 2 to 4 channels). */
static int wv_init(wplan *p, const walk *w, int sc, int layout, int dtype, const float (*prm)[5])
{
    const int nch = w->nch;
    memset(p, 0, sizeof *p);
    p->nv = nch;
    p->rev = w->dj < 0;
    p->sc = sc;
    p->orow = layout == FL_NCHW ? w->ow : (ptrdiff_t)w->ow * nch;
    p->epx = layout == FL_NCHW ? 1 : nch;
    for (int m = 0; m < nch; m++) {
        p->dst[m] = layout == FL_NCHW ? (ptrdiff_t)m * w->oh * w->ow : 8 * m;
        for (int half = 0; half < 2; half++) {
            int byte[4], lo = 1 << 30, hi = -1;
            for (int e = 0; e < 4; e++) {
                const int el = 4 * half + e;   /* element of the vector */
                const int px = layout == FL_NCHW ? el : (8 * m + el) / nch;
                const int c = layout == FL_NCHW ? m : (8 * m + el) % nch;
                byte[e] = (p->rev ? 7 - px : px) * sc + w->perm[c];
                lo = byte[e] < lo ? byte[e] : lo;
                hi = byte[e] > hi ? byte[e] : hi;
                if (prm) {
                    p->v0[m][el] = prm[c][0];
                    p->a1[m][el] = prm[c][1];
                    p->c1[m][el] = prm[c][2];
                    p->a2[m][el] = prm[c][3];
                    p->c2[m][el] = prm[c][4];
                }
            }
            int wo = lo / 8 * 8;
            if (wo > 8 * sc - 16)
                wo = 8 * sc - 16;
            if (wo < 0 || lo < wo || hi > wo + 15)
                return 0;
            p->win[m][half] = wo;
            memset(p->mask[m][half], 0x80, 16);   /* 0x80: a zero byte */
            for (int e = 0; e < 4; e++)
                p->mask[m][half][dtype == FL_U8 ? 4 * half + e : 4 * e] = (uint8_t)(byte[e] - wo);
        }
    }
    return 1;
}

/* Runs BLOCK for every block of w, with q at the block's lowest source byte
 * and o at its first output element: each row's blocks left to right, the
 * last one overlapping the one before when the width is not a multiple of
 * 8 (it writes the same values again). */
#define WV_FOR_BLOCKS(w, p, T, out, BLOCK)                                                  \
    do {                                                                                    \
        const ptrdiff_t qstep_ = 8 * (w)->dj, ostep_ = 8 * (p)->epx;                        \
        const int back_ = 8 - (w)->ow % 8;                                                  \
        for (int i_ = 0; i_ < (w)->oh; i_++) {                                              \
            const uint8_t *q = (w)->s0 + (ptrdiff_t)i_ * (w)->di                            \
                               + ((p)->rev ? 7 * (w)->dj : 0);                              \
            T *o = (out) + (ptrdiff_t)i_ * (p)->orow;                                       \
            for (int b_ = 0; b_ < (w)->ow / 8; b_++, q += qstep_, o += ostep_)              \
                BLOCK;                                                                      \
            if (back_ != 8) {                                                               \
                q -= back_ * (w)->dj;                                                       \
                o -= back_ * (p)->epx;                                                      \
                BLOCK;                                                                      \
            }                                                                               \
        }                                                                                   \
    } while (0)

/* A kernel for each count of output vectors, so that the block's loop over
 * them unrolls and its constants stay in registers. */
#define WV_KERNEL(ATTR, NAME, T, BLOCK_FN)                                                  \
    ATTR static void NAME(const walk *w, const wplan *restrict p, T *restrict out)          \
    {                                                                                       \
        switch (p->nv) {                                                                    \
        case 1: WV_FOR_BLOCKS(w, p, T, out, BLOCK_FN(p, q, o, 1)); break;                   \
        case 2: WV_FOR_BLOCKS(w, p, T, out, BLOCK_FN(p, q, o, 2)); break;                   \
        case 3: WV_FOR_BLOCKS(w, p, T, out, BLOCK_FN(p, q, o, 3)); break;                   \
        default: WV_FOR_BLOCKS(w, p, T, out, BLOCK_FN(p, q, o, 4)); break;                  \
        }                                                                                   \
    }

#if FL_X86 || FL_NEON
#if FL_X86
#define FL_SSE41_WV FL_TARGET("sse4.1")
#define FL_SSE41_WV_INLINE FL_TARGET("sse4.1") FL_INLINE
#define FL_AVX2_WV FL_TARGET("avx2")
#define FL_AVX2_WV_INLINE FL_TARGET("avx2") FL_INLINE
#define FL_F16C_WV FL_TARGET("avx2,f16c")
#define FL_F16C_WV_INLINE FL_TARGET("avx2,f16c") FL_INLINE

static FL_SSE41_WV_INLINE __m128i wv_half_sse41(const wplan *p, int m, int half, const uint8_t *q)
{
    return _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(q + p->win[m][half])),
                            _mm_load_si128((const __m128i *)p->mask[m][half]));
}

static FL_SSE41_WV_INLINE __m128 wv_value_sse41(const wplan *p, int m, int half, __m128i v)
{
    const int e = 4 * half;
    const __m128 u = _mm_sub_ps(_mm_cvtepi32_ps(v), _mm_load_ps(p->v0[m] + e));
    const __m128 s = _mm_add_ps(_mm_mul_ps(u, _mm_load_ps(p->a1[m] + e)), _mm_load_ps(p->c1[m] + e));
    const __m128 t = _mm_add_ps(_mm_mul_ps(u, _mm_load_ps(p->a2[m] + e)), _mm_load_ps(p->c2[m] + e));
    return _mm_add_ps(s, t);
}

static FL_SSE41_WV_INLINE void wv_u8_block_sse41(const wplan *p, const uint8_t *q, uint8_t *o, int nv)
{
    for (int m = 0; m < nv; m++)
        _mm_storel_epi64((__m128i *)(o + p->dst[m]),
                         _mm_or_si128(wv_half_sse41(p, m, 0, q), wv_half_sse41(p, m, 1, q)));
}

static FL_SSE41_WV_INLINE void wv_f32_block_sse41(const wplan *p, const uint8_t *q, float *o, int nv)
{
    for (int m = 0; m < nv; m++)
        for (int half = 0; half < 2; half++)
            _mm_storeu_ps(o + p->dst[m] + 4 * half, wv_value_sse41(p, m, half, wv_half_sse41(p, m, half, q)));
}

static FL_AVX2_WV_INLINE __m256 wv_value_avx2(const wplan *p, int m, const uint8_t *q)
{
    const __m256i b = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(q + p->win[m][0]))),
        _mm_loadu_si128((const __m128i *)(q + p->win[m][1])), 1);
    const __m256i v = _mm256_shuffle_epi8(b, _mm256_load_si256((const __m256i *)p->mask[m][0]));
    const __m256 u = _mm256_sub_ps(_mm256_cvtepi32_ps(v), _mm256_load_ps(p->v0[m]));
    const __m256 s = _mm256_add_ps(_mm256_mul_ps(u, _mm256_load_ps(p->a1[m])), _mm256_load_ps(p->c1[m]));
    const __m256 t = _mm256_add_ps(_mm256_mul_ps(u, _mm256_load_ps(p->a2[m])), _mm256_load_ps(p->c2[m]));
    return _mm256_add_ps(s, t);
}

static FL_AVX2_WV_INLINE void wv_f32_block_avx2(const wplan *p, const uint8_t *q, float *o, int nv)
{
    for (int m = 0; m < nv; m++)
        _mm256_storeu_ps(o + p->dst[m], wv_value_avx2(p, m, q));
}

static FL_F16C_WV_INLINE void wv_f16_block_avx2(const wplan *p, const uint8_t *q, uint16_t *o, int nv)
{
    for (int m = 0; m < nv; m++)
        _mm_storeu_si128((__m128i *)(o + p->dst[m]),
                         _mm256_cvtps_ph(wv_value_avx2(p, m, q), _MM_FROUND_TO_NEAREST_INT));
}

WV_KERNEL(FL_SSE41_WV, wv_u8_sse41, uint8_t, wv_u8_block_sse41)
WV_KERNEL(FL_SSE41_WV, wv_f32_sse41, float, wv_f32_block_sse41)
WV_KERNEL(FL_AVX2_WV, wv_f32_avx2, float, wv_f32_block_avx2)
WV_KERNEL(FL_F16C_WV, wv_f16_avx2, uint16_t, wv_f16_block_avx2)

/* MXCSR's control bits (rounding, flush-to-zero, denormals-are-zero, the
 * exception masks), without its sticky status flags. */
FL_TARGET("sse") static unsigned long wv_fp_control(void)
{
    return _mm_getcsr() & ~0x3Fu;
}
#endif

#if FL_NEON
#define FL_NEON_WV_INLINE FL_INLINE

static inline uint8x16_t wv_half_neon(const wplan *p, int m, int half, const uint8_t *q)
{
    return vqtbl1q_u8(vld1q_u8(q + p->win[m][half]), vld1q_u8(p->mask[m][half]));
}

/* separate multiplies and adds: a fused vfmaq would round differently */
static inline float32x4_t wv_value_neon(const wplan *p, int m, int half, uint8x16_t v)
{
    const int e = 4 * half;
    const float32x4_t u = vsubq_f32(vcvtq_f32_u32(vreinterpretq_u32_u8(v)), vld1q_f32(p->v0[m] + e));
    const float32x4_t s = vaddq_f32(vmulq_f32(u, vld1q_f32(p->a1[m] + e)), vld1q_f32(p->c1[m] + e));
    const float32x4_t t = vaddq_f32(vmulq_f32(u, vld1q_f32(p->a2[m] + e)), vld1q_f32(p->c2[m] + e));
    return vaddq_f32(s, t);
}

static FL_NEON_WV_INLINE void wv_u8_block_neon(const wplan *p, const uint8_t *q, uint8_t *o, int nv)
{
    for (int m = 0; m < nv; m++)
        vst1_u8(o + p->dst[m], vget_low_u8(vorrq_u8(wv_half_neon(p, m, 0, q), wv_half_neon(p, m, 1, q))));
}

static FL_NEON_WV_INLINE void wv_f32_block_neon(const wplan *p, const uint8_t *q, float *o, int nv)
{
    for (int m = 0; m < nv; m++)
        for (int half = 0; half < 2; half++)
            vst1q_f32(o + p->dst[m] + 4 * half, wv_value_neon(p, m, half, wv_half_neon(p, m, half, q)));
}

/* vcvt rounds as FPCR says: to nearest even unless a caller changed it (the
 * cache key includes FPCR) */
static FL_NEON_WV_INLINE void wv_f16_block_neon(const wplan *p, const uint8_t *q, uint16_t *o, int nv)
{
    for (int m = 0; m < nv; m++) {
        const float16x4_t h0 = vcvt_f16_f32(wv_value_neon(p, m, 0, wv_half_neon(p, m, 0, q)));
        const float16x4_t h1 = vcvt_f16_f32(wv_value_neon(p, m, 1, wv_half_neon(p, m, 1, q)));
        vst1q_u16(o + p->dst[m], vreinterpretq_u16_f16(vcombine_f16(h0, h1)));
    }
}

WV_KERNEL(, wv_u8_neon, uint8_t, wv_u8_block_neon)
WV_KERNEL(, wv_f32_neon, float, wv_f32_block_neon)
WV_KERNEL(, wv_f16_neon, uint16_t, wv_f16_block_neon)

/* FPCR: rounding, flush-to-zero, the alternative half format (the status
 * flags are in FPSR). */
static unsigned long wv_fp_control(void)
{
    uint64_t r;
    __asm__ __volatile__("mrs %0, fpcr" : "=r"(r));
    return (unsigned long)r;
}
#endif

/* The current path's kernel for dtype. */
static void wv_run(const walk *w, const wplan *p, int dtype, void *out)
{
#if FL_X86
    if (dtype == FL_U8)
        wv_u8_sse41(w, p, out);
    else if (dtype == FL_F32 && fl_simd == FL_SIMD_AVX2)
        wv_f32_avx2(w, p, out);
    else if (dtype == FL_F32)
        wv_f32_sse41(w, p, out);
    else
        wv_f16_avx2(w, p, out);
#else
    if (dtype == FL_U8)
        wv_u8_neon(w, p, out);
    else if (dtype == FL_F32)
        wv_f32_neon(w, p, out);
    else
        wv_f16_neon(w, p, out);
#endif
}

/* ---- which float tables the vector write reproduces ---- */

/* Value of the half with magnitude bits m (0x7C00 reads as 65536, where the
 * next binade would start: the rounding boundary below it is then right). */
static double half_magnitude(unsigned m)
{
    return m < 0x400 ? ldexp((double)m, -24) : ldexp((double)(0x400 | (m & 0x3FF)), (int)(m >> 10) - 25);
}

/* Entry i of a float or half table: its value and the reals that round to
 * it (ties resolved by the verification). A zero keeps its sign: +0 comes
 * from [0, tiny], -0 from [-tiny, 0]. 0 for infinities, NaN, and float
 * magnitudes beyond 2^100 or nonzero below 2^-100. */
static int wv_entry(const void *lut, int dtype, int i, double *x, double *lo, double *hi)
{
    double up, dn;
    if (dtype == FL_F32) {
        const float f = ((const float *)lut)[i];
        if (!isfinite(f) || fabsf(f) > 0x1p100f || (f != 0.f && fabsf(f) < 0x1p-100f))
            return 0;
        *x = f;
        up = nextafterf(f, INFINITY);
        dn = nextafterf(f, -INFINITY);
    } else {
        const unsigned h = ((const uint16_t *)lut)[i], m = h & 0x7FFF;
        if (m >= 0x7C00)
            return 0;
        const double mag = half_magnitude(m);
        if (h & 0x8000) {
            *x = -mag;
            up = m ? -half_magnitude(m - 1) : half_magnitude(1);
            dn = -half_magnitude(m + 1);
        } else {
            *x = mag;
            up = half_magnitude(m + 1);
            dn = m ? half_magnitude(m - 1) : -half_magnitude(1);
        }
    }
    *lo = (*x + dn) / 2;
    *hi = (*x + up) / 2;
    if (*x == 0) {
        if (signbit(*x))
            *hi = 0;
        else
            *lo = 0;
    }
    return 1;
}

/* v0, a1, c1, a2, c2 (see the section comment) for channel c, or 0 when no
 * line v -> A (v - v0) + C passes through every entry's rounding interval.
 * The slopes a line may take are bounded by every pair of entries; the
 * middle one is taken, then the middle of the offsets it allows, with v0 at
 * the entry nearest zero so that C, and every value near zero, is precise. */
static int wv_fit(const void *lut, int dtype, int c, float prm[5])
{
    double lo[256], hi[256], best = INFINITY;
    int v0 = 0;
    for (int v = 0; v < 256; v++) {
        double x;
        if (!wv_entry(lut, dtype, 256 * c + v, &x, &lo[v], &hi[v]))
            return 0;
        if (fabs(x) < best) {
            best = fabs(x);
            v0 = v;
        }
    }
    double alo = -INFINITY, ahi = INFINITY;
    for (int d = 1; d < 256; d++) {
        const double inv = 1.0 / d;
        for (int i = 0; i + d < 256; i++) {
            const double up = (hi[i + d] - lo[i]) * inv, dn = (lo[i + d] - hi[i]) * inv;
            ahi = up < ahi ? up : ahi;
            alo = dn > alo ? dn : alo;
        }
        if (!(alo <= ahi))
            return 0;
    }
    const double A = (alo + ahi) / 2;
    double clo = -INFINITY, chi = INFINITY;
    for (int v = 0; v < 256; v++) {
        const double u = v - v0, l = lo[v] - A * u, h = hi[v] - A * u;
        clo = l > clo ? l : clo;
        chi = h < chi ? h : chi;
    }
    if (!(clo <= chi))
        return 0;
    double C = (clo + chi) / 2;
    if (fabs(C) < 0x1p-100)
        C = 0;
    /* grid g: |u a1 / g| + |c1 / g| < 2^24 for |u| <= 255 */
    const double span = 255 * fabs(A) + fabs(C);
    if (span > 0x1p100 || (span != 0 && span < 0x1p-60))
        return 0;
    const double g = span == 0 ? 1 : ldexp(1.0, ilogb(span / (0x1p24 - 512)) + 1);
    const double ai = nearbyint(A / g) * g, ci = nearbyint(C / g) * g;
    const double rest[2] = {A - ai, C - ci};
    prm[0] = (float)v0;
    prm[1] = (float)ai;
    prm[2] = (float)ci;
    for (int k = 0; k < 2; k++)
        prm[3 + k] = fabs(rest[k]) < 0x1p-100 ? 0.f : (float)rest[k];
    return 1;
}

/* Whether the current path's kernel, with these constants, gives every
 * table entry bit for bit: a 256-pixel row whose pixel v is v in every
 * channel, written NCHW, against the tables. */
static int wv_verify(const void *lut, int dtype, int nch, const float (*prm)[5])
{
    static const int ident[WV_MAXC] = {0, 1, 2, 3};
    uint8_t src[256 * 4];
    _Alignas(32) uint32_t out[WV_MAXC * 256];
    for (int v = 0; v < 256; v++)
        memset(src + 4 * v, v, 4);
    walk w = {src, 0, 4, 1, 256, nch, ident};
    wplan p;
    if (!wv_init(&p, &w, 4, FL_NCHW, dtype, prm))
        return 0;
    wv_run(&w, &p, dtype, out);
    return memcmp(out, lut, (size_t)nch * 256 * (dtype == FL_F32 ? 4 : 2)) == 0;
}

typedef struct {
    int used, simd, dtype, nch, ok;
    unsigned long fpcw;
    float prm[WV_MAXC][5];
    uint8_t lut[WV_MAXC * 256 * 4];
} wv_verdict;

#define WV_CACHE 4
static FL_THREAD_LOCAL wv_verdict wv_cache[WV_CACHE];
static FL_THREAD_LOCAL int wv_next;

/* This thread's verdict on a float or half table under the current path
 * and floating-point control: fitted and verified on first sight (about
 * 0.1 ms), looked up by its bytes afterwards. */
static const wv_verdict *wv_lookup(const void *lut, int dtype, int nch)
{
    const size_t n = (size_t)nch * 256 * (dtype == FL_F32 ? 4 : 2);
    const unsigned long cw = wv_fp_control();
    for (int i = 0; i < WV_CACHE; i++) {
        const wv_verdict *e = &wv_cache[i];
        if (e->used && e->simd == fl_simd && e->dtype == dtype && e->nch == nch && e->fpcw == cw &&
            memcmp(e->lut, lut, n) == 0)
            return e;
    }
    wv_verdict *e = &wv_cache[wv_next];
    wv_next = (wv_next + 1) % WV_CACHE;
    e->used = 1;
    e->simd = fl_simd;
    e->dtype = dtype;
    e->nch = nch;
    e->fpcw = cw;
    memcpy(e->lut, lut, n);
    e->ok = 1;
    for (int c = 0; c < nch && e->ok; c++)
        e->ok = wv_fit(lut, dtype, c, e->prm[c]);
    if (e->ok)
        e->ok = wv_verify(lut, dtype, nch, (const float (*)[5])e->prm);
    return e;
}
#endif

/* How fl_write_sample writes w: FL_WRITE_COPY (NHWC uint8 rows as they
 * are), FL_WRITE_VECTOR (the current SIMD path; *p set up) or
 * FL_WRITE_LOOPS (the portable loops). */
static int write_route(const fl_view *src, int k, int hflip, const walk *w, const void *lut,
                       const fl_out *out, wplan *p)
{
    if (is_plain_copy(src, k, hflip, w->perm, lut, out))
        return FL_WRITE_COPY;
#if FL_X86 || FL_NEON
    const int sc = src->channels;
    if (fl_simd == FL_SIMD_PORTABLE || sc < 2 || sc > 4 || w->nch > WV_MAXC || w->ow < 8 ||
        (w->dj != sc && w->dj != -sc))
        return FL_WRITE_LOOPS;
#if FL_X86
    if (out->dtype == FL_F16 && !fl_simd_f16c)
        return FL_WRITE_LOOPS;   /* converting to half without F16C costs more than the loops */
#endif
    const float (*prm)[5] = NULL;
    if (out->dtype == FL_U8) {
        if (!is_identity(lut, w->nch))
            return FL_WRITE_LOOPS;
    } else {
        const wv_verdict *v = wv_lookup(lut, out->dtype, w->nch);
        if (!v->ok)
            return FL_WRITE_LOOPS;
        prm = (const float (*)[5])v->prm;
    }
    return wv_init(p, w, sc, out->layout, out->dtype, prm) ? FL_WRITE_VECTOR : FL_WRITE_LOOPS;
#else
    (void)p;
    return FL_WRITE_LOOPS;
#endif
}

/* Checks the arguments and sets up the walk; FL_OK or FL_ERR_ARG. */
static int write_walk(const fl_view *src, int rot90, int hflip, int vflip, const int *perm,
                      const void *lut, const fl_out *out, walk *w, int *rot)
{
    if (!src || !src->data || src->width <= 0 || src->height <= 0 || src->channels <= 0 ||
        src->stride < (ptrdiff_t)src->width * src->channels || !perm || !lut || !out ||
        !out->data || out->channels <= 0 || (out->layout != FL_NCHW && out->layout != FL_NHWC) ||
        out->dtype < FL_U8 || out->dtype > FL_F32)
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
    w->s0 = src->data + o00;
    w->di = src_offset(src, k, hflip, vflip, oh, ow, 1, 0) - o00;
    w->dj = src_offset(src, k, hflip, vflip, oh, ow, 0, 1) - o00;
    w->oh = oh; w->ow = ow; w->nch = out->channels; w->perm = perm;
    *rot = k;
    return FL_OK;
}

int fl_write_path(const fl_view *src, int rot90, int hflip, int vflip,
                  const int *perm, const void *lut, const fl_out *out)
{
    walk w;
    wplan p;
    int k;
    if (write_walk(src, rot90, hflip, vflip, perm, lut, out, &w, &k) != FL_OK)
        return FL_ERR_ARG;
    return write_route(src, k, hflip, &w, lut, out, &p);
}

int fl_write_sample(const fl_view *src, int rot90, int hflip, int vflip,
                    const int *perm, const void *lut, fl_out *out)
{
    walk w;
    wplan p;
    int k;
    if (write_walk(src, rot90, hflip, vflip, perm, lut, out, &w, &k) != FL_OK)
        return FL_ERR_ARG;
    switch (write_route(src, k, hflip, &w, lut, out, &p)) {
    case FL_WRITE_COPY: {
        const size_t row = (size_t)w.ow * w.nch;
        for (int i = 0; i < w.oh; i++)
            memcpy((uint8_t *)out->data + i * row, w.s0 + i * w.di, row);
        return FL_OK;
    }
#if FL_X86 || FL_NEON
    case FL_WRITE_VECTOR:
        wv_run(&w, &p, out->dtype, out->data);
        return FL_OK;
#endif
    default:
        break;
    }
    switch (out->dtype) {
    case FL_U8:
        write_u8(&w, (const uint8_t *)lut, (uint8_t *)out->data, out->layout);
        break;
    case FL_F16:   /* half values are copied as their bit patterns */
        write_u16(&w, (const uint16_t *)lut, (uint16_t *)out->data, out->layout);
        break;
    default:
        write_u32(&w, (const uint32_t *)lut, (uint32_t *)out->data, out->layout);
        break;
    }
    return FL_OK;
}
