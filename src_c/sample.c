#define _POSIX_C_SOURCE 200809L  /* open(O_CLOEXEC), fstat under -std=c11 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "sample.h"

int fl_worker_init(fl_worker *w)
{
    memset(w, 0, sizeof(*w));
    w->jpeg = fl_jpeg_decoder_new();
    return w->jpeg ? FL_OK : FL_ERR_NOMEM;
}

void fl_worker_free(fl_worker *w)
{
    if (w->jpeg)
        fl_jpeg_decoder_free(w->jpeg);
    fl_resampler_free(&w->resampler);
    fl_buffer_free(&w->resized);
    fl_buffer_free(&w->file);
    memset(w, 0, sizeof(*w));
}

int fl_read_file(fl_worker *w, const char *path, size_t *size, char *err)
{
    /* O_NONBLOCK: a FIFO or device named like an image must not block the
     * worker in open(); only regular files are read, where it has no effect. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        snprintf(err, FL_ERRLEN, "cannot open: %s", strerror(errno));
        return FL_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, FL_ERRLEN, "not a regular file");
        close(fd);
        return FL_ERR_IO;
    }
    size_t n = (size_t)st.st_size, got = 0;
    if (fl_buffer_reserve(&w->file, n ? n : 1) != FL_OK) {
        close(fd);
        snprintf(err, FL_ERRLEN, "out of memory reading %zu bytes", n);
        return FL_ERR_NOMEM;
    }
    while (got < n) {
        ssize_t r = read(fd, w->file.data + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            snprintf(err, FL_ERRLEN, "read failed after %zu of %zu bytes: %s", got, n,
                     r < 0 ? strerror(errno) : "file shrank while reading");
            close(fd);
            return FL_ERR_IO;
        }
        got += (size_t)r;
    }
    close(fd);
    if (n == 0) {
        snprintf(err, FL_ERRLEN, "empty file (0 bytes)");
        return FL_ERR_DECODE;
    }
    *size = n;
    return FL_OK;
}

static double filter_support(int filter)
{
    return filter == FL_BILINEAR ? 1.0 : 0.5;
}

/* Resample box of img into the worker's `resized` image, jitter it, and
 * write it into `out` through the plan's flips and lookup table. */
static int finish(fl_worker *w, const fl_plan *p, const fl_view *img, fl_rect box,
                  const fl_rng *rng, void *out, char *err)
{
    size_t n = (size_t)p->out_w * p->out_h * 3;
    if (fl_buffer_reserve(&w->resized, n) != FL_OK) {
        snprintf(err, FL_ERRLEN, "out of memory");
        return FL_ERR_NOMEM;
    }
    fl_view dst = {w->resized.data, p->out_w, p->out_h, 3, (ptrdiff_t)p->out_w * 3};
    int rc = fl_resample(&w->resampler, img, box, p->filter, p->antialias, &dst);
    if (rc != FL_OK) {
        snprintf(err, FL_ERRLEN, rc == FL_ERR_NOMEM ? "out of memory" :
                 "resample rejected box (%.3f, %.3f, %.3f, %.3f) of a %dx%d image",
                 box.x0, box.y0, box.x1, box.y1, img->width, img->height);
        return rc;
    }
    if (p->brightness > 0 || p->contrast > 0 || p->saturation > 0) {
        double f[3], s[3] = {p->brightness, p->contrast, p->saturation};
        for (int i = 0; i < 3; i++) {
            double lo = s[i] < 1 ? 1 - s[i] : 0;
            f[i] = s[i] > 0 ? lo + (1 + s[i] - lo) * fl_rng_uniform(rng, FL_SLOT_JITTER + i) : 1.0;
        }
        fl_color_jitter(&dst, (float)f[0], (float)f[1], (float)f[2]);
    }
    int rot = 0;
    if (p->p_rot90 > 0 && fl_rng_uniform(rng, FL_SLOT_ROT90) < p->p_rot90)
        rot = 1 + (int)(fl_rng_uniform(rng, FL_SLOT_ROT90 + 1) * 3);
    int hflip = p->p_hflip > 0 && fl_rng_uniform(rng, FL_SLOT_HFLIP) < p->p_hflip;
    int vflip = p->p_vflip > 0 && fl_rng_uniform(rng, FL_SLOT_VFLIP) < p->p_vflip;
    fl_out o = {out, p->dtype, p->layout, p->out_h, p->out_w, 3};
    return fl_write_sample(&dst, rot, hflip, vflip, p->perm, p->lut, &o);
}

static int plan_box(const fl_plan *p, int w, int h, const fl_rng *rng, fl_rect *box, char *err)
{
    int ow, oh;
    if (fl_geom_plan(p->ops, p->nops, w, h, rng, box, &ow, &oh) != FL_OK || ow != p->out_w || oh != p->out_h) {
        snprintf(err, FL_ERRLEN, "transforms give a %dx%d image from a %dx%d one, batch expects %dx%d",
                 ow, oh, w, h, p->out_w, p->out_h);
        return FL_ERR_ARG;
    }
    return FL_OK;
}

int fl_process_jpeg(fl_worker *w, const fl_plan *p, const uint8_t *data, size_t size,
                    uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err)
{
    fl_jpeg_info info;
    int rc = fl_jpeg_read_info(w->jpeg, data, size, &info, err);
    if (rc != FL_OK)
        return rc;
    if (p->max_pixels > 0 && (int64_t)info.width * info.height > p->max_pixels) {
        snprintf(err, FL_ERRLEN, "image is %dx%d = %lld pixels, over the limit of %lld",
                 info.width, info.height, (long long)info.width * info.height, (long long)p->max_pixels);
        return FL_ERR_TOO_LARGE;
    }
    if (info.colorspace == FL_CS_CMYK || info.colorspace == FL_CS_YCCK ||
        (p->honour_exif && info.orientation > 1))
        return FL_UNSUPPORTED;   /* the oriented geometry is the Pillow route's job */

    fl_rng rng = fl_rng_for(seed, epoch, index);
    fl_rect box;
    if ((rc = plan_box(p, info.width, info.height, &rng, &box, err)) != FL_OK)
        return rc;

    /* Decode the box plus the resampling filter's reach around it. */
    double sx = (box.x1 - box.x0) / p->out_w, sy = (box.y1 - box.y0) / p->out_h;
    double sup = filter_support(p->antialias ? p->filter : FL_NEAREST);
    int mx = (int)ceil(sup * (sx > 1 ? sx : 1)) + 1, my = (int)ceil(sup * (sy > 1 ? sy : 1)) + 1;
    int x0 = (int)floor(box.x0) - mx, y0 = (int)floor(box.y0) - my;
    int x1 = (int)ceil(box.x1) + mx, y1 = (int)ceil(box.y1) + my;
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > info.width) x1 = info.width;
    if (y1 > info.height) y1 = info.height;
    int min_w = (int)ceil(p->out_w * (double)(x1 - x0) / (box.x1 - box.x0));
    int min_h = (int)ceil(p->out_h * (double)(y1 - y0) / (box.y1 - box.y0));

    fl_view img;
    fl_jpeg_region reg;
    rc = fl_jpeg_decode_region(w->jpeg, data, size, x0, y0, x1, y1, min_w, min_h, p->max_denom,
                               p->honour_exif, p->max_pixels, &img, &reg, err);
    if (rc != FL_OK)
        return rc;

    /* Map the box into the decoded pixels' coordinates. */
    double kx = (double)reg.scaled_width / reg.width, ky = (double)reg.scaled_height / reg.height;
    fl_rect b = {box.x0 * kx - reg.off_x, box.y0 * ky - reg.off_y,
                 box.x1 * kx - reg.off_x, box.y1 * ky - reg.off_y};
    if (b.x0 < 0) b.x0 = 0;
    if (b.y0 < 0) b.y0 = 0;
    if (b.x1 > img.width) b.x1 = img.width;
    if (b.y1 > img.height) b.y1 = img.height;
    return finish(w, p, &img, b, &rng, out, err);
}

int fl_process_rgb(fl_worker *w, const fl_plan *p, const fl_view *img,
                   uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err)
{
    if (img->channels != 3 || img->width < 1 || img->height < 1) {
        snprintf(err, FL_ERRLEN, "expected an RGB image, got %d channels %dx%d",
                 img->channels, img->width, img->height);
        return FL_ERR_ARG;
    }
    fl_rng rng = fl_rng_for(seed, epoch, index);
    fl_rect box;
    int rc = plan_box(p, img->width, img->height, &rng, &box, err);
    return rc != FL_OK ? rc : finish(w, p, img, box, &rng, out, err);
}
