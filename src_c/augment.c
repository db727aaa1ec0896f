/* Colour jitter and the final write of a sample into its batch slot
 * (see augment.h). */
#include <string.h>
#include "augment.h"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__GLIBC__) && !defined(__clang__)
/* Per-CPU clones chosen by the loader (ifunc); no -march flags at build time. */
#define FL_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define FL_CLONES
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

FL_CLONES
static void saturate_rgb(const fl_view *img, const float *lut, float s)
{
    const int ch = img->channels;
    const float t = 1.f - s;
    for (int y = 0; y < img->height; y++) {
        uint8_t *p = img->data + y * img->stride;
        for (int x = 0; x < img->width; x++, p += ch) {
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
 *  - The sums are accumulated in double. Every value is a float in [0, 255],
 *    so while a channel's sum stays below 2^24 (images up to 2^16 pixels) and
 *    no non-zero value is below 2^-6, every partial sum is exact, in any
 *    order, like the histogram dot product.
 *  - A clamp between two steps is left out only when it cannot change any of
 *    the 256 values that step can produce (checked on the tables).
 *  - The clamp after the last step is done by the saturating packs: with
 *    |y| < 2^30, trunc(y + 0.5) saturated to [0, 255] equals
 *    trunc(clamp(y, 0, 255) + 0.5) (y > 255 gives >= 255, y < 0 gives <= 0). */
#if defined(__x86_64__) && defined(__GNUC__)
#define FL_JITTER_AVX2 1
#include <immintrin.h>
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

/* Mean luma of clamp255(v * b) over the image. */
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
    double sum = 0.0;
    sum += 0.299 * s[0];
    sum += 0.587 * s[1];
    sum += 0.114 * s[2];
    return sum / ((double)img->width * img->height);
}

FL_AVX2 static double jit_mean_avx2(const fl_view *img, float b, const float *lut, int clamp)
{
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
        && __builtin_cpu_supports("avx2")) {
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
