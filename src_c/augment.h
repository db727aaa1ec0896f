/* Pixel operations that run after resampling: colour jitter, and the final
 * write of a sample into its batch slot (flip, rotation, normalisation,
 * dtype and layout in a single pass). */
#ifndef FL_AUGMENT_H
#define FL_AUGMENT_H

#include "fl_common.h"

enum { FL_U8 = 0, FL_F16 = 1, FL_F32 = 2 };
enum { FL_NCHW = 0, FL_NHWC = 1 };

/* Brightness, contrast and saturation factors (1 = unchanged), applied in that
 * order to an RGB image in place, each step clamped to [0, 255] in float and
 * rounded to uint8 once at the end. Contrast blends towards the mean of the
 * image's luma (L = 0.299 R + 0.587 G + 0.114 B, computed on the input to that
 * step); saturation blends each pixel towards its own luma. */
void fl_color_jitter(fl_view *img, float brightness, float contrast, float saturation);

/* Shift the hue of an RGB image in place by `factor` turns (-0.5..0.5), as
 * torchvision's adjust_hue: RGB in [0, 1] to HSV, h = (h + factor) mod 1,
 * back to RGB, in float; rounded to nearest at the end. */
void fl_adjust_hue(fl_view *img, float factor);

/* Destination of one sample inside a batch buffer. */
typedef struct {
    void *data;          /* first element of this sample */
    int dtype;           /* FL_U8, FL_F16, FL_F32 */
    int layout;          /* FL_NCHW or FL_NHWC */
    int height, width, channels;
} fl_out;

/* Write src (height x width x channels uint8, or width x height when rot90 is
 * odd) into out. Geometry: first rotate counter-clockwise by 90 * rot90
 * degrees (np.rot90(img, k=rot90)), then flip left-right if hflip, then
 * up-down if vflip. Output channel c takes input channel perm[c] through
 * lut[c * 256 + value]; lut holds out->dtype elements (uint8, IEEE half bits
 * as uint16, or float), so normalisation and conversion cost one lookup. */
int fl_write_sample(const fl_view *src, int rot90, int hflip, int vflip,
                    const int *perm, const void *lut, fl_out *out);

/* How fl_write_sample writes these arguments under the current SIMD path
 * (fl_simd), or FL_ERR_ARG. FL_WRITE_VECTOR: rows walked left to right or
 * right to left (no rotation or a half turn), 2 to 4 source and at most 4
 * output channels, at least 8 columns, and tables the vector arithmetic
 * reproduces bit for bit (uint8: identity; float16/float32: an affine map of
 * the byte, such as Normalize's, checked once per thread and table; float16
 * on AVX2 and NEON only).
 * FL_WRITE_COPY: NHWC uint8 rows copied as they are. FL_WRITE_LOOPS: the
 * portable loops (any other write, and the portable path). Every route
 * writes the same bytes. */
enum { FL_WRITE_LOOPS = 0, FL_WRITE_COPY = 1, FL_WRITE_VECTOR = 2 };
int fl_write_path(const fl_view *src, int rot90, int hflip, int vflip,
                  const int *perm, const void *lut, const fl_out *out);

#endif
