#include <math.h>
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

/* Shorter side to `size`, aspect kept (truncating, as torchvision does). */
static void resize_shorter(vimage *v, int size, int max_size)
{
    int w_short = v->vw <= v->vh;
    double s = w_short ? v->vw : v->vh, l = w_short ? v->vh : v->vw;
    int ns = size, nl = (int)(size * l / s);
    if (max_size > 0 && nl > max_size) {
        ns = (int)((double)max_size * ns / nl);
        nl = max_size;
    }
    if (ns < 1) ns = 1;
    if (nl < 1) nl = 1;
    resize_to(v, w_short ? ns : nl, w_short ? nl : ns);
}

static void random_resized_crop(vimage *v, const fl_geom_op *op, const fl_rng *rng, uint64_t slot)
{
    double area = (double)v->vw * v->vh;
    for (int attempt = 0; attempt < 10; attempt++, slot += 4) {
        double target = area * (op->scale_lo + (op->scale_hi - op->scale_lo) * fl_rng_uniform(rng, slot));
        double ratio = exp(op->log_ratio_lo + (op->log_ratio_hi - op->log_ratio_lo) * fl_rng_uniform(rng, slot + 1));
        int w = (int)rint(sqrt(target * ratio));
        int h = (int)rint(sqrt(target / ratio));
        if (w > 0 && h > 0 && w <= v->vw && h <= v->vh) {
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
    int w = v->vw, h = v->vh;
    if (in_ratio < rlo)
        h = (int)rint(w / rlo);
    else if (in_ratio > rhi)
        w = (int)rint(h * rhi);
    if (w < 1) w = 1;
    if (h < 1) h = 1;
    if (w > v->vw) w = v->vw;
    if (h > v->vh) h = v->vh;
    crop(v, (v->vw - w) / 2, (v->vh - h) / 2, w, h);
}

int fl_geom_plan(const fl_geom_op *ops, int nops, int src_w, int src_h,
                 const fl_rng *rng, fl_rect *box, int *out_w, int *out_h)
{
    if (src_w < 1 || src_h < 1 || nops < 0 || nops > FL_GEOM_MAX_OPS)
        return FL_ERR_ARG;
    vimage v = {src_w, src_h, 0.0, 0.0, 1.0, 1.0};
    for (int i = 0; i < nops; i++) {
        const fl_geom_op *op = &ops[i];
        uint64_t slot = FL_SLOT_GEOMETRY + 64 * (uint64_t)i;
        int w = op->w < v.vw ? op->w : v.vw, h = op->h < v.vh ? op->h : v.vh;
        switch (op->kind) {
        case FL_GEOM_RESIZE:
            if (op->h < 1 || op->w < 0)
                return FL_ERR_ARG;
            if (op->w == 0)
                resize_shorter(&v, op->h, op->max_size);
            else
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
    return FL_OK;
}
