/* Sanitizer driver for the C kernels (built and run by tools/asan.sh).
 *
 *     asan_driver DIR...
 *
 * Feeds every file in each DIR, held in a heap buffer of exactly its size
 * (so a read past the end is caught), through fl_jpeg_read_info,
 * fl_jpeg_plan_region / fl_jpeg_decode_region with several regions, minimum
 * sizes and DCT scales, fl_png_begin / fl_png_decode_region with several
 * regions, fl_read_file, and fl_process_encoded (JPEG and PNG) with several plans
 * (every output dtype and layout, all geometric ops, flips, rotations,
 * jitter); and synthetic RGB images of extreme shapes through
 * fl_process_rgb. Every decoded pixel and every output element is read.
 * Prints counts of files, calls and status codes. */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cpu.h"
#include "sample.h"

static long calls, by_status[16];

static void count(int rc)
{
    calls++;
    by_status[(rc + 8) & 15]++;
}

static unsigned long checksum;

static void touch_view(const fl_view *v)
{
    for (int y = 0; y < v->height; y++)
        for (int x = 0; x < v->width * v->channels; x++)
            checksum += v->data[(ptrdiff_t)y * v->stride + x];
}

#define NPLANS 5
static fl_plan plans[NPLANS];
static uint8_t lut_u8[3 * 256];
static uint16_t lut_f16[3 * 256];
static float lut_f32[3 * 256];

static fl_geom_op op(int kind, int h, int w, int max_size, double slo, double shi)
{
    fl_geom_op o = {.kind = kind, .h = h, .w = w, .max_size = max_size, .scale_lo = slo, .scale_hi = shi,
                    .log_ratio_lo = log(3.0 / 4.0), .log_ratio_hi = log(4.0 / 3.0)};
    return o;
}

static void make_plans(void)
{
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            lut_u8[c * 256 + v] = (uint8_t)v;
            lut_f32[c * 256 + v] = (v / 255.0f - 0.5f) / 0.25f;
            lut_f16[c * 256 + v] = (uint16_t)(0x3C00 + v);   /* any bit pattern will do */
        }
    memset(plans, 0, sizeof plans);
    /* 0: Resize((16, 12)), uint8 NHWC, DCT scaling */
    plans[0].ops[0] = op(FL_GEOM_RESIZE, 16, 12, 0, 0, 0);
    plans[0].nops = 1, plans[0].out_w = 12, plans[0].out_h = 16;
    plans[0].filter = FL_BILINEAR, plans[0].antialias = 1, plans[0].max_denom = 8, plans[0].reducing_gap = 2.0;
    plans[0].dtype = FL_U8, plans[0].layout = FL_NHWC, plans[0].lut = lut_u8;
    /* 1: RandomResizedCrop(16) + flips + rot90 + jitter, float32 NCHW */
    plans[1].ops[0] = op(FL_GEOM_RANDOM_RESIZED_CROP, 16, 16, 0, 0.08, 1.0);
    plans[1].nops = 1, plans[1].out_w = 16, plans[1].out_h = 16;
    plans[1].filter = FL_BILINEAR, plans[1].antialias = 1, plans[1].max_denom = 8;
    plans[1].p_hflip = 0.5, plans[1].p_vflip = 0.5, plans[1].p_rot90 = 0.5;
    for (int j = 0; j < 3; j++)
        plans[1].jitter[j][0] = 0.6, plans[1].jitter[j][1] = 1.4;
    plans[1].jitter[3][0] = -0.2, plans[1].jitter[3][1] = 0.2;
    plans[1].dtype = FL_F32, plans[1].layout = FL_NCHW, plans[1].lut = lut_f32;
    /* 2: Resize(20) + CenterCrop(16), nearest, float16 NHWC, no DCT scaling */
    plans[2].ops[0] = op(FL_GEOM_RESIZE, 20, 0, 0, 0, 0);
    plans[2].ops[1] = op(FL_GEOM_CENTER_CROP, 16, 16, 0, 0, 0);
    plans[2].nops = 2, plans[2].out_w = 16, plans[2].out_h = 16;
    plans[2].filter = FL_NEAREST, plans[2].antialias = 1, plans[2].max_denom = 1;
    plans[2].dtype = FL_F16, plans[2].layout = FL_NHWC, plans[2].lut = lut_f16;
    /* 3: RandomCrop(24) + Resize((8, 8)) area, uint8 NCHW, EXIF honoured, small pixel limit */
    plans[3].ops[0] = op(FL_GEOM_RANDOM_CROP, 24, 24, 0, 0, 0);
    plans[3].ops[1] = op(FL_GEOM_RESIZE, 8, 8, 0, 0, 0);
    plans[3].nops = 2, plans[3].out_w = 8, plans[3].out_h = 8;
    plans[3].filter = FL_AREA, plans[3].antialias = 1, plans[3].max_denom = 8;
    plans[3].honour_exif = 1, plans[3].max_pixels = 3000;
    plans[3].dtype = FL_U8, plans[3].layout = FL_NCHW, plans[3].lut = lut_u8;
    /* 4: Resize((9, 33)) bilinear without antialias, float32 NHWC */
    plans[4].ops[0] = op(FL_GEOM_RESIZE, 9, 33, 0, 0, 0);
    plans[4].nops = 1, plans[4].out_w = 33, plans[4].out_h = 9;
    plans[4].filter = FL_BILINEAR, plans[4].antialias = 0, plans[4].max_denom = 4;
    plans[4].dtype = FL_F32, plans[4].layout = FL_NHWC, plans[4].lut = lut_f32;
    for (int i = 0; i < NPLANS; i++) {
        plans[i].perm[0] = i == 4 ? 2 : 0, plans[i].perm[1] = 1, plans[i].perm[2] = i == 4 ? 0 : 2;
        if (!plans[i].max_pixels)
            plans[i].max_pixels = 10000000;
    }
}

static size_t out_bytes(const fl_plan *p)
{
    size_t elem = p->dtype == FL_U8 ? 1 : p->dtype == FL_F16 ? 2 : 4;
    return (size_t)p->out_w * p->out_h * 3 * elem;
}

static void run_plans(fl_worker *w, const uint8_t *data, size_t size, uint64_t index)
{
    char err[FL_ERRLEN];
    for (int i = 0; i < NPLANS; i++) {
        size_t nb = out_bytes(&plans[i]);
        uint8_t *out = malloc(nb);   /* exact size: a write past the sample is caught */
        for (uint64_t epoch = 0; epoch < 2; epoch++) {
            err[0] = 0;
            int rc = fl_process_encoded(w, &plans[i], data, size, 7, epoch, index, out, err);
            count(rc);
            if (rc == FL_OK)
                for (size_t k = 0; k < nb; k++)
                    checksum += out[k];
            else if (rc < 0 && !err[0])
                fprintf(stderr, "error %d without a message\n", rc);
        }
        free(out);
    }
}

static void run_decoder(fl_jpeg_decoder *d, const uint8_t *data, size_t size)
{
    static const int regions[][4] = {{0, 0, 1 << 30, 1 << 30}, {3, 5, 17, 29}, {-4, -4, 8, 8},
                                     {40, 1, 41, 2}, {10, 10, 10, 20}, {0, 30, 1 << 20, 31}};
    static const int mins[][3] = {{0, 0, 1}, {4, 4, 8}, {1, 1, 8}, {64, 2, 2}};
    char err[FL_ERRLEN];
    fl_jpeg_info info;
    count(fl_jpeg_read_info(d, data, size, &info, err));
    for (size_t r = 0; r < sizeof regions / sizeof *regions; r++)
        for (size_t m = 0; m < sizeof mins / sizeof *mins; m++)
            for (int exif = 0; exif < 2; exif++) {
                fl_view planned, out;
                fl_jpeg_region pr, reg;
                const int *g = regions[r];
                int64_t limit = r == 5 ? 2000 : 10000000;
                int rp = fl_jpeg_plan_region(d, data, size, g[0], g[1], g[2], g[3], mins[m][0], mins[m][1],
                                             mins[m][2], exif, limit, &planned, &pr, err);
                int rc = fl_jpeg_decode_region(d, data, size, g[0], g[1], g[2], g[3], mins[m][0], mins[m][1],
                                               mins[m][2], exif, limit, &out, &reg, err);
                count(rp);
                count(rc);
                if (rc == FL_OK) {
                    if (rp != FL_OK || planned.width != out.width || planned.height != out.height)
                        fprintf(stderr, "plan and decode disagree\n");
                    touch_view(&out);
                }
            }
}

/* The route through Pillow's decoder: the plan from the markers, then the sample finished from
 * a stand-in for Pillow's pixels (four bytes a pixel) holding exactly the planned leading rows,
 * so that a resample reaching past them is caught. */
static void run_pillow(fl_worker *w, const uint8_t *data, size_t size, uint64_t index)
{
    char err[FL_ERRLEN];
    int complete = 0;
    err[0] = 0;
    int rc = fl_jpeg_check_stream(data, size, &complete, err);
    count(rc);
    if (rc < 0 && !err[0])
        fprintf(stderr, "stream check error %d without a message\n", rc);
    for (int i = 0; i < NPLANS; i++) {
        fl_pillow_jpeg r;
        err[0] = 0;
        rc = fl_pillow_jpeg_plan(&plans[i], data, size, i & 1 ? 1e4 : 0, 7, 0, index, &r, err);
        count(rc);
        if (rc != FL_OK) {
            if (rc < 0 && !err[0])
                fprintf(stderr, "pillow plan error %d without a message\n", rc);
            continue;
        }
        if (r.rows < 1 || r.rows > r.scaled_height || r.scaled_width < 1)
            fprintf(stderr, "pillow plan: %d rows of %dx%d\n", r.rows, r.scaled_width, r.scaled_height);
        if ((int64_t)r.scaled_width * r.rows > 2000000)
            continue;
        size_t n = (size_t)r.scaled_width * r.rows * 4;
        uint8_t *px = malloc(n);
        for (size_t k = 0; k < n; k++)
            px[k] = (uint8_t)(k * 29 + index);
        fl_view v = {px, r.scaled_width, r.rows, 4, (ptrdiff_t)r.scaled_width * 4};
        size_t nb = out_bytes(&plans[i]);
        uint8_t *out = malloc(nb);
        rc = fl_process_decoded(w, &plans[i], &v, r.scaled_width, r.scaled_height, r.width, r.height, r.scale, 7,
                                0, index, out, err);
        count(rc);
        if (rc == FL_ERR_ARG)
            fprintf(stderr, "pillow route: the planned rows do not cover the crop: %s\n", err);
        if (rc == FL_OK)
            for (size_t k = 0; k < nb; k++)
                checksum += out[k];
        free(out);
        free(px);
    }
}

static void run_png_decoder(fl_png_decoder *d, const uint8_t *data, size_t size)
{
    static const int regions[][4] = {{0, 0, 1 << 30, 1 << 30}, {3, 5, 17, 29}, {-4, -4, 8, 8},
                                     {40, 1, 41, 2}, {10, 10, 10, 20}, {0, 30, 1 << 20, 31}};
    char err[FL_ERRLEN];
    fl_png_info info;
    for (int exif = 0; exif < 2; exif++) {
        count(fl_png_begin(d, data, size, exif, &info, err));
        fl_png_abort(d);
    }
    for (size_t r = 0; r < sizeof regions / sizeof *regions; r++)
        for (int exif = 0; exif < 2; exif++) {
            fl_view out;
            const int *g = regions[r];
            int rc = fl_png_decode_region(d, data, size, g[0], g[1], g[2], g[3], exif, r == 5 ? 2000 : 10000000,
                                          &out, err);
            count(rc);
            if (rc == FL_OK)
                touch_view(&out);
        }
}

static void run_rgb(fl_worker *w)
{
    static const int shapes[][2] = {{1, 1}, {1, 300}, {300, 1}, {2, 3}, {17, 9}, {64, 48}};
    char err[FL_ERRLEN];
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int h = shapes[s][0], wd = shapes[s][1];
        size_t n = (size_t)h * wd * 3;
        uint8_t *px = malloc(n);
        for (size_t k = 0; k < n; k++)
            px[k] = (uint8_t)(k * 131 + s);
        fl_view v = {px, wd, h, 3, (ptrdiff_t)wd * 3};
        for (int i = 0; i < NPLANS; i++) {
            size_t nb = out_bytes(&plans[i]);
            uint8_t *out = malloc(nb);
            for (uint64_t index = 0; index < 8; index++) {
                /* full size 0: the image's own; 2x: as after a 1/2-scale Pillow draft */
                int full = (int)(index & 1) * 2;
                int rc = fl_process_rgb(w, &plans[i], &v, full * wd, full * h, full ? full : 1, 3, 0, index, out, err);
                count(rc);
                if (rc == FL_OK)
                    for (size_t k = 0; k < nb; k++)
                        checksum += out[k];
            }
            free(out);
        }
        free(px);
    }
}

int main(int argc, char **argv)
{
    make_plans();
    plans[2].ops[1].pad = 1;   /* CenterCrop pads an image smaller than the crop */
    plans[2].ops[1].fill[0] = 10, plans[2].ops[1].fill[1] = 20, plans[2].ops[1].fill[2] = 30;
    for (int i = 0; i < NPLANS; i++)   /* unset jitter ranges: factor 1, hue 0 */
        for (int j = 0; j < 3; j++)
            if (plans[i].jitter[j][0] == 0 && plans[i].jitter[j][1] == 0)
                plans[i].jitter[j][0] = plans[i].jitter[j][1] = 1;
    fl_worker w;
    if (fl_worker_init(&w) != FL_OK)
        return 2;
    fl_jpeg_decoder *d = fl_jpeg_decoder_new();
    fl_png_decoder *pd = fl_png_decoder_new();
    long files = 0;
    for (int path = 0; path < FL_SIMD_COUNT; path++)   /* every vector path this CPU runs */
        if (fl_simd_set(path) == FL_OK)
            run_rgb(&w);
    fl_simd_init();
    for (int a = 1; a < argc; a++) {
        DIR *dir = opendir(argv[a]);
        if (!dir) {
            perror(argv[a]);
            return 2;
        }
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", argv[a], e->d_name);
            size_t size = 0;
            char err[FL_ERRLEN];
            count(fl_read_file(&w, path, 1, &size, err));   /* the sniffing read, then the whole file */
            int rc = fl_read_file(&w, path, 0, &size, err);
            count(rc);
            if (rc != FL_OK) {   /* empty files: still hand libjpeg a zero-length buffer */
                run_decoder(d, (const uint8_t *)"", 0);
                files++;
                continue;
            }
            uint8_t *data = malloc(size);
            memcpy(data, w.file.data, size);
            run_decoder(d, data, size);
            run_png_decoder(pd, data, size);
            fl_jpeg_info scanned;   /* the marker scan of the route without libjpeg-turbo */
            count(fl_jpeg_scan(data, size, &scanned));
            for (int path = 0; path < FL_SIMD_COUNT; path++)
                if (fl_simd_set(path) == FL_OK) {
                    run_plans(&w, data, size, (uint64_t)files);
                    run_pillow(&w, data, size, (uint64_t)files);
                }
            fl_simd_init();
            free(data);
            files++;
        }
        closedir(dir);
    }
    fl_jpeg_decoder_free(d);
    fl_png_decoder_free(pd);
    fl_worker_free(&w);
    printf("asan_driver: %ld files, %ld kernel calls; status counts:", files, calls);
    for (int s = -8; s < 8; s++)
        if (by_status[(s + 8) & 15])
            printf(" %d:%ld", s, by_status[(s + 8) & 15]);
    printf(" (checksum %lu)\n", checksum);
    return 0;
}
