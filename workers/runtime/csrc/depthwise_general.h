/* Depthwise convolution with any filter other than the 3x3 fast paths (stride, dilation, size),
 * included by depthwise_impl.h once per instruction set. */

/* ---- Any other filter ------------------------------------------------------------------------
 * Each plane is copied into a zero-padded buffer so the taps need no bounds checks; for strides
 * 1 and 2 a vector of outputs accumulates every tap in a register (stride 2 loads two vectors and
 * keeps the even lanes). The scratch holds 2 * VEC_FLOATS spare floats for that over-read. */
static inline V8F ISA(load_stride)(const float *p, int stride) {
    if (stride == 1) return *(const V8FU *)p;
    return __builtin_shuffle(*(const V8FU *)p, *(const V8FU *)(p + VEC_FLOATS), EVEN_LANES);
}

/* Narrow rows and strides other than 1 and 2: taps outer, outputs inner, so the outputs are
 * independent accumulations rather than one serial chain of FMAs. */
static void ISA(depthwise_row_scalar)(const depthwise_args *a, const float *padded, int pw,
                                      const float *k, float b, int i, float *d) {
    for (int j = 0; j < a->ow; ++j) d[j] = b;
    for (int ki = 0; ki < a->kh; ++ki) {
        const float *row = padded + (size_t)(i * a->sh + ki * a->dh) * pw;
        for (int kj = 0; kj < a->kw; ++kj) {
            const float wv = k[ki * a->kw + kj], *r = row + kj * a->dw;
            for (int j = 0; j < a->ow; ++j) d[j] += wv * r[(size_t)j * a->sw];
        }
    }
    for (int j = 0; j < a->ow; ++j) d[j] = ISA(clip1)(d[j], a->lo, a->hi);
}

/* Rows of 4 to VEC_FLOATS - 1 outputs (7x7 maps under AVX2): two overlapping 4-wide vectors,
 * at 0 and at ow - 4, accumulated together as two independent chains. */
typedef float ISA(v4f) __attribute__((vector_size(16)));
typedef float ISA(v4f_unaligned) __attribute__((vector_size(16), aligned(4)));
typedef int ISA(v4i) __attribute__((vector_size(16)));

static inline ISA(v4f) ISA(load4_stride)(const float *p, int stride) {
    typedef ISA(v4f_unaligned) v4u;
    if (stride == 1) return *(const v4u *)p;
    return __builtin_shuffle(*(const v4u *)p, *(const v4u *)(p + 4), (ISA(v4i)){0, 2, 4, 6});
}

static void ISA(depthwise_row_narrow)(const depthwise_args *a, const float *padded, int pw,
                                      const float *k, float b, int i, float *d) {
    typedef ISA(v4f) v4;
    const int sw = a->sw, j1 = a->ow - 4;
    v4 acc0 = {b, b, b, b}, acc1 = acc0;
    for (int ki = 0; ki < a->kh; ++ki) {
        const float *row = padded + (size_t)(i * a->sh + ki * a->dh) * pw;
        for (int kj = 0; kj < a->kw; ++kj) {
            const float wv = k[ki * a->kw + kj];
            const v4 w = {wv, wv, wv, wv};
            acc0 += w * ISA(load4_stride)(row + kj * a->dw, sw);
            acc1 += w * ISA(load4_stride)(row + kj * a->dw + (size_t)j1 * sw, sw);
        }
    }
    for (int j = 0; j < 4; ++j) {
        d[j] = ISA(clip1)(acc0[j], a->lo, a->hi);
        d[j1 + j] = ISA(clip1)(acc1[j], a->lo, a->hi);
    }
}

/* DW_NV output vectors at once: independent FMA chains hide the FMA latency. Geometry is copied
 * to locals: stores to the output could alias the struct's float fields otherwise. */
#define DW_NV 4
static void ISA(depthwise_row)(const depthwise_args *a, const float *padded, int pw,
                               const V8F *taps, const float *k, float b, int i, float *d) {
    const int sw = a->sw, ow = a->ow, kh = a->kh, kw = a->kw, dh = a->dh, dw = a->dw;
    const float lo = a->lo, hi = a->hi;
    if ((sw == 1 || sw == 2) && ow >= 4 && ow < VEC_FLOATS) {
        ISA(depthwise_row_narrow)(a, padded, pw, k, b, i, d);
        return;
    }
    if ((sw != 1 && sw != 2) || ow < VEC_FLOATS) {
        ISA(depthwise_row_scalar)(a, padded, pw, k, b, i, d);
        return;
    }
    const float *top = padded + (size_t)(i * a->sh) * pw;
    /* Vector starts clamped to ow - VEC_FLOATS: the last group may repeat a vector (same values
     * written twice) but every group keeps DW_NV independent FMA chains. */
    for (int start = 0; start < ow; start += DW_NV * VEC_FLOATS) {
        int pos[DW_NV];
        _Pragma("GCC unroll 4") for (int v = 0; v < DW_NV; ++v) {
            int at = start + v * VEC_FLOATS;
            pos[v] = at + VEC_FLOATS <= ow ? at : ow - VEC_FLOATS;
        }
        V8F acc[DW_NV];
        _Pragma("GCC unroll 4") for (int v = 0; v < DW_NV; ++v) acc[v] = SPLAT(b);
        for (int ki = 0; ki < kh; ++ki) {
            const float *row = top + (size_t)(ki * dh) * pw;
            for (int kj = 0; kj < kw; ++kj) {
                const V8F w = taps[ki * kw + kj];
                const float *p = row + kj * dw;
                if (sw == 1) {
                    _Pragma("GCC unroll 4") for (int v = 0; v < DW_NV; ++v)
                        acc[v] += w * *(const V8FU *)(p + pos[v]);
                } else {
                    _Pragma("GCC unroll 4") for (int v = 0; v < DW_NV; ++v)
                        acc[v] += w * ISA(load_stride)(p + 2 * pos[v], 2);
                }
            }
        }
        _Pragma("GCC unroll 4") for (int v = 0; v < DW_NV; ++v)
            *(V8FU *)(d + pos[v]) = ISA(clip8)(acc[v], lo, hi);
    }
}
#undef DW_NV

/* General filters: ``padded`` is this thread's zeroed scratch, rows of w + pl + pr floats. */
static void ISA(depthwise_planes_general)(const depthwise_args *a, int p0, int p1, float *padded) {
    const int pw = a->w + a->pl + a->pr;
    const int ntaps = a->kh * a->kw;
    V8F taps[DEPTHWISE_MAX_TAPS];
    for (int p = p0; p < p1; ++p) {
        int ch = (p + a->ch0) % a->c;
        const float *src = a->x + (size_t)p * a->h * a->w;
        float *dst = ISA(dw_out_plane)(a, p);
        const float *k = a->weight + (size_t)ch * ntaps;
        float b = a->bias ? a->bias[ch] : 0.0f;
        for (int t = 0; t < ntaps; ++t) taps[t] = SPLAT(k[t]);
        ISA(zero_pad_rows)(a, padded, pw);
        for (int r = 0; r < a->h; ++r)
            memcpy(padded + (size_t)(r + a->pt) * pw + a->pl, src + (size_t)r * a->w,
                   sizeof(float) * a->w);
        for (int i = 0; i < a->oh; ++i)
            ISA(depthwise_row)(a, padded, pw, taps, k, b, i, dst + (size_t)i * a->ow);
    }
}

