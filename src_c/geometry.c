#include <limits.h>
#include <math.h>
#include <stdio.h>
#include "geometry.h"

/* The virtual image: vw x vh pixels; virtual x maps to source ox + x * sx. */
typedef struct {
    int vw, vh;
    double ox, oy, sx, sy;
} vimage;

static void resize_to(vimage *v, int w, int h)
{
    v->sx *= (double)v->vw / w;
    v->sy *= (double)v->vh / h;
    v->vw = w;
    v->vh = h;
}

static void crop(vimage *v, int left, int top, int w, int h)
{
    v->ox += left * v->sx;
    v->oy += top * v->sy;
    v->vw = w;
    v->vh = h;
}

/* Shorter side to `size`, aspect kept (truncating, as torchvision does).
 * FL_ERR_TOO_LARGE when the longer side would pass INT_MAX. */
static int resize_shorter(vimage *v, int size, int max_size)
{
    int w_short = v->vw <= v->vh;
    double s = w_short ? v->vw : v->vh, l = w_short ? v->vh : v->vw;
    double long_side = floor(size * l / s);
    int ns = size, nl;
    if (max_size > 0 && long_side > max_size) {
        ns = (int)((double)max_size * ns / long_side);
        nl = max_size;
    } else if (long_side > INT_MAX) {
        return FL_ERR_TOO_LARGE;
    } else {
        nl = (int)long_side;
    }
    if (ns < 1) ns = 1;
    if (nl < 1) nl = 1;
    resize_to(v, w_short ? ns : nl, w_short ? nl : ns);
    return FL_OK;
}

static void random_resized_crop(vimage *v, const fl_geom_op *op, const fl_rng *rng, uint64_t slot)
{
    double area = (double)v->vw * v->vh;
    for (int attempt = 0; attempt < 10; attempt++, slot += 4) {
        double target = area * (op->scale_lo + (op->scale_hi - op->scale_lo) * fl_rng_uniform(rng, slot));
        double ratio = exp(op->log_ratio_lo + (op->log_ratio_hi - op->log_ratio_lo) * fl_rng_uniform(rng, slot + 1));
        double wd = rint(sqrt(target * ratio)), hd = rint(sqrt(target / ratio));   /* may pass INT_MAX */
        if (wd >= 1 && hd >= 1 && wd <= v->vw && hd <= v->vh) {
            int w = (int)wd, h = (int)hd;
            int top = (int)(fl_rng_uniform(rng, slot + 2) * (v->vh - h + 1));
            int left = (int)(fl_rng_uniform(rng, slot + 3) * (v->vw - w + 1));
            crop(v, left, top, w, h);
            return;
        }
    }
    /* No sample fit (tiny or extreme-aspect images): the largest centred
     * crop whose aspect lies within the allowed range. */
    double in_ratio = (double)v->vw / v->vh;
    double rlo = exp(op->log_ratio_lo), rhi = exp(op->log_ratio_hi);
    double wd = v->vw, hd = v->vh;
    if (in_ratio < rlo)
        hd = rint(wd / rlo);
    else if (in_ratio > rhi)
        wd = rint(hd * rhi);
    int w = wd < 1 ? 1 : wd > v->vw ? v->vw : (int)wd;
    int h = hd < 1 ? 1 : hd > v->vh ? v->vh : (int)hd;
    crop(v, (v->vw - w) / 2, (v->vh - h) / 2, w, h);
}

/* Where a crop of `c` pixels starts on an axis of `n` when it is larger:
 * torchvision pads first, so the start is negative. */
static int center_pad_start(int n, int c) { return -((c - n) / 2); }

int fl_geom_plan(const fl_geom_op *ops, int nops, int src_w, int src_h,
                 const fl_rng *rng, fl_rect *box, int *out_w, int *out_h, fl_pad *pad, fl_geom_fail *fail)
{
    if (src_w < 1 || src_h < 1 || nops < 0 || nops > FL_GEOM_MAX_OPS)
        return FL_ERR_ARG;
    vimage v = {src_w, src_h, 0.0, 0.0, 1.0, 1.0};
    const uint8_t *fill = NULL;
    for (int i = 0; i < nops; i++) {
        const fl_geom_op *op = &ops[i];
        uint64_t slot = FL_SLOT_GEOMETRY + 64 * (uint64_t)i;
        int w = op->w < v.vw ? op->w : v.vw, h = op->h < v.vh ? op->h : v.vh;
        int larger = op->w > v.vw || op->h > v.vh;
        if ((op->kind == FL_GEOM_CENTER_CROP || op->kind == FL_GEOM_RANDOM_CROP) && larger) {
            if (!op->pad || i != nops - 1) {   /* padding is one resample: only the last op may pad */
                if (fail)
                    *fail = (fl_geom_fail){i, v.vw, v.vh};
                return FL_ERR_CROP;
            }
            int left, top;
            if (op->kind == FL_GEOM_CENTER_CROP) {
                left = op->w > v.vw ? center_pad_start(v.vw, op->w) : (int)rint((v.vw - op->w) / 2.0);
                top = op->h > v.vh ? center_pad_start(v.vh, op->h) : (int)rint((v.vh - op->h) / 2.0);
            } else {   /* padded by (crop - size) on both sides of a short axis, then a random crop */
                int px = op->w > v.vw ? op->w - v.vw : 0, py = op->h > v.vh ? op->h - v.vh : 0;
                top = (int)(fl_rng_uniform(rng, slot) * (v.vh + 2 * py - op->h + 1)) - py;
                left = (int)(fl_rng_uniform(rng, slot + 1) * (v.vw + 2 * px - op->w + 1)) - px;
            }
            fill = op->fill;
            int iw = v.vw, ih = v.vh;   /* the image's extent in the crop: [-left, iw - left) */
            crop(&v, left, top, op->w, op->h);
            int x0 = -left > 0 ? -left : 0, y0 = -top > 0 ? -top : 0;
            int x1 = iw - left < op->w ? iw - left : op->w, y1 = ih - top < op->h ? ih - top : op->h;
            if (x1 <= x0 || y1 <= y0)
                return FL_ERR_ARG;
            box->x0 = v.ox + x0 * v.sx;
            box->y0 = v.oy + y0 * v.sy;
            box->x1 = v.ox + x1 * v.sx;
            box->y1 = v.oy + y1 * v.sy;
            if (box->x0 < 0) box->x0 = 0;
            if (box->y0 < 0) box->y0 = 0;
            if (box->x1 > src_w) box->x1 = src_w;
            if (box->y1 > src_h) box->y1 = src_h;
            if (pad) {
                *pad = (fl_pad){x0, y0, x1, y1, {fill[0], fill[1], fill[2]}};
            }
            *out_w = v.vw;
            *out_h = v.vh;
            return pad ? FL_OK : FL_ERR_ARG;
        }
        switch (op->kind) {
        case FL_GEOM_RESIZE:
            if (op->h < 1 || op->w < 0)
                return FL_ERR_ARG;
            if (op->w == 0) {
                if (resize_shorter(&v, op->h, op->max_size) != FL_OK) {
                    if (fail)
                        *fail = (fl_geom_fail){i, v.vw, v.vh};
                    return FL_ERR_TOO_LARGE;
                }
            } else
                resize_to(&v, op->w, op->h);
            break;
        case FL_GEOM_CENTER_CROP:
            if (op->h < 1 || op->w < 1)
                return FL_ERR_ARG;
            crop(&v, (int)rint((v.vw - w) / 2.0), (int)rint((v.vh - h) / 2.0), w, h);
            resize_to(&v, op->w, op->h);   /* no-op unless the image was smaller than the crop */
            break;
        case FL_GEOM_RANDOM_CROP:
            if (op->h < 1 || op->w < 1)
                return FL_ERR_ARG;
            crop(&v, (int)(fl_rng_uniform(rng, slot + 1) * (v.vw - w + 1)),
                 (int)(fl_rng_uniform(rng, slot) * (v.vh - h + 1)), w, h);
            resize_to(&v, op->w, op->h);
            break;
        case FL_GEOM_RANDOM_RESIZED_CROP:
            random_resized_crop(&v, op, rng, slot);
            resize_to(&v, op->w, op->h);
            break;
        default:
            return FL_ERR_ARG;
        }
    }
    box->x0 = v.ox;
    box->y0 = v.oy;
    box->x1 = v.ox + v.vw * v.sx;
    box->y1 = v.oy + v.vh * v.sy;
    /* Accumulated rounding must not push the box past the image edge. */
    if (box->x1 > src_w) box->x1 = src_w;
    if (box->y1 > src_h) box->y1 = src_h;
    *out_w = v.vw;
    *out_h = v.vh;
    if (pad)
        *pad = (fl_pad){0, 0, v.vw, v.vh, {0, 0, 0}};
    return FL_OK;
}

void fl_geom_error(const fl_geom_op *ops, int rc, const fl_geom_fail *fail, char *err)
{
    const fl_geom_op *op = &ops[fail->op];
    if (rc == FL_ERR_TOO_LARGE) {
        snprintf(err, FL_ERRLEN, "%.40s: the %dx%d image would be over %d pixels on its longer side",
                 op->name, fail->w, fail->h, INT_MAX);
        return;
    }
    static const char why[] = "only a crop that is the last geometric transform pads, RandomCrop with "
                              "pad_if_needed=True";
    if (fail->op == 0)
        snprintf(err, FL_ERRLEN, "%.40s: the %dx%d image is smaller than the %dx%d crop (%s)",
                 op->name, fail->w, fail->h, op->w, op->h, why);
    else
        snprintf(err, FL_ERRLEN, "%.40s: the image is %dx%d after %.40s, smaller than the %dx%d crop (%s)",
                 op->name, fail->w, fail->h, ops[fail->op - 1].name, op->w, op->h, why);
}
