/* Geometric transforms as a plan over a "virtual image": each op maps the
 * current virtual image (an integer size plus an affine map back to source
 * pixels) to a new one, so Resize(256) + CenterCrop(224) or a
 * RandomResizedCrop collapse into a single source rectangle and output size.
 * The pixels are then produced by one resample of that rectangle. */
#ifndef FL_GEOMETRY_H
#define FL_GEOMETRY_H

#include "fl_common.h"
#include "rng.h"

enum {
    FL_GEOM_RESIZE = 1,        /* exact (h, w); with w == 0, shorter side to h, longer capped by max_size */
    FL_GEOM_CENTER_CROP = 2,
    FL_GEOM_RANDOM_CROP = 3,
    FL_GEOM_RANDOM_RESIZED_CROP = 4
};

#define FL_GEOM_MAX_OPS 8

typedef struct {
    int kind;
    int h, w;
    int max_size;
    double scale_lo, scale_hi;           /* RandomResizedCrop: fraction of the area */
    double log_ratio_lo, log_ratio_hi;   /* RandomResizedCrop: log of w/h */
} fl_geom_op;

/* Run ops on a src_w x src_h image. Writes the source rectangle to `box`
 * and the output size. A crop larger than the image it applies to takes the
 * whole image along that axis, stretched to the crop's size, rather than
 * reading outside the image. FL_OK or FL_ERR_ARG. */
int fl_geom_plan(const fl_geom_op *ops, int nops, int src_w, int src_h,
                 const fl_rng *rng, fl_rect *box, int *out_w, int *out_h);

#endif
