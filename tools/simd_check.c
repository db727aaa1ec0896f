/* Every SIMD path of the resampling and colour-jitter kernels against the
 * portable loops, bit for bit, on random images, boxes, filters and factors.
 * Built natively (x86: AVX2, SSE4.1) and with an AArch64 cross-compiler run
 * under qemu-user (NEON) by tools/simd_check.sh. Exits non-zero on the first
 * difference, naming the case. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cpu.h"
#include "augment.h"
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

static int run(int path, const fl_view *src, fl_rect box, int filter, int aa, fl_view *dst, fl_resampler *r)
{
    fl_simd_set(path);
    return fl_resample(r, src, box, filter, aa, dst);
}

int main(int argc, char **argv)
{
    int cases = argc > 1 ? atoi(argv[1]) : 3000;
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
            }
            compared++;
            free(img), free(a), free(b);
        }
        printf("simd_check: %s = portable on %ld resample + jitter cases\n", fl_simd_name(path), compared);
    }
    fl_resampler_free(&r);
    if (!paths)
        printf("simd_check: no vector path on this CPU/build; nothing to compare\n");
    return 0;
}
