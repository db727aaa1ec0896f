#define _POSIX_C_SOURCE 200809L  /* open(O_CLOEXEC), fstat under -std=c11 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include "sample.h"

/* A file's bytes through the C runtime's descriptors: POSIX, or the MSVC/UCRT
 * ones on Windows, where a path (UTF-8 from os.fsencode there too) is opened
 * as UTF-16 so that any name opens, whatever the code page. */
#ifdef _WIN32
#include <io.h>
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
typedef struct _stat64 file_stat;
#define fstat_fd _fstat64
#define close_fd _close
#define IS_REGULAR(mode) (((mode) & _S_IFMT) == _S_IFREG)

static int open_fd(fl_worker *w, const char *path)
{
    int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, NULL, 0);
    if (n <= 0) {
        errno = EILSEQ;
        return -1;
    }
    if (fl_buffer_reserve(&w->wide_path, (size_t)n * sizeof(wchar_t)) != FL_OK) {
        errno = ENOMEM;
        return -1;
    }
    wchar_t *wide = (wchar_t *)w->wide_path.data;
    MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, path, -1, wide, n);
    return _wopen(wide, _O_RDONLY | _O_BINARY | _O_NOINHERIT);
}

static long long read_fd(int fd, uint8_t *buf, size_t n)
{
    return _read(fd, buf, n > INT_MAX ? INT_MAX : (unsigned)n);
}
#else
#include <unistd.h>
typedef struct stat file_stat;
#define fstat_fd fstat
#define close_fd close
#define IS_REGULAR(mode) S_ISREG(mode)

/* O_NONBLOCK: a FIFO or device named like an image must not block the worker
 * in open(); only regular files are read, where it has no effect. */
static int open_fd(fl_worker *w, const char *path)
{
    (void)w;
    return open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
}

static long long read_fd(int fd, uint8_t *buf, size_t n)
{
    return read(fd, buf, n);
}
#endif

int fl_worker_init(fl_worker *w)
{
    memset(w, 0, sizeof(*w));
    w->jpeg = fl_jpeg_decoder_new();
    w->png = fl_png_decoder_new();
    if (w->jpeg && w->png)
        return FL_OK;
    fl_worker_free(w);
    return FL_ERR_NOMEM;
}

void fl_worker_free(fl_worker *w)
{
    if (w->jpeg)
        fl_jpeg_decoder_free(w->jpeg);
    if (w->png)
        fl_png_decoder_free(w->png);
    fl_resampler_free(&w->resampler);
    fl_buffer_free(&w->resized);
    fl_buffer_free(&w->rgbx);
    fl_buffer_free(&w->file);
    fl_buffer_free(&w->wide_path);
    memset(w, 0, sizeof(*w));
}

static int read_all(int fd, uint8_t *buf, size_t n, size_t *got)
{
    while (*got < n) {
        long long r = read_fd(fd, buf + *got, n - *got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? errno : -1;
        *got += (size_t)r;
    }
    return 0;
}

/* Whether the first bytes of a file (n of them, n >= 3) start a format the
 * compiled route decodes. */
static int known_format(const uint8_t *head, size_t n)
{
    static const uint8_t soi[3] = {0xFF, 0xD8, 0xFF};
    return memcmp(head, soi, 3) == 0 || (fl_png_available() && fl_png_signature(head, n));
}

#define FL_READ_WHOLE (256 * 1024)   /* bytes: files up to this size are read in one call */

int fl_read_file(fl_worker *w, const char *path, int known_only, size_t *size, char *err)
{
    /* The file is named (last: a long path cut short costs less than the reason): the record that
     * holds the path may be named otherwise, as a dataset's row is. */
    int fd = open_fd(w, path);
    if (fd < 0) {
        snprintf(err, FL_ERRLEN, "cannot open: %s: %s", strerror(errno), path);
        return FL_ERR_IO;
    }
    file_stat st;
    if (fstat_fd(fd, &st) != 0 || !IS_REGULAR(st.st_mode)) {
        snprintf(err, FL_ERRLEN, "not a regular file: %s", path);
        close_fd(fd);
        return FL_ERR_IO;
    }
    size_t n = (size_t)st.st_size, got = 0;
    if (fl_buffer_reserve(&w->file, n ? n : 1) != FL_OK) {
        close_fd(fd);
        snprintf(err, FL_ERRLEN, "out of memory reading %zu bytes", n);
        return FL_ERR_NOMEM;
    }
    /* The format is told from the first bytes (a JPEG's SOI, a PNG's signature). A large file's
     * come first, so one of another format is not read whole only to go to another route; a
     * small file is read in one call: a system call fewer, 0.5 us of 4.9 for a 3 KB file here. */
    int e = read_all(fd, w->file.data, known_only && n > FL_READ_WHOLE ? 8 : n, &got);
    if (!e && known_only && n >= 3 && !known_format(w->file.data, n < 8 ? n : 8)) {
        close_fd(fd);
        snprintf(err, FL_ERRLEN, "not a JPEG or PNG stream");
        return FL_NOT_JPEG;
    }
    if (!e)
        e = read_all(fd, w->file.data, n, &got);
    if (e) {
        snprintf(err, FL_ERRLEN, "read failed after %zu of %zu bytes: %s: %s", got, n,
                 e > 0 ? strerror(e) : "file shrank while reading", path);
        close_fd(fd);
        return FL_ERR_IO;
    }
    close_fd(fd);
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

/* An EXIF orientation as an element of the dihedral group, in the form
 * fl_write_sample applies: displayed = fliplr^hflip(np.rot90(stored, rot90)).
 * Checked against PIL.ImageOps.exif_transpose: 2 FLIP_LEFT_RIGHT, 3
 * ROTATE_180, 4 FLIP_TOP_BOTTOM (= fliplr of rot 180), 5 TRANSPOSE (= fliplr
 * of rot 270), 6 ROTATE_270, 7 TRANSVERSE (= fliplr of rot 90), 8 ROTATE_90.
 * Orientations 0 (no tag) and 1 are the identity. */
typedef struct {
    int rot90, hflip;
    int shown;   /* the same turn as fl_resample_shown takes it */
} fl_orient;

static fl_orient orient_of(int orientation)
{
    enum { RX = FL_SHOWN_REV_X, RY = FL_SHOWN_REV_Y, SW = FL_SHOWN_SWAP };
    static const fl_orient table[9] = {{0, 0, 0}, {0, 0, 0}, {0, 1, RX}, {2, 0, RX | RY}, {2, 1, RY},
                                       {3, 1, SW}, {3, 0, SW | RY}, {1, 1, SW | RX | RY}, {1, 0, SW | RX}};
    return orientation >= 1 && orientation <= 8 ? table[orientation] : table[0];
}

/* Resample box of a 3-channel RGB or 4-channel RGBX img into the RGB dst.
 * RGBX is resampled as four channels (each channel is filtered on its own,
 * so R, G and B come out as from the RGB image) and the fourth dropped. */
static int resample_rgb(fl_worker *w, const fl_plan *p, const fl_view *img, fl_rect box, int shown, fl_view *dst)
{
    if (img->channels == 3)
        return fl_resample_shown(&w->resampler, img, box, p->filter, p->antialias, shown, dst);
    if (fl_buffer_reserve(&w->rgbx, (size_t)dst->width * dst->height * 4) != FL_OK)
        return FL_ERR_NOMEM;
    fl_view tmp = {w->rgbx.data, dst->width, dst->height, 4, (ptrdiff_t)dst->width * 4};
    int rc = fl_resample_shown(&w->resampler, img, box, p->filter, p->antialias, shown, &tmp);
    if (rc != FL_OK)
        return rc;
    for (int y = 0; y < dst->height; y++) {
        const uint8_t *s = tmp.data + (ptrdiff_t)y * tmp.stride;
        uint8_t *d = dst->data + (ptrdiff_t)y * dst->stride;
        int x = 0;
        for (; x + 1 < dst->width; x++, s += 4, d += 3)   /* four bytes out, the fourth overwritten next */
            memcpy(d, s, 4);
        memcpy(d, s, 3);
    }
    return FL_OK;
}

/* Resample box of img into the worker's `resized` image (rw x rh, in the
 * image's stored orientation; only its part `shown`, the rest is the padding
 * colour), jitter it, and write it into `out` through the stored-to-displayed
 * orientation `o` composed with the plan's random rotation and flips, and
 * the lookup table. */
static int finish(fl_worker *w, const fl_plan *p, const fl_view *img, fl_rect box, int rw, int rh,
                  fl_rect shown, const uint8_t *fill, fl_orient o, const fl_rng *rng, void *out, char *err)
{
    size_t n = (size_t)rw * rh * 3;
    if (fl_buffer_reserve(&w->resized, n) != FL_OK) {
        snprintf(err, FL_ERRLEN, "out of memory");
        return FL_ERR_NOMEM;
    }
    fl_view all = {w->resized.data, rw, rh, 3, (ptrdiff_t)rw * 3};
    int sx0 = (int)shown.x0, sy0 = (int)shown.y0, sx1 = (int)shown.x1, sy1 = (int)shown.y1;
    if (sx0 > 0 || sy0 > 0 || sx1 < rw || sy1 < rh)
        for (size_t i = 0; i < n; i += 3)
            memcpy(all.data + i, fill, 3);
    fl_view dst = {all.data + (ptrdiff_t)sy0 * all.stride + sx0 * 3, sx1 - sx0, sy1 - sy0, 3, all.stride};
    int rc = resample_rgb(w, p, img, box, o.shown, &dst);
    if (rc != FL_OK) {
        snprintf(err, FL_ERRLEN, rc == FL_ERR_NOMEM ? "out of memory" :
                 "resample rejected box (%.3f, %.3f, %.3f, %.3f) of a %dx%d image",
                 box.x0, box.y0, box.x1, box.y1, img->width, img->height);
        return rc;
    }
    double f[4];
    for (int i = 0; i < 4; i++) {   /* brightness, contrast, saturation, hue */
        double lo = p->jitter[i][0], hi = p->jitter[i][1];
        f[i] = lo == hi ? lo : lo + (hi - lo) * fl_rng_uniform(rng, FL_SLOT_JITTER + i);
    }
    fl_color_jitter(&all, (float)f[0], (float)f[1], (float)f[2]);
    if (f[3] != 0)
        fl_adjust_hue(&all, (float)f[3]);
    int rot = 0;
    if (p->p_rot90 > 0 && fl_rng_uniform(rng, FL_SLOT_ROT90) < p->p_rot90)
        rot = 1 + (int)(fl_rng_uniform(rng, FL_SLOT_ROT90 + 1) * 3);
    int hflip = p->p_hflip > 0 && fl_rng_uniform(rng, FL_SLOT_HFLIP) < p->p_hflip;
    int vflip = p->p_vflip > 0 && fl_rng_uniform(rng, FL_SLOT_VFLIP) < p->p_vflip;
    /* The augmentation A = vflip^v . hflip^h . rot^k acts on the displayed
     * image O(stored), O = hflip^ho . rot^ko. With rot^k . hflip = hflip .
     * rot^-k and vflip = hflip . rot^2 (rot^2 is central):
     * A . O = hflip^(h ^ ho ^ v) . rot^(ko + (ho ? -k : k) + 2v). */
    int k = (o.rot90 + (o.hflip ? -rot : rot) + 2 * vflip) & 3;
    int h = hflip ^ o.hflip ^ vflip;
    fl_out dest = {out, p->dtype, p->layout, p->out_h, p->out_w, 3};
    return fl_write_sample(&all, k, h, 0, p->perm, p->lut, &dest);
}

/* The source box of the shown part, and that part of the output (in the
 * displayed orientation). */
static int plan_box(const fl_plan *p, int w, int h, const fl_rng *rng, fl_rect *box, fl_pad *pad, char *err)
{
    int ow = 0, oh = 0;
    fl_geom_fail fail;
    int rc = fl_geom_plan(p->ops, p->nops, w, h, rng, box, &ow, &oh, pad, &fail);
    if (rc == FL_ERR_CROP || rc == FL_ERR_TOO_LARGE) {
        fl_geom_error(p->ops, rc, &fail, err);
        return rc;
    }
    if (rc != FL_OK || ow != p->out_w || oh != p->out_h) {
        snprintf(err, FL_ERRLEN, "transforms give a %dx%d image from a %dx%d one, batch expects %dx%d",
                 ow, oh, w, h, p->out_w, p->out_h);
        return FL_ERR_ARG;
    }
    return FL_OK;
}

static fl_rect rect_of(const fl_pad *pad)
{
    return (fl_rect){pad->x0, pad->y0, pad->x1, pad->y1};
}

/* One sample's geometry on an image stored as width x height and shown
 * through an EXIF orientation: planned in displayed coordinates (what the
 * Pillow route sees after exif_transpose), then carried back to the stored
 * image, which is decoded and resampled to the output size in stored
 * orientation; the final write applies the orientation along with the random
 * flips. The resampling takes its taps and pass order from the displayed
 * image (fl_resample_shown), so this is the Pillow route's computation,
 * transpose-then-resize, to the bit. */
typedef struct {
    fl_rng rng;
    fl_orient orient;
    fl_rect box;            /* the source rectangle, stored coordinates */
    fl_rect shown;          /* the part of the rw x rh resized image the box fills (the rest is padding) */
    fl_pad pad;
    int rw, rh;             /* the resized image, stored orientation */
    int x0, y0, x1, y1;     /* the stored pixels to decode: the box and the filter's reach, clamped */
} fl_geom;

static int plan_stored(const fl_plan *p, int width, int height, int orientation, uint64_t seed, uint64_t epoch,
                       uint64_t index, fl_geom *g, char *err)
{
    g->orient = orient_of(orientation);
    int swap = g->orient.rot90 & 1;
    int disp_w = swap ? height : width, disp_h = swap ? width : height;
    g->rw = swap ? p->out_h : p->out_w;
    g->rh = swap ? p->out_w : p->out_h;
    g->rng = fl_rng_for(seed, epoch, index);
    fl_rect dbox;
    int rc = plan_box(p, disp_w, disp_h, &g->rng, &dbox, &g->pad, err);
    if (rc != FL_OK)
        return rc;
    g->box = fl_stored_box(orientation, dbox, width, height);
    g->shown = fl_stored_box(orientation, rect_of(&g->pad), g->rw, g->rh);

    /* The box plus the resampling filter's reach around it. */
    fl_rect box = g->box;
    double sx = (box.x1 - box.x0) / (g->shown.x1 - g->shown.x0), sy = (box.y1 - box.y0) / (g->shown.y1 - g->shown.y0);
    double sup = filter_support(p->antialias ? p->filter : FL_NEAREST);
    int mx = (int)ceil(sup * (sx > 1 ? sx : 1)) + 1, my = (int)ceil(sup * (sy > 1 ? sy : 1)) + 1;
    g->x0 = (int)floor(box.x0) - mx;
    g->y0 = (int)floor(box.y0) - my;
    g->x1 = (int)ceil(box.x1) + mx;
    g->y1 = (int)ceil(box.y1) + my;
    if (g->x0 < 0) g->x0 = 0;
    if (g->y0 < 0) g->y0 = 0;
    if (g->x1 > width) g->x1 = width;
    if (g->y1 > height) g->y1 = height;
    return FL_OK;
}

static int too_large(const fl_plan *p, int width, int height, char *err)
{
    if (p->max_pixels > 0 && (int64_t)width * height > p->max_pixels) {
        snprintf(err, FL_ERRLEN, "image is %dx%d = %lld pixels, over the limit of %lld",
                 width, height, (long long)width * height, (long long)p->max_pixels);
        return 1;
    }
    return 0;
}

static int process_begun(fl_worker *w, const fl_plan *p, const uint8_t *data, size_t size,
                         const fl_jpeg_info *info, uint64_t seed, uint64_t epoch, uint64_t index,
                         void *out, char *err);

int fl_process_jpeg(fl_worker *w, const fl_plan *p, const uint8_t *data, size_t size,
                    uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err)
{
    fl_jpeg_info info;
    int rc = fl_jpeg_begin(w->jpeg, data, size, &info, err);   /* the header, parsed once */
    if (rc != FL_OK)
        return rc;
    return process_begun(w, p, data, size, &info, seed, epoch, index, out, err);
}

/* fl_process_jpeg once the header is read: every return before the decode
 * hands the decoder back with fl_jpeg_abort. */
static int process_begun(fl_worker *w, const fl_plan *p, const uint8_t *data, size_t size,
                         const fl_jpeg_info *pinfo, uint64_t seed, uint64_t epoch, uint64_t index,
                         void *out, char *err)
{
    const fl_jpeg_info info = *pinfo;
    int rc;
    if (too_large(p, info.width, info.height, err)) {
        fl_jpeg_abort(w->jpeg);
        return FL_ERR_TOO_LARGE;
    }
    if (info.colorspace == FL_CS_CMYK || info.colorspace == FL_CS_YCCK || (p->honour_exif && info.orientation < 0)) {
        fl_jpeg_abort(w->jpeg);
        return FL_UNSUPPORTED;   /* colour conversion, and an orientation only Pillow reads, are its route's job */
    }
    fl_geom g;
    if ((rc = plan_stored(p, info.width, info.height, p->honour_exif ? info.orientation : 0,
                          seed, epoch, index, &g, err)) != FL_OK) {
        fl_jpeg_abort(w->jpeg);
        return rc;
    }
    const fl_rect box = g.box;
    const int x0 = g.x0, y0 = g.y0, x1 = g.x1, y1 = g.y1;
    double shown_w = g.shown.x1 - g.shown.x0, shown_h = g.shown.y1 - g.shown.y0;
    /* DCT scaling keeps the decoded crop at least reducing_gap x the output,
     * as Pillow's thumbnail(reducing_gap=...) does with draft(). */
    double gap = p->reducing_gap > 1 ? p->reducing_gap : 1;
    /* (a huge upscale of a sliver of a pixel asks more than an int: as much as can be) */
    double want_w = ceil(gap * shown_w * (double)(x1 - x0) / (box.x1 - box.x0));
    double want_h = ceil(gap * shown_h * (double)(y1 - y0) / (box.y1 - box.y0));
    int min_w = want_w < INT_MAX ? (int)want_w : INT_MAX, min_h = want_h < INT_MAX ? (int)want_h : INT_MAX;

    fl_view img;
    fl_jpeg_region reg;
    rc = fl_jpeg_decode_begun(w->jpeg, data, size, &info, x0, y0, x1, y1, min_w, min_h, p->max_denom,
                              0, p->max_pixels, &img, &reg, err);
    if (rc != FL_OK)
        return rc;

    /* Map the box into the decoded pixels' coordinates (see fl_jpeg_region). */
    const double k = 1.0 / reg.denom;
    fl_rect b = {box.x0 * k - reg.off_x, box.y0 * k - reg.off_y,
                 box.x1 * k - reg.off_x, box.y1 * k - reg.off_y};
    if (b.x0 < 0) b.x0 = 0;
    if (b.y0 < 0) b.y0 = 0;
    if (b.x1 > img.width) b.x1 = img.width;
    if (b.y1 > img.height) b.y1 = img.height;
    return finish(w, p, &img, b, g.rw, g.rh, g.shown, g.pad.fill, g.orient, &g.rng, out, err);
}

int fl_process_png(fl_worker *w, const fl_plan *p, const uint8_t *data, size_t size,
                   uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err)
{
    fl_png_info info;
    int rc = fl_png_begin(w->png, data, size, p->honour_exif, &info, err);
    if (rc != FL_OK)
        return rc == FL_ERR_DECODE ? FL_UNSUPPORTED : rc;   /* Pillow's verdict on a bad file */
    if (too_large(p, info.width, info.height, err)) {
        fl_png_abort(w->png);
        return FL_ERR_TOO_LARGE;
    }
    fl_geom g;
    if ((rc = plan_stored(p, info.width, info.height, info.orientation, seed, epoch, index, &g, err)) != FL_OK) {
        fl_png_abort(w->png);
        return rc;
    }
    fl_view region, img;
    rc = fl_png_decode_begun(w->png, g.x0, g.y0, g.x1, g.y1, &region, &img, err);
    if (rc != FL_OK)
        return rc == FL_ERR_DECODE ? FL_UNSUPPORTED : rc;
    /* img has the whole image's geometry (its rows outside the region are
     * never read), so the box is the one fl_process_rgb resamples. */
    fl_rect b = g.box;
    if (b.x1 > img.width) b.x1 = img.width;
    if (b.y1 > img.height) b.y1 = img.height;
    return finish(w, p, &img, b, g.rw, g.rh, g.shown, g.pad.fill, g.orient, &g.rng, out, err);
}

int fl_process_encoded(fl_worker *w, const fl_plan *p, const uint8_t *data, size_t size,
                       uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err)
{
    if (fl_png_signature(data, size)) {
        if (!fl_png_available()) {
            snprintf(err, FL_ERRLEN, "built without libspng");
            return FL_NOT_JPEG;
        }
        return fl_process_png(w, p, data, size, seed, epoch, index, out, err);
    }
    return fl_process_jpeg(w, p, data, size, seed, epoch, index, out, err);
}

int fl_process_decoded(fl_worker *w, const fl_plan *p, const fl_view *img, int img_w, int img_h,
                       int full_w, int full_h, int scale, uint64_t seed, uint64_t epoch, uint64_t index,
                       void *out, char *err)
{
    if ((img->channels != 3 && img->channels != 4) || img->width < 1 || img->height < 1 ||
        img->width != img_w || img->height > img_h || full_w < 1 || full_h < 1 || scale < 1) {
        snprintf(err, FL_ERRLEN, "expected an RGB image, got %d channels %dx%d (of %dx%d)",
                 img->channels, img->width, img->height, img_w, img_h);
        return FL_ERR_ARG;
    }
    fl_rng rng = fl_rng_for(seed, epoch, index);
    fl_rect box;
    fl_pad pad;
    int rc = plan_box(p, full_w, full_h, &rng, &box, &pad, err);
    if (rc != FL_OK)
        return rc;
    const double k = 1.0 / scale;   /* as fl_jpeg_region's mapping */
    box = (fl_rect){box.x0 * k, box.y0 * k, box.x1 * k, box.y1 * k};
    if (box.x1 > img_w) box.x1 = img_w;
    if (box.y1 > img_h) box.y1 = img_h;
    return finish(w, p, img, box, p->out_w, p->out_h, rect_of(&pad), pad.fill, orient_of(1), &rng, out, err);
}

int fl_process_rgb(fl_worker *w, const fl_plan *p, const fl_view *img, int full_w, int full_h, int scale,
                   uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err)
{
    if (full_w <= 0 || full_h <= 0) {
        full_w = img->width;
        full_h = img->height;
        scale = 1;
    }
    return fl_process_decoded(w, p, img, img->width, img->height, full_w, full_h, scale, seed, epoch, index,
                              out, err);
}

int fl_pillow_jpeg_plan(const fl_plan *p, const uint8_t *data, size_t size, double bomb_pixels,
                        uint64_t seed, uint64_t epoch, uint64_t index, fl_pillow_jpeg *r, char *err)
{
    fl_jpeg_info info;
    int rc = fl_jpeg_scan(data, size, &info);
    if (rc != FL_OK)   /* not a JPEG, or a header Pillow's reader will say what is wrong with */
        return rc == FL_NOT_JPEG ? FL_NOT_JPEG : FL_UNSUPPORTED;
    if ((info.components != 1 && info.components != 3) ||
        (p->honour_exif && info.orientation != 0 && info.orientation != 1))
        return FL_UNSUPPORTED;
    int64_t w = info.width, h = info.height;
    if (p->max_pixels > 0 && w * h > p->max_pixels) {
        snprintf(err, FL_ERRLEN, "image is %lldx%lld = %lld pixels, over the limit of %lld",
                 (long long)w, (long long)h, (long long)(w * h), (long long)p->max_pixels);
        return FL_ERR_TOO_LARGE;
    }
    if (bomb_pixels > 0 && (double)(w * h) > 2 * bomb_pixels) {
        snprintf(err, FL_ERRLEN, "over the limit of Pillow's decompression-bomb guard: %lldx%lld pixels",
                 (long long)w, (long long)h);
        return FL_ERR_TOO_LARGE;
    }
    int complete;
    rc = fl_jpeg_check_stream(data, size, &complete, err);
    if (rc != FL_OK)
        return rc;

    fl_rng rng = fl_rng_for(seed, epoch, index);
    fl_rect box;
    fl_pad pad;
    int ow = 0, oh = 0;
    int planned = fl_geom_plan(p->ops, p->nops, (int)w, (int)h, &rng, &box, &ow, &oh, &pad, NULL) == FL_OK;
    int scale = 1;
    double gap = p->reducing_gap;
    int min_out = p->out_w < p->out_h ? p->out_w : p->out_h;
    if (p->max_denom > 1 && planned && !((double)(w < h ? w : h) < 2 * gap * min_out)) {
        /* draft(): the whole image scaled so that the crop keeps gap x the output's pixels */
        double dx = box.x1 - box.x0, dy = box.y1 - box.y0;
        double want_w = ceil((double)w * gap * ow / (dx > 1e-9 ? dx : 1e-9));
        double want_h = ceil((double)h * gap * oh / (dy > 1e-9 ? dy : 1e-9));
        int64_t rw = want_w < 1 ? 1 : want_w > 1e15 ? (int64_t)1e15 : (int64_t)want_w;
        int64_t rh = want_h < 1 ? 1 : want_h > 1e15 ? (int64_t)1e15 : (int64_t)want_h;
        int64_t k = w / rw < h / rh ? w / rw : h / rh;
        scale = k >= 8 ? 8 : k >= 4 ? 4 : k >= 2 ? 2 : 1;
    }
    r->width = (int)w;
    r->height = (int)h;
    r->scale = scale;
    r->scaled_width = (int)((w + scale - 1) / scale);   /* as libjpeg's output size */
    r->scaled_height = (int)((h + scale - 1) / scale);
    r->rows = r->scaled_height;
    if (complete && planned) {
        /* The last row the vertical resampling pass reads: the box's bottom
         * plus the widest filter support (bilinear, widened by the downscale). */
        double y0 = box.y0 / scale, y1 = box.y1 / scale;
        if (y1 > r->scaled_height)
            y1 = r->scaled_height;
        int shown = pad.y1 - pad.y0;
        double sy = shown > 0 ? (y1 - y0) / shown : 1.0;
        double need = ceil(y1 + (sy > 1 ? sy : 1.0)) + 2;
        if (need < r->rows)
            r->rows = (int)need;
    }
    return FL_OK;
}
