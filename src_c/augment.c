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

void fl_color_jitter(fl_view *img, float brightness, float contrast, float saturation)
{
    if (!img || !img->data || img->width <= 0 || img->height <= 0 || img->channels <= 0)
        return;
    /* Colour channels: RGB(A) -> 3, grey(+alpha) -> 1; alpha is left alone. */
    const int ncolor = img->channels >= 3 ? 3 : 1;
    const int do_sat = saturation != 1.f && ncolor == 3;
    if (brightness == 1.f && contrast == 1.f && !do_sat)
        return;

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
