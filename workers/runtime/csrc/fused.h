/* A convolution with sparse weights whose output feeds only a depthwise convolution (MobileNet's
 * expand + depthwise, or a stem + depthwise), computed band by band of depthwise output rows:
 * the first convolution's rows that one band needs (with the filter's halo, recomputed by the
 * next band) stay in L2, so the tensor between the two never travels to memory and the input is
 * read about once. A first convolution other than 1x1/stride 1/no padding runs im2col per band.
 * With several threads, each band's channels are split between them (the depthwise part is per
 * channel). Included by sparse_kernels.c after the kernels and the thread helpers. */

/* One im2col row (channel, kernel row ki, kernel column kj) of one image, any geometry. pt may
 * be negative (a band starting below the top of the output). */
static void im2col_row(const float *x, float *out, int ch, int ki, int kj, int h, int w, int kh,
                       int kw, int sh, int sw, int pt, int pl, int dh, int dw, int oh, int ow) {
    const float *src = x + (size_t)ch * h * w;
    float *dst = out + ((size_t)(ch * kh + ki) * kw + kj) * oh * ow;
    /* Output columns [j0, j1) read inside the row; the others are padding. */
    const int off = kj * dw - pl;
    int j0 = off < 0 ? (-off + sw - 1) / sw : 0, j1 = w - off > 0 ? (w - off + sw - 1) / sw : 0;
    if (j1 > ow) j1 = ow;
    if (j0 > j1) j0 = j1;
    for (int i = 0; i < oh; ++i) {
        int ih = i * sh - pt + ki * dh;
        float *d = dst + (size_t)i * ow;
        if (ih < 0 || ih >= h) {
            memset(d, 0, sizeof(float) * ow);
            continue;
        }
        const float *s = src + (size_t)ih * w + off;
        for (int j = 0; j < j0; ++j) d[j] = 0.0f;
        if (sw == 1) memcpy(d + j0, s + j0, sizeof(float) * (j1 - j0));
        else for (int j = j0; j < j1; ++j) d[j] = s[(size_t)j * sw];
        for (int j = j1; j < ow; ++j) d[j] = 0.0f;
    }
}

/* im2col rows of channel ``ch`` and kernel row ``ki`` for stride 2 along rows, no dilation:
 * each source row is split once into its even and odd columns (zero beyond the row), and each
 * kernel column's row of output is then one copy from one half (column 2j + kj - pl is
 * even[j + q] or odd[j + q]), instead of a strided gather per kernel column. */
static void im2col_stride2_rows(const float *x, float *out, int ch, int ki, int h, int w, int kh,
                                int kw, int sh, int pt, int pl, int dh, int oh, int ow) {
    const int half = (w + 1) / 2, margin = (kw + pl) / 2 + 2, span = half + 2 * margin + ow;
    float *even = calloc(2 * (size_t)span, sizeof(float)), *odd = even + span;
    if (!even) { /* out of memory: the gathering path needs none */
        for (int kj = 0; kj < kw; ++kj)
            im2col_row(x, out, ch, ki, kj, h, w, kh, kw, sh, 2, pt, pl, dh, 1, oh, ow);
        return;
    }
    float *rows = out + (size_t)(ch * kh + ki) * kw * oh * ow;
    for (int i = 0; i < oh; ++i) {
        const int ih = i * sh - pt + ki * dh;
        if (ih < 0 || ih >= h) {
            for (int kj = 0; kj < kw; ++kj)
                memset(rows + ((size_t)kj * oh + i) * ow, 0, sizeof(float) * ow);
            continue;
        }
        const float *s = x + ((size_t)ch * h + ih) * w;
        /* Whole pairs first, with no test in the loop: GCC vectorises it (the stem's im2col
         * per band: 0.81 -> 0.67 ms for MobileNetV2's first block). */
        const int pairs = w / 2;
        for (int t = 0; t < pairs; ++t) {
            even[margin + t] = s[2 * t];
            odd[margin + t] = s[2 * t + 1];
        }
        if (w % 2) {
            even[margin + pairs] = s[w - 1];
            odd[margin + pairs] = 0.0f;
        }
        for (int kj = 0; kj < kw; ++kj) {
            const int off = kj - pl, q = off >= 0 ? off / 2 : -((-off + 1) / 2);
            const float *from = (off - 2 * q ? odd : even) + margin + q;
            memcpy(rows + ((size_t)kj * oh + i) * ow, from, sizeof(float) * ow);
        }
    }
    free(even);
}

typedef struct {
    const float *x;
    float *out;
    int c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, stride2, rows, items;
} im2col_job;

/* Item ``item`` of an im2col call: its share of the rows (stride 2: of the kernel rows). */
static void im2col_item(void *ctx, int item, int thread) {
    const im2col_job *j = ctx;
    (void)thread;
    const int r0 = (int)((long)j->rows * item / j->items);
    const int r1 = (int)((long)j->rows * (item + 1) / j->items);
    for (int r = r0; r < r1; ++r) {
        if (j->stride2)
            im2col_stride2_rows(j->x, j->out, r / j->kh, r % j->kh, j->h, j->w, j->kh, j->kw,
                                j->sh, j->pt, j->pl, j->dh, j->oh, j->ow);
        else
            im2col_row(j->x, j->out, r / (j->kh * j->kw), r / j->kw % j->kh, r % j->kw, j->h,
                       j->w, j->kh, j->kw, j->sh, j->sw, j->pt, j->pl, j->dh, j->dw, j->oh, j->ow);
    }
}

/* im2col for one image: rows are (channel, kernel row, kernel column), columns output pixels. */
static void im2col(const float *x, float *out, int c, int h, int w, int kh, int kw, int sh,
                   int sw, int pt, int pl, int dh, int dw, int oh, int ow, int threads) {
    const int stride2 = sw == 2 && dw == 1, rows = stride2 ? c * kh : c * kh * kw;
    im2col_job job = {x, out, c, h, w, kh, kw, sh, sw, pt, pl, dh, dw, oh, ow, stride2, rows,
                      items_for(rows, threads)};
    pool_run(im2col_item, &job, job.items, threads);
}

/* Geometry of the first convolution over an image of c x h x w; 1x1 unit stride unpadded runs
 * the sparse product straight on the input. */
typedef struct {
    int c, h, w, kh, kw, sh, sw, pt, pl, dh, dw;
} conv_geometry;

static int is_pointwise(const conv_geometry *g) {
    return g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 && g->pl == 0;
}

/* Bytes a band's rows may take. Twice the 512 KiB L2: each band recomputes the first
 * convolution's halo rows, and on the EPYC those cost more than a band spilling to L3 (MobileNetV2
 * at 90% 4x1, 1 thread: 320 KiB 3.67-3.81 ms, 640 KiB 3.58, 1 MiB 3.49-3.59, 2 MiB 3.46-3.61,
 * whole images 3.76 with the stem slowest; bench/results/strips_epyc_2cores.md). */
#define FUSED_BAND_BYTES (1024 * 1024)
#define FUSED_SMALL_MAP 256 /* output pixels */

typedef struct {
    int chunk;   /* channels per work item, a multiple of the block rows */
    int chunks;  /* work items per band */
    int band;    /* depthwise output rows per band */
    int in_rows; /* rows of the first convolution's output a full band reads */
    /* per thread: that output, its band's im2col, and the depthwise band a project reads */
    size_t buffer_floats, cols_floats, dw_floats;
    /* 1: the project runs band by band; 0 with a project: the depthwise output is made whole
     * (dw_floats: all of it, shared) and the project runs once on it */
    int project_bands;
} fused_plan;

/* With a project convolution (``project``), a band holds every channel (the project reads them
 * all) and threads take whole bands; without, threads split each band's channels. */
static fused_plan plan_fused(const spmm_args *e, const conv_geometry *g, const depthwise_args *d,
                             int project, int threads) {
    fused_plan p;
    const int br = e->block_rows, reach = (d->kh - 1) * d->dh + 1;
    p.chunk = project ? e->m : (e->m + threads - 1) / threads;
    p.chunk = (p.chunk + br - 1) / br * br;
    if (p.chunk < br) p.chunk = br;
    p.chunks = (e->m + p.chunk - 1) / p.chunk;
    const long w = d->w > 0 ? d->w : 1, ow = d->ow > 0 ? d->ow : 1;
    const long in_row = (long)(p.chunk + (is_pointwise(g) ? 0 : e->k)) * w;
    const long out_row = project ? (long)e->m * ow * d->sh : 0; /* per input row, roughly */
    const long rows = FUSED_BAND_BYTES / (4 * (in_row + out_row));
    p.band = rows > reach ? (int)((rows - reach) / d->sh) + 1 : 1;
    if (project && threads > 1 && p.band > (d->oh + threads - 1) / threads)
        p.band = (d->oh + threads - 1) / threads; /* a band per thread at least */
    /* Small maps (7x7, 14x14) in one band: splitting them recomputes a large share of the first
     * convolution and leaves the flat small-plane depthwise path. With several threads and a
     * project, the fallback below splits channels between threads instead. */
    if (d->oh * d->ow <= FUSED_SMALL_MAP && !(project && threads > 1)) p.band = d->oh;
    if (p.band > d->oh) p.band = d->oh;
    if (p.band < 1) p.band = 1;
    p.in_rows = (p.band - 1) * d->sh + reach;
    if (p.in_rows > d->h) p.in_rows = d->h;
    p.buffer_floats = round16((size_t)p.chunk * p.in_rows * d->w);
    p.cols_floats = is_pointwise(g) ? 0 : round16((size_t)e->k * p.in_rows * d->w);
    p.dw_floats = project ? round16((size_t)e->m * p.band * d->ow) : 0;
    p.project_bands = project;
    /* Bands of one to three rows recompute much of the first convolution and run the project on
     * a few pixels at a time: measured slower than the project on the whole output then. */
    if (project && ((p.band < 4 && p.band < d->oh) ||
                    (threads > 1 && d->oh * d->ow <= FUSED_SMALL_MAP))) {
        p = plan_fused(e, g, d, 0, threads);
        p.dw_floats = round16((size_t)e->m * d->oh * d->ow);
        p.project_bands = 0;
    }
    return p;
}

/* One band of depthwise rows [i0, i1) for channels [c0, c1). e->x is the image (pointwise) or
 * its input image; ``cols`` this thread's im2col buffer; with ``pj`` (all channels), the band's
 * depthwise output goes to ``dw_out`` and the project convolution writes its rows of pj->y. */
static void fused_item(range_fn spmm, planes_fn dw, const spmm_args *e, const conv_geometry *g,
                       const depthwise_args *d, const spmm_args *pj, const fused_plan *plan,
                       int item, float *buffer, float *cols, float *dw_out, float *scratch) {
    const int i0 = item / plan->chunks * plan->band, c0 = item % plan->chunks * plan->chunk;
    const int i1 = i0 + plan->band < d->oh ? i0 + plan->band : d->oh;
    const int c1 = c0 + plan->chunk < e->m ? c0 + plan->chunk : e->m;
    /* Rows [lo, hi) of the first convolution's output, clipped to it; the rest is padding. */
    const int lo = i0 * d->sh - d->pt, hi = (i1 - 1) * d->sh - d->pt + (d->kh - 1) * d->dh + 1;
    const int r0 = lo > 0 ? lo : 0, r1 = hi < d->h ? hi : d->h;
    const int mb0 = c0 / e->block_rows, mb1 = (c1 + e->block_rows - 1) / e->block_rows;
    spmm_args a = *e;
    a.y = buffer;
    a.y_row0 = c0;
    a.ldy = (r1 - r0) * d->w;
    if (r1 > r0 && is_pointwise(g)) {
        a.y_col0 = r0 * d->w;
        spmm(&a, mb0, mb1, r0 * d->w, r1 * d->w);
    } else if (r1 > r0) {
        im2col(e->x, cols, g->c, g->h, g->w, g->kh, g->kw, g->sh, g->sw, g->pt - r0 * g->sh, g->pl,
               g->dh, g->dw, r1 - r0, d->w, 1);
        a.x = cols;
        a.n = (r1 - r0) * d->w;
        spmm(&a, mb0, mb1, 0, a.n);
    }
    depthwise_args p = *d;
    p.x = buffer;
    p.h = r1 > r0 ? r1 - r0 : 0;
    p.pt = r0 - lo;
    p.pb = hi - (r1 > r0 ? r1 : r0);
    p.oh = i1 - i0;
    p.y = pj ? dw_out : d->y + (size_t)c0 * d->oh * d->ow + (size_t)i0 * d->ow;
    p.y_plane = pj ? (i1 - i0) * d->ow : d->oh * d->ow;
    p.ch0 = c0;
    dw(&p, 0, c1 - c0, scratch);
    if (pj) {
        spmm_args q = *pj;
        q.x = dw_out;
        q.n = (i1 - i0) * d->ow;
        q.y = pj->y + (size_t)i0 * d->ow;
        q.ldy = d->oh * d->ow;
        if (pj->residual) {
            q.residual = pj->residual + (size_t)i0 * d->ow;
            q.ldr = d->oh * d->ow;
        }
        spmm(&q, 0, (q.m + q.block_rows - 1) / q.block_rows, 0, q.n);
    }
}

typedef struct {
    range_fn spmm;
    planes_fn dw;
    const spmm_args *e;
    const conv_geometry *g;
    const depthwise_args *d;
    const spmm_args *band_pj;
    const fused_plan *plan;
    float *buffers, *cols, *dw_out, *scratch;
    size_t scratch_floats;
} fused_job;

/* Item ``item`` of a fused call on thread ``t``'s slices of the buffers. */
static void fused_job_item(void *ctx, int item, int t) {
    const fused_job *j = ctx;
    const fused_plan *plan = j->plan;
    fused_item(j->spmm, j->dw, j->e, j->g, j->d, j->band_pj, plan, item,
               j->buffers + plan->buffer_floats * t, j->cols + plan->cols_floats * t,
               j->dw_out + (j->band_pj ? plan->dw_floats * t : 0),
               j->scratch + j->scratch_floats * t);
}

/* One image; ``buffers``, ``cols``, ``dw_out`` and ``scratch`` hold one slice per thread (plan
 * sizes). ``pj`` (or NULL): a 1x1 convolution on the depthwise output, fused too. */
static void conv_depthwise(range_fn spmm, planes_fn dw, const spmm_args *e,
                           const conv_geometry *g, const depthwise_args *d, const spmm_args *pj,
                           int threads, float *buffers, float *cols, float *dw_out,
                           float *scratch) {
    const fused_plan plan = plan_fused(e, g, d, pj != NULL, threads);
    const int items = (d->oh + plan.band - 1) / plan.band * plan.chunks;
    const size_t scratch_floats = depthwise_scratch_floats(d);
    depthwise_args whole = *d;
    if (pj && !plan.project_bands) { /* depthwise output made whole, then one project */
        whole.y = dw_out;
        d = &whole;
    }
    const spmm_args *band_pj = plan.project_bands ? pj : NULL;
    fused_job job = {spmm, dw, e, g, d, band_pj, &plan, buffers, cols, dw_out, scratch,
                     scratch_floats};
    pool_run(fused_job_item, &job, items, threads);
    if (pj && !plan.project_bands) {
        spmm_args q = *pj;
        q.x = dw_out;
        run_threads(spmm, &q, threads);
    }
}
