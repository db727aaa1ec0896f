/* One training sample, end to end: file bytes -> header -> crop plan ->
 * decode of just the needed region -> antialiased resample -> colour jitter
 * -> flip/rotate + normalise + convert, written straight into its batch row.
 *
 * A fl_worker is one thread's scratch (decoder, tap tables, intermediate
 * images, file buffer). Its buffers only grow, so a warmed-up worker makes no
 * allocation per sample. Nothing here touches Python: a whole chunk of
 * samples runs with the GIL released. */
#ifndef FL_SAMPLE_H
#define FL_SAMPLE_H

#include "fl_common.h"
#include "augment.h"
#include "geometry.h"
#include "jpeg_decode.h"
#include "png_decode.h"
#include "resample.h"

typedef struct {
    fl_geom_op ops[FL_GEOM_MAX_OPS];
    int nops;
    int out_w, out_h;             /* static output size, checked against every sample's plan */
    int filter, antialias;
    int max_denom;                /* 1 disables DCT-domain downscaling */
    double reducing_gap;          /* DCT-scale only while the decoded crop stays >= gap x the output */
    int honour_exif;
    int64_t max_pixels;           /* 0: no limit */
    double p_hflip, p_vflip, p_rot90;
    double jitter[4][2];          /* brightness, contrast, saturation, hue: factor ~ U[lo, hi];
                                   * lo == hi draws nothing (1, 1, 1, 0: unchanged) */
    int dtype, layout;
    int perm[4];
    const void *lut;              /* channels x 256 entries of dtype */
} fl_plan;

typedef struct {
    fl_jpeg_decoder *jpeg;
    fl_png_decoder *png;
    fl_resampler resampler;
    fl_buffer resized;
    fl_buffer rgbx;               /* the four-byte resample of an RGBX image (Pillow's RGB layout) */
    fl_buffer file;
    fl_buffer wide_path;          /* Windows: the path being opened, as UTF-16 */
} fl_worker;

int fl_worker_init(fl_worker *w);
void fl_worker_free(fl_worker *w);

/* Read a whole file into w->file; *size gets its length. With known_only, a
 * file that does not start like a format fl_process_encoded decodes (JPEG,
 * and PNG where libspng is linked) gets FL_NOT_JPEG; one over 256 KiB is
 * left after its first bytes, so the route that takes it reads it only once. */
int fl_read_file(fl_worker *w, const char *path, int known_only, size_t *size, char *err);

/* An encoded sample of any format: a JPEG goes to fl_process_jpeg, a PNG to
 * fl_process_png, anything else is FL_NOT_JPEG (decode it another way and
 * call fl_process_rgb). */
int fl_process_encoded(fl_worker *w, const fl_plan *p, const uint8_t *data, size_t size,
                       uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err);

/* A JPEG sample. With p->honour_exif, an EXIF orientation (2..8) is applied
 * here: the crop is planned on the displayed image (width and height swapped
 * for 5..8), the matching stored rectangle is decoded and resampled, and the
 * final write turns it upright together with the random rotation and flips,
 * so the sample matches the Pillow route's (exif_transpose first) up to
 * rounding. FL_NOT_JPEG / FL_UNSUPPORTED (CMYK/YCCK, no libjpeg-turbo) ask
 * the caller to decode the image another way and call fl_process_rgb with
 * the same keys. */
int fl_process_jpeg(fl_worker *w, const fl_plan *p, const uint8_t *data, size_t size,
                    uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err);

/* A PNG sample, as fl_process_jpeg (EXIF orientation included: an eXIf
 * chunk's), with a region decode that stops after the last row the crop
 * needs. FL_UNSUPPORTED (no libspng, an eXIf chunk only Pillow can read) asks
 * the caller to decode the image another way and call fl_process_rgb with
 * the same keys; so does a file libspng finds corrupt or truncated, so that
 * Pillow's verdict (an error, or pixels where it is more lenient, as with a
 * bad IDAT checksum it does not check) is the one a sample gets on every
 * build. Only FL_ERR_TOO_LARGE and the plan's own errors are final here. */
int fl_process_png(fl_worker *w, const fl_plan *p, const uint8_t *data, size_t size,
                   uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err);

/* A sample already decoded to RGB (any other format, or a JPEG that took the
 * Pillow route): 3 channels, or 4 (RGBX, the fourth byte ignored). Random
 * draws are the same as fl_process_jpeg's. When the decoder scaled the image
 * down (Pillow's draft) by 1/scale, full_w x full_h is its size before (0:
 * img's own size, scale 1): the crop is planned on that size and mapped onto
 * img, full-resolution X to X / scale (as fl_jpeg_region). */
int fl_process_rgb(fl_worker *w, const fl_plan *p, const fl_view *img, int full_w, int full_h, int scale,
                   uint64_t seed, uint64_t epoch, uint64_t index, void *out, char *err);

/* fl_process_rgb for an image decoded at 1/scale, img_w x img_h, of which
 * `img` holds only the first rows (img->height <= img_h, img->width ==
 * img_w): the crop is planned on full_w x full_h and mapped onto the decoded
 * image, and the rows it reads must be in `img` (fl_pillow_jpeg_plan's
 * `rows`), else FL_ERR_ARG. */
int fl_process_decoded(fl_worker *w, const fl_plan *p, const fl_view *img, int img_w, int img_h,
                       int full_w, int full_h, int scale, uint64_t seed, uint64_t epoch, uint64_t index,
                       void *out, char *err);

/* ---- the JPEG route through Pillow's decoder (no libjpeg-turbo headers) ----
 *
 * Pillow's decoder cannot skip rows or columns, but it stops after the rows
 * its destination holds, so a sample asks for the leading rows its crop
 * reaches (with the resampling filter's reach) at the DCT scale Pillow's
 * draft() picks for it: the largest of 1/2, 1/4, 1/8 keeping the whole image
 * at least (gap * output / crop) times its size, where the plan allows DCT
 * scaling and the image's short side is at least 2 * gap * the output's.
 * Rows a decoder returns are final, so they are those of a full decode. */
typedef struct {
    int width, height;                /* full-resolution size as stored */
    int scale;                        /* DCT scale 1/scale: 1, 2, 4 or 8 */
    int scaled_width, scaled_height;  /* the whole image at that scale */
    int rows;                         /* leading rows of the scaled image the sample reads */
} fl_pillow_jpeg;

/* Plan one JPEG from its markers (fl_jpeg_scan, fl_jpeg_check_stream).
 * FL_OK; FL_NOT_JPEG for data that does not start like a JPEG;
 * FL_UNSUPPORTED for what this route leaves to Pillow's own reader (no
 * readable frame header, not 1 or 3 components, an EXIF orientation to
 * apply); FL_ERR_TOO_LARGE over p->max_pixels or over twice bomb_pixels
 * (Pillow's MAX_IMAGE_PIXELS, 0: none); FL_ERR_DECODE for a stream without a
 * scan or with misplaced restart markers. A truncated stream (no EOI) is
 * decoded to its last row, so that it fails every time. */
int fl_pillow_jpeg_plan(const fl_plan *p, const uint8_t *data, size_t size, double bomb_pixels,
                        uint64_t seed, uint64_t epoch, uint64_t index, fl_pillow_jpeg *r, char *err);

#endif
