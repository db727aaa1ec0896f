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
    int pad;                             /* crops: pad an image smaller than the crop (else an error) */
    uint8_t fill[3];                     /* crops: the RGB value of the padding */
    double scale_lo, scale_hi;           /* RandomResizedCrop: fraction of the area */
    double log_ratio_lo, log_ratio_hi;   /* RandomResizedCrop: log of w/h */
    char name[40];                       /* the transform as errors name it, e.g. "Resize((256, 256))" */
} fl_geom_op;

/* Which output pixels show the image when a crop padded it (torchvision's
 * convention: CenterCrop pads (crop - size) // 2 on the left/top with zeros;
 * RandomCrop(pad_if_needed) pads crop - size on both sides and then crops at
 * random). Output pixels outside [x0, x1) x [y0, y1) take `fill`. Only the
 * last geometric op may pad, so the shown part is one resample of the source. */
typedef struct {
    int x0, y0, x1, y1;
    uint8_t fill[3];
} fl_pad;

/* Which crop found the image smaller than itself (or which Resize would make
 * it too long), and the size it saw there (the earlier ops' result, not the
 * decoded image's). */
typedef struct {
    int op;
    int w, h;
} fl_geom_fail;

/* Run ops on a src_w x src_h image. Writes the source rectangle of the shown
 * part to `box`, the output size, and (if pad is not NULL) the part of the
 * output it fills. FL_OK, FL_ERR_CROP (a crop without padding larger than
 * the image it is given; `fail`, when not NULL, says which), FL_ERR_TOO_LARGE
 * (a Resize(size) whose longer side would pass INT_MAX; `fail` too) or FL_ERR_ARG. */
int fl_geom_plan(const fl_geom_op *ops, int nops, int src_w, int src_h,
                 const fl_rng *rng, fl_rect *box, int *out_w, int *out_h, fl_pad *pad, fl_geom_fail *fail);

/* The message of an FL_ERR_CROP or FL_ERR_TOO_LARGE (rc) from fl_geom_plan:
 * the transform, the size it was given and by which, e.g. "RandomCrop(30):
 * the image is 20x20 after Resize((20, 20)), smaller than the 30x30 crop (...)". */
void fl_geom_error(const fl_geom_op *ops, int rc, const fl_geom_fail *fail, char *err);

/* The displayed-coordinate rectangle `b` of an image stored as sw x sh and
 * shown through EXIF orientation `orientation` (0 or 1: none), in stored
 * coordinates (for 5 to 8 the axes swap). */
static inline fl_rect fl_stored_box(int orientation, fl_rect b, int sw, int sh)
{
    fl_rect r;
    switch (orientation) {
    case 2: r = (fl_rect){sw - b.x1, b.y0, sw - b.x0, b.y1}; break;            /* mirror left-right */
    case 3: r = (fl_rect){sw - b.x1, sh - b.y1, sw - b.x0, sh - b.y0}; break;  /* rotate 180 */
    case 4: r = (fl_rect){b.x0, sh - b.y1, b.x1, sh - b.y0}; break;            /* mirror top-bottom */
    case 5: r = (fl_rect){b.y0, b.x0, b.y1, b.x1}; break;                      /* transpose */
    case 6: r = (fl_rect){b.y0, sh - b.x1, b.y1, sh - b.x0}; break;            /* shown rotated clockwise */
    case 7: r = (fl_rect){sw - b.y1, sh - b.x1, sw - b.y0, sh - b.x0}; break;  /* transverse */
    case 8: r = (fl_rect){sw - b.y1, b.x0, sw - b.y0, b.x1}; break;            /* shown rotated counter-clockwise */
    default: r = b;
    }
    return r;
}

#endif
