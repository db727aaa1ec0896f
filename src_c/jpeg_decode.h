/* JPEG decoding through libjpeg-turbo into a reused per-thread buffer.
 *
 * Only the part of the image a crop needs is decoded: rows above the crop are
 * skipped (jpeg_skip_scanlines), columns outside it are not converted
 * (jpeg_crop_scanline), and when the crop is at least twice the output size the
 * IDCT itself scales by 1/2, 1/4 or 1/8. Every error is reported through the
 * return code and `err`; libjpeg's longjmp never crosses a caller's frame.
 *
 * Built without libjpeg-turbo (FL_HAVE_LIBJPEG_TURBO == 0), every call returns
 * FL_UNSUPPORTED and the Python layer decodes through Pillow. */
#ifndef FL_JPEG_DECODE_H
#define FL_JPEG_DECODE_H

#include "fl_common.h"

enum { FL_CS_GRAY = 1, FL_CS_YCC = 3, FL_CS_RGB = 4, FL_CS_CMYK = 5, FL_CS_YCCK = 6, FL_CS_OTHER = 0 };

typedef struct {
    int width, height;   /* full-resolution size as stored (before EXIF orientation) */
    int components;
    int colorspace;      /* FL_CS_* */
    int orientation;     /* what exif_transpose applies: the EXIF orientation 1..8, else the
                          * XMP tiff:Orientation (as Pillow's getexif); 0 when neither has one;
                          * -1 when only Pillow can tell (an XMP turn beside an Exif block that
                          * may hold a tag Pillow reads but this parser cannot) */
    int progressive;
} fl_jpeg_info;

/* Where the decoded pixels sit in full-resolution coordinates. At DCT scale
 * 1/denom each scaled pixel is the denom x denom block of source pixels it
 * was computed from, so a full-res coordinate X maps to decoded column
 * (X / denom - off_x); likewise for rows. Not X * scaled_width / width: the
 * last scaled column also covers the padding past the image's right edge
 * when the width is not a multiple of denom (Pillow's draft() box says the
 * same). The decoded view covers exactly the requested rectangle rounded
 * outward to whole scaled pixels: columns [off_x, off_x + view width) of the
 * scaled image, with off_x = floor(x0 / denom). */
typedef struct {
    int width, height;                /* full-resolution image size */
    int scaled_width, scaled_height;  /* size of the whole image at the chosen DCT scale */
    int off_x, off_y;                 /* first decoded column / row, in scaled coordinates */
    int denom;                        /* DCT scale: 1, 2, 4 or 8 */
} fl_jpeg_region;

typedef struct fl_jpeg_decoder fl_jpeg_decoder;   /* one per thread; not thread-safe */

fl_jpeg_decoder *fl_jpeg_decoder_new(void);
void fl_jpeg_decoder_free(fl_jpeg_decoder *d);

/* "libjpeg-turbo 2.1.5" or "none"; static storage. */
const char *fl_jpeg_version(void);

/* The frame header and orientation from the JPEG markers alone, without
 * libjpeg (so also in a build without it): width, height, components,
 * progressive, orientation; colorspace is a guess from the component count
 * (1 grey, 3 YCbCr, else other); the orientation from every APP1 segment
 * before the scan, as Pillow reads them. FL_OK, FL_NOT_JPEG or FL_ERR_DECODE
 * (no frame header before the scan, or a segment running past the data
 * before it). */
int fl_jpeg_scan(const uint8_t *data, size_t size, fl_jpeg_info *info);

/* What the route through Pillow's decoder, which ignores libjpeg's warnings,
 * checks itself: the stream holds at least one scan (else FL_ERR_DECODE,
 * "premature end"), and no scan without a restart interval holds a restart
 * marker followed by more data (FL_ERR_DECODE, "Corrupt JPEG data": libjpeg
 * would pad the rest of the scan with grey). *complete is 1 when the walk
 * through segments and scans ends at an EOI marker, 0 when the data runs
 * out first (truncated). FL_OK, FL_NOT_JPEG or FL_ERR_DECODE with `err`. */
int fl_jpeg_check_stream(const uint8_t *data, size_t size, int *complete, char *err);

/* Read the header only. FL_OK, FL_NOT_JPEG (does not start with FF D8 FF,
 * Pillow's test too), FL_UNSUPPORTED (built without libjpeg-turbo) or
 * FL_ERR_DECODE with `err` filled. */
int fl_jpeg_read_info(fl_jpeg_decoder *d, const uint8_t *data, size_t size,
                      fl_jpeg_info *info, char *err);

/* Decode the full-resolution rectangle [x0, x1) x [y0, y1) (clamped to the
 * image; empty after clamping is FL_ERR_ARG) as interleaved RGB into the
 * decoder's own buffer; `out` views it and stays valid until the next call on
 * `d`. The IDCT scale is the largest 1/denom, denom <= max_denom (a power of
 * two up to 8), that keeps the rectangle at least min_w x min_h pixels once
 * scaled. Grayscale is expanded to RGB. Checked in this order: images over
 * max_pixels (0 = no limit) are FL_ERR_TOO_LARGE; CMYK/YCCK and an
 * orientation other than 0 or 1 (when honour_exif) are FL_UNSUPPORTED, and the
 * caller decodes another way. A truncated stream, or entropy-coded data that
 * libjpeg would pad or guess, is FL_ERR_DECODE, never a grey-filled image;
 * when every row was read the stream must also end properly (EOI). Rows
 * below and columns beside the rectangle are not decoded, so corruption
 * there goes unnoticed. */
int fl_jpeg_decode_region(fl_jpeg_decoder *d, const uint8_t *data, size_t size,
                          int x0, int y0, int x1, int y1,
                          int min_w, int min_h, int max_denom,
                          int honour_exif, int64_t max_pixels,
                          fl_view *out, fl_jpeg_region *region, char *err);

/* The same decode in two steps, so that a caller who needs the header to
 * plan the region parses it only once: fl_jpeg_begin reads the header (as
 * fl_jpeg_read_info) and leaves the decoder holding it; then exactly one of
 * fl_jpeg_decode_begun (same `data`, the `info` begin filled) or
 * fl_jpeg_abort must follow. */
int fl_jpeg_begin(fl_jpeg_decoder *d, const uint8_t *data, size_t size, fl_jpeg_info *info, char *err);
int fl_jpeg_decode_begun(fl_jpeg_decoder *d, const uint8_t *data, size_t size, const fl_jpeg_info *info,
                         int x0, int y0, int x1, int y1,
                         int min_w, int min_h, int max_denom,
                         int honour_exif, int64_t max_pixels,
                         fl_view *out, fl_jpeg_region *region, char *err);
void fl_jpeg_abort(fl_jpeg_decoder *d);

/* What fl_jpeg_decode_region would return for the same arguments, from the
 * header alone: `region`, and `out` with its size (data = NULL). Lets a
 * caller size its destination before decoding. Same status codes, except
 * that errors in the image data are found only by decoding. */
int fl_jpeg_plan_region(fl_jpeg_decoder *d, const uint8_t *data, size_t size,
                        int x0, int y0, int x1, int y1,
                        int min_w, int min_h, int max_denom,
                        int honour_exif, int64_t max_pixels,
                        fl_view *out, fl_jpeg_region *region, char *err);

#endif
