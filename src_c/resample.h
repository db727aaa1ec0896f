/* Separable antialiased resampling of interleaved uint8 images, in the manner
 * of Pillow's Image.resize(size, filter, box): a horizontal then a vertical
 * pass, fixed-point taps precomputed once per call, the kernel support
 * widened by the downscale factor so that shrinking averages rather than
 * aliases.
 *
 * FL_BILINEAR and FL_AREA reproduce Pillow's BILINEAR and BOX filters bit for
 * bit (same tap positions, same 22-bit fixed-point weights, same rounding of
 * the intermediate image, horizontal pass first as Pillow <= 12; Pillow 13
 * runs the vertical pass first when the height shrinks by more than twice as
 * many pixels as the width, which can move a pixel by one level). FL_NEAREST takes, for output pixel i, the source
 * pixel floor(x0 + (i + 0.5) * (x1 - x0) / out_w), clamped to the image. */
#ifndef FL_RESAMPLE_H
#define FL_RESAMPLE_H

#include "fl_common.h"

enum { FL_NEAREST = 0, FL_BILINEAR = 1, FL_AREA = 2 };

/* Scratch space for one thread: tap tables and the intermediate image.
 * Zero-initialise it before first use; it is not safe to share between
 * threads that resample at the same time. */
typedef struct {
    fl_buffer taps;
    fl_buffer tmp;
} fl_resampler;

void fl_resampler_free(fl_resampler *r);

/* Resample the rectangle `box` of `src` (continuous coordinates, may be
 * fractional, must lie inside the image within 1e-3 px, x1 > x0, y1 > y0) to
 * `dst`'s size. `dst` must have the same channel count as `src` (1, 3 or 4),
 * must not overlap it, and both need pixel stride == channels. antialias = 0
 * keeps FL_BILINEAR's support fixed (plain bilinear interpolation, as
 * torchvision's antialias=False); FL_AREA always averages (without the
 * widened support it would be nearest neighbour) and FL_NEAREST ignores it.
 * FL_OK, FL_ERR_ARG or FL_ERR_NOMEM; never allocates after the scratch has
 * grown to size. */
int fl_resample(fl_resampler *r, const fl_view *src, fl_rect box,
                int filter, int antialias, fl_view *dst);

/* How the image is shown, for fl_resample_shown: the stored x (y) axis runs
 * the other way when shown, and the axes are swapped (shown x is stored y). */
enum { FL_SHOWN_REV_X = 1, FL_SHOWN_REV_Y = 2, FL_SHOWN_SWAP = 4 };

/* fl_resample of a stored image that is shown turned as `shown` says (an EXIF
 * orientation): dst holds, in stored orientation, exactly the pixels of
 * resampling the shown image and turning the result back. Each axis's taps
 * are computed in shown coordinates and the shown horizontal pass runs first,
 * as Pillow does on the turned image; the plain fl_resample differs by a
 * rounding step after turns that swap axes, and for FL_AREA, whose
 * half-open box is not symmetric, by whole pixels after mirrors. */
int fl_resample_shown(fl_resampler *r, const fl_view *src, fl_rect box,
                      int filter, int antialias, int shown, fl_view *dst);

/* The inner loops follow the process-wide SIMD path (cpu.h): AVX2, SSE4.1,
 * NEON or portable, all with identical results. */

#endif
