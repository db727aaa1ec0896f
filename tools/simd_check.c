/* Every SIMD path of the resampling, colour-jitter (hue too) and sample-write kernels
 * against the portable loops, bit for bit, on random images, boxes, filters,
 * factors, tables, layouts, flips and rotations; and the PNG unfiltering's
 * vector path (SSE2 or NEON, the targets' baseline) on random rows.
 * Built natively (x86: AVX2, SSE4.1) and with an AArch64 cross-compiler run
 * under qemu-user (NEON) by tools/simd_check.sh. Exits non-zero on the first
 * difference, naming the case. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cpu.h"
#include "augment.h"
#include "png_unfilter.h"
#include "resample.h"

static uint64_t state = 0x9E3779B97F4A7C15ull;

static uint64_t next(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static int irange(int lo, int hi) { return lo + (int)(next() % (uint64_t)(hi - lo + 1)); }
static double frange(double lo, double hi) { return lo + (hi - lo) * (double)(next() >> 11) * 0x1.0p-53; }

static void fill_image(uint8_t *p, size_t n)
{
    uint8_t v = (uint8_t)next();
    for (size_t i = 0; i < n; i++) {   /* smooth runs with jumps, like photos */
        if (next() % 16 == 0)
            v = (uint8_t)next();
        else
            v = (uint8_t)(v + (int)(next() % 7) - 3);
        p[i] = v;
    }
}

/* IEEE half bits of x, rounded to nearest even straight from double (as
 * NumPy's astype(float16), which make_lut uses). */
static uint16_t to_half(double x)
{
    const uint16_t sign = signbit(x) ? 0x8000 : 0;
    double m = fabs(x);
    if (m >= 65520.0)
        return sign | 0x7C00;
    if (m < 0x1p-14)
        return sign | (uint16_t)nearbyint(m * 0x1p24);   /* subnormal (0x400: the smallest normal) */
    int e;
    frexp(m, &e);   /* m = f 2^e, f in [0.5, 1) */
    double r = nearbyint(ldexp(m, 11 - e));   /* 1024..2048 */
    if (r == 2048.0) {
        r = 1024.0;
        e++;
    }
    return sign | (uint16_t)(((e + 14) << 10) | ((int)r - 1024));
}

/* Tables of every kind fl_write_sample meets: make_lut's (value / max - mean)
 * / std in double, rounded once (with means that put an entry next to zero
 * or on it, negative stds), raw values, and arbitrary tables. */
static void make_table(void *lut, int dtype, int nch, int kind)
{
    for (int c = 0; c < nch; c++) {
        double max = (double[]){255.0, 1.0, 127.5, 65535.0}[irange(0, 3)];
        double mean = frange(-0.5, 1.5) * (max == 1.0 ? 255 : 1), std = frange(0.02, 2.5) * (irange(0, 5) ? 1 : -1);
        if (kind == 1) {   /* an entry within a few ulps of zero, or exactly zero */
            mean = irange(0, 255) / max;
            if (irange(0, 1))
                mean += frange(-1e-6, 1e-6) * (double[]){1, 1e-4, 1e-8}[irange(0, 2)];
        }
        if (dtype == FL_F16 && fabs(std) < 0.05 * (max == 1.0 ? 255 : 1))
            std = 0.05 * (max == 1.0 ? 255 : 1);   /* no infinities */
        for (int v = 0; v < 256; v++) {
            double x = kind == 2 ? v : kind == 3 ? frange(-3, 3) : (v / max - mean) / std;
            if (dtype == FL_U8)
                ((uint8_t *)lut)[256 * c + v] = kind == 3 ? (uint8_t)next() : (uint8_t)v;
            else if (dtype == FL_F16)
                ((uint16_t *)lut)[256 * c + v] = to_half(x);
            else
                ((float *)lut)[256 * c + v] = (float)x;
        }
    }
}

/* One random write on `path` against the portable loops; counts the writes
 * that took the vector path. 0 on a difference or a write out of bounds. */
static int check_write(int path, int c, long *vector)
{
    static const int sizes[3] = {1, 2, 4};
    int sc = irange(1, 4), nch = irange(1, c % 7 == 0 ? 5 : 4);
    int dtype = irange(0, 2), layout = irange(0, 1);
    int rot = c % 3 == 0 ? irange(0, 3) : 2 * irange(0, 1), hflip = irange(0, 1), vflip = irange(0, 1);
    int h = c % 5 == 0 ? irange(1, 3) : irange(1, 60), w = c % 5 == 1 ? irange(1, 9) : irange(1, 90);
    if (c % 11 == 0)
        h = w = 1;
    int perm[5];
    for (int k = 0; k < nch; k++)
        perm[k] = irange(0, sc - 1);
    size_t stride = (size_t)w * sc + (size_t)(irange(0, 3) ? 0 : irange(1, 7));
    size_t n = (size_t)h * w * nch * sizes[dtype], guard = 64;
    uint8_t *img = malloc(stride * h), *a = malloc(n + guard), *b = malloc(n + guard);
    void *lut = malloc((size_t)nch * 256 * 4);
    fill_image(img, stride * h);
    int kind = dtype == FL_U8 ? (irange(0, 3) ? 2 : 3) : irange(0, 9) < 7 ? irange(0, 1) : irange(2, 3);
    make_table(lut, dtype, nch, kind);
    memset(a, 0xA5, n + guard);
    memset(b, 0xA5, n + guard);
    fl_view src = {img, w, h, sc, (ptrdiff_t)stride};
    int oh = rot & 1 ? w : h, ow = rot & 1 ? h : w;
    fl_out oa = {a, dtype, layout, oh, ow, nch}, ob = {b, dtype, layout, oh, ow, nch};
    fl_simd_set(FL_SIMD_PORTABLE);
    int ra = fl_write_sample(&src, rot, hflip, vflip, perm, lut, &oa);
    fl_simd_set(path);
    int route = fl_write_path(&src, rot, hflip, vflip, perm, lut, &ob);
    int rb = fl_write_sample(&src, rot, hflip, vflip, perm, lut, &ob);
    int ok = ra == FL_OK && rb == FL_OK && memcmp(a, b, n + guard) == 0;
    for (size_t i = n; i < n + guard && ok; i++)
        ok = b[i] == 0xA5;
    if (!ok)
        fprintf(stderr, "simd_check: %s write differs from portable: %dx%dx%d stride %zu -> %s %s %d channels "
                "perm %d %d %d %d, rot90 %d hflip %d vflip %d, table kind %d, route %d\n",
                fl_simd_name(path), w, h, sc, stride, (const char *[]){"uint8", "float16", "float32"}[dtype],
                layout ? "NHWC" : "NCHW", nch, perm[0], nch > 1 ? perm[1] : -1, nch > 2 ? perm[2] : -1,
                nch > 3 ? perm[3] : -1, rot, hflip, vflip, kind, route);
    *vector += route == FL_WRITE_VECTOR;
    free(img), free(a), free(b), free(lut);
    return ok;
}

/* The write of the loader's common case, 224 x 224 RGB with an ImageNet
 * Normalize table in float32 and float16 and raw uint8, NCHW and NHWC,
 * mirrored or not: must take the vector path (float16 on SSE4.1 excepted). */
static int check_write_route(int path)
{
    static const double mean[3] = {0.485, 0.456, 0.406}, std[3] = {0.229, 0.224, 0.225};
    const int n = 224, perm[3] = {0, 1, 2};
    uint8_t *img = malloc((size_t)n * n * 3), *out = malloc((size_t)n * n * 3 * 4);
    float lut32[768];
    uint16_t lut16[768];
    uint8_t lut8[768];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            double x = (v / 255.0 - mean[c]) / std[c];
            lut32[256 * c + v] = (float)x;
            lut16[256 * c + v] = to_half(x);
            lut8[256 * c + v] = (uint8_t)v;
        }
    fill_image(img, (size_t)n * n * 3);
    fl_view src = {img, n, n, 3, n * 3};
    const void *luts[3] = {lut8, lut16, lut32};
    int ok = 1;
    fl_simd_set(path);
    for (int dtype = 0; dtype < 3; dtype++)
        for (int layout = 0; layout < 2; layout++)
            for (int flip = 0; flip < 2; flip++) {
                fl_out o = {out, dtype, layout, n, n, 3};
                int want = dtype == FL_U8 && layout == FL_NHWC && !flip ? FL_WRITE_COPY
                           : dtype == FL_F16 && path == FL_SIMD_SSE41 ? FL_WRITE_LOOPS   /* no half conversion */
                           : FL_WRITE_VECTOR;
                if (fl_write_path(&src, 0, flip, 0, perm, luts[dtype], &o) != want) {
                    fprintf(stderr, "simd_check: %s does not take the vector write for dtype %d layout %d "
                            "hflip %d\n", fl_simd_name(path), dtype, layout, flip);
                    ok = 0;
                }
            }
    free(img), free(out);
    return ok;
}

static int run(int path, const fl_view *src, fl_rect box, int filter, int aa, fl_view *dst, fl_resampler *r)
{
    fl_simd_set(path);
    return fl_resample(r, src, box, filter, aa, dst);
}

/* Random rows of every filter type and pixel width, unfiltered by fl_png_unfilter and by the
 * portable loops, over random rows above (zeros for some, as above a first row). */
static int check_unfilter(int cases)
{
    static const size_t widths[] = {1, 2, 3, 4, 6, 8};
    for (int c = 0; c < cases; c++) {
        size_t bpp = widths[c % 6], n = bpp * (size_t)(c % 9 == 0 ? irange(1, 8) : irange(1, 300));
        int type = (c / 6) % 5;
        uint8_t *up = malloc(n), *a = malloc(n), *b = malloc(n);
        fill_image(a, n);
        if (c % 7 == 0)
            memset(up, 0, n);
        else
            fill_image(up, n);
        memcpy(b, a, n);
        if (fl_png_unfilter(type, a, up, n, bpp) != 0 || fl_png_unfilter_portable(type, b, up, n, bpp) != 0
                || memcmp(a, b, n) != 0) {
            fprintf(stderr, "simd_check: PNG unfilter (%s) differs from portable: type %d, %zu bytes of %zu-byte "
                    "pixels\n", fl_png_unfilter_path(), type, n, bpp);
            return 0;
        }
        free(up), free(a), free(b);
    }
    printf("simd_check: PNG unfilter %s = portable on %d rows\n", fl_png_unfilter_path(), cases);
    return 1;
}

int main(int argc, char **argv)
{
    int cases = argc > 1 ? atoi(argv[1]) : 3000;
    if (!check_unfilter(cases))
        return 1;
    fl_resampler r;
    memset(&r, 0, sizeof r);
    int paths = 0;
    for (int path = 1; path < FL_SIMD_COUNT; path++) {
        if (!fl_simd_supported(path))
            continue;
        paths++;
        long compared = 0;
        for (int c = 0; c < cases; c++) {
            int ch = (int[]){1, 3, 4}[c % 3];
            int h = c % 10 == 0 ? irange(1, 4) : irange(2, 140), w = c % 10 == 0 ? irange(1, 40) : irange(2, 160);
            int oh = irange(1, 150), ow = irange(1, 170);
            size_t stride = (size_t)w * ch + (size_t)irange(0, 5);   /* padded rows too */
            uint8_t *img = malloc(stride * h), *a = malloc((size_t)oh * ow * ch), *b = malloc((size_t)oh * ow * ch);
            fill_image(img, stride * h);
            double x0 = c % 4 ? frange(0, w * 0.6) : 0, y0 = c % 4 ? frange(0, h * 0.6) : 0;
            double x1 = c % 4 ? frange(x0 + 0.05, w) : w, y1 = c % 4 ? frange(y0 + 0.05, h) : h;
            fl_view src = {img, w, h, ch, (ptrdiff_t)stride};
            fl_view da = {a, ow, oh, ch, (ptrdiff_t)ow * ch}, db = {b, ow, oh, ch, (ptrdiff_t)ow * ch};
            fl_rect box = {x0, y0, x1, y1};
            int filter = c % 5 == 4 ? FL_AREA : FL_BILINEAR, aa = c % 7 != 3;
            int ra = run(FL_SIMD_PORTABLE, &src, box, filter, aa, &da, &r);
            int rb = run(path, &src, box, filter, aa, &db, &r);
            if (ra != rb || (ra == FL_OK && memcmp(a, b, (size_t)oh * ow * ch) != 0)) {
                fprintf(stderr, "simd_check: %s resample differs from portable: %dx%dx%d box (%g %g %g %g) -> %dx%d "
                        "filter %d antialias %d\n", fl_simd_name(path), w, h, ch, x0, y0, x1, y1, ow, oh, filter, aa);
                return 1;
            }
            /* colour jitter on the resampled image */
            if (ra == FL_OK) {
                float bf = (float)frange(0.2, 1.8), cf = (float)frange(0.2, 1.8), sf = (float)frange(0, 2);
                if (c % 4 == 1) cf = 1.f;
                if (c % 4 == 2) sf = 1.f;
                memcpy(b, a, (size_t)oh * ow * ch);
                fl_simd_set(FL_SIMD_PORTABLE);
                fl_color_jitter(&da, bf, cf, sf);
                fl_simd_set(path);
                fl_color_jitter(&db, bf, cf, sf);
                if (memcmp(a, b, (size_t)oh * ow * ch) != 0) {
                    fprintf(stderr, "simd_check: %s jitter differs from portable: %dx%dx%d factors %g %g %g\n",
                            fl_simd_name(path), ow, oh, ch, bf, cf, sf);
                    return 1;
                }
                /* hue, on some grey pixels (no hue) and pixels with two equal channels (sector edges) too */
                float hf = c % 9 == 0 ? 0.5f : c % 9 == 1 ? -0.5f : (float)frange(-0.5, 0.5);
                for (int k = 0; k + ch <= oh * ow * ch && ch >= 3; k += ch * irange(1, 7))
                    if (k % 3 == 0)
                        a[k + 1] = a[k + 2] = a[k];
                    else
                        a[k + k % 2] = a[k + 2];
                memcpy(b, a, (size_t)oh * ow * ch);
                fl_simd_set(FL_SIMD_PORTABLE);
                fl_adjust_hue(&da, hf);
                fl_simd_set(path);
                fl_adjust_hue(&db, hf);
                if (memcmp(a, b, (size_t)oh * ow * ch) != 0) {
                    fprintf(stderr, "simd_check: %s hue differs from portable: %dx%dx%d factor %.9g\n",
                            fl_simd_name(path), ow, oh, ch, hf);
                    return 1;
                }
            }
            compared++;
            free(img), free(a), free(b);
        }
        printf("simd_check: %s = portable on %ld resample + jitter + hue cases\n", fl_simd_name(path), compared);
        if (!check_write_route(path))
            return 1;
        long vector = 0;
        for (int c = 0; c < cases; c++)
            if (!check_write(path, c, &vector))
                return 1;
        printf("simd_check: %s = portable on %d write cases (%ld on the vector path)\n",
               fl_simd_name(path), cases, vector);
    }
    fl_resampler_free(&r);
    if (!paths)
        printf("simd_check: no vector path on this CPU/build; nothing to compare\n");
    return 0;
}
