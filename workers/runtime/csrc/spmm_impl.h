/* Register-blocked sparse x dense kernels, included once per instruction set.
 *
 * Y[M, N] = act(W[M, K] @ X[K, N] + bias), W sparse in block-CSR form with R x C blocks
 * (CSR is R = C = 1).  X and Y are row-major; N is the pixel (or batch) axis, so each nonzero
 * weight block multiplies contiguous rows of X, as in XNNPACK's SpMM ("Fast Sparse ConvNets").
 * The includer defines VEC_FLOATS (8 for AVX2, 4 for the portable SSE2/NEON-sized copy) and ISA(name) to give every symbol an instruction-set suffix and compiles
 * this file under the matching target options; GCC vector extensions lower to AVX2/FMA there and
 * to baseline SSE2 (or plain scalar code on other machines) in the portable copy.
 */

typedef float ISA(v8f) __attribute__((vector_size(VEC_FLOATS * 4)));
typedef float ISA(v8f_unaligned) __attribute__((vector_size(VEC_FLOATS * 4), aligned(4)));
typedef int ISA(v8i) __attribute__((vector_size(VEC_FLOATS * 4)));

#define V8F ISA(v8f)
#define V8FU ISA(v8f_unaligned)
#define V8I ISA(v8i)

#if VEC_FLOATS == 8
#define SPLAT(w) ((V8F){(w), (w), (w), (w), (w), (w), (w), (w)})
#else
#define SPLAT(w) ((V8F){(w), (w), (w), (w)})
#endif

static inline V8F ISA(clip8)(V8F v, float lo, float hi) {
    V8F lov = SPLAT(lo), hiv = SPLAT(hi);
    V8I below = v < lov, above = v > hiv;
    V8I bits = ((V8I)v & ~below) | ((V8I)lov & below);
    bits = (bits & ~above) | ((V8I)hiv & above);
    return (V8F)bits;
}

static inline float ISA(clip1)(float v, float lo, float hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

/* One tile kernel per (R, C, NV): NV vectors of VEC_FLOATS columns, R output rows held in registers. */
#define DEFINE_TILE(R_, C_, NV_)                                                                 \
    static void ISA(tile_##R_##x##C_##_##NV_)(const spmm_args *a, int mb0, int mb1, int n0) {   \
        enum { R = R_, C = C_, NV = NV_ };                                                      \
        const int N = a->n;                                                                     \
        for (int mb = mb0; mb < mb1; ++mb) {                                                    \
            V8F acc[R][NV];                                                                     \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {                               \
                int row = mb * R + r;                                                           \
                float b = (a->bias && row < a->m) ? a->bias[row] : 0.0f;                        \
                _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[r][v] = SPLAT(b);  \
            }                                                                                   \
            const int jend = a->block_ptr[mb + 1];                                              \
            for (int j = a->block_ptr[mb]; j < jend; ++j) {                                     \
                const float *w = a->values + (size_t)j * (R * C);                               \
                const float *xp = a->x + (size_t)a->block_col[j] * N + n0;                      \
                if (PREFETCH_AHEAD && j + PREFETCH_AHEAD < jend) {                              \
                    const char *ahead =                                                         \
                        (const char *)(a->x + (size_t)a->block_col[j + PREFETCH_AHEAD] * N + n0); \
                    _Pragma("GCC unroll 8") for (int line = 0; line < NV * VEC_FLOATS * 4;      \
                                                 line += 64) __builtin_prefetch(ahead + line);  \
                }                                                                               \
                _Pragma("GCC unroll 4") for (int c = 0; c < C; ++c) {                           \
                    V8F xv[NV];                                                                 \
                    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                        \
                        xv[v] = *(const V8FU *)(xp + (size_t)c * N + VEC_FLOATS * v);                    \
                    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {                       \
                        V8F wv = SPLAT(w[c * R + r]);                                       \
                        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                    \
                            acc[r][v] += wv * xv[v];                                            \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {                               \
                int row = mb * R + r;                                                           \
                if (row >= a->m) break;                                                         \
                float *yp = a->y + (size_t)row * N + n0;                                        \
                _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                            \
                    *(V8FU *)(yp + VEC_FLOATS * v) = ISA(clip8)(acc[r][v], a->lo, a->hi);                \
            }                                                                                   \
        }                                                                                       \
    }

/* Columns left over after the vector tiles: same arithmetic, one column at a time. */
static void ISA(tile_scalar)(const spmm_args *a, int mb0, int mb1, int n0, int n1) {
    const int R = a->block_rows, C = a->block_cols, N = a->n;
    for (int mb = mb0; mb < mb1; ++mb) {
        for (int r = 0; r < R; ++r) {
            int row = mb * R + r;
            if (row >= a->m) break;
            for (int n = n0; n < n1; ++n) {
                float acc = a->bias ? a->bias[row] : 0.0f;
                for (int j = a->block_ptr[mb]; j < a->block_ptr[mb + 1]; ++j) {
                    const float *w = a->values + (size_t)j * (R * C);
                    const float *xp = a->x + (size_t)a->block_col[j] * N + n;
                    for (int c = 0; c < C; ++c) acc += w[c * R + r] * xp[(size_t)c * N];
                }
                a->y[(size_t)row * N + n] = ISA(clip1)(acc, a->lo, a->hi);
            }
        }
    }
}

/* Register budget (16 vector registers on AVX2 and SSE2): R * NV accumulators, NV loads of X and
 * one broadcast weight. Enough independent accumulators hide the FMA latency. */
#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 8
#endif
#ifndef CSR_NV
#define CSR_NV 8
#endif
#ifndef B41_NV
#define B41_NV 3
#endif
#ifndef B44_NV
#define B44_NV 2
#endif
#define DEFINE_SHAPE(R_, C_, NV_) DEFINE_TILE(R_, C_, NV_) DEFINE_TILE(R_, C_, 1)
#define DEFINE_SHAPE_EXPANDED(R_, C_, NV_) DEFINE_SHAPE(R_, C_, NV_)
DEFINE_SHAPE_EXPANDED(1, 1, CSR_NV)
DEFINE_SHAPE_EXPANDED(4, 1, B41_NV)
DEFINE_TILE(8, 1, 1)
DEFINE_SHAPE_EXPANDED(4, 4, B44_NV)

typedef void (*ISA(tile_fn))(const spmm_args *, int, int, int);

#define PICK(R_, C_, NV_) wide = ISA(tile_##R_##x##C_##_##NV_), narrow = ISA(tile_##R_##x##C_##_1), wide_cols = (NV_) * VEC_FLOATS
#define PICK_EXPANDED(R_, C_, NV_) PICK(R_, C_, NV_)

/* Rows [mb0, mb1) of block rows and columns [n0, n1) of X/Y: wide tiles, one vector, scalar. */
static void ISA(spmm_range)(const spmm_args *a, int mb0, int mb1, int n0, int n1) {
    ISA(tile_fn) wide, narrow;
    int wide_cols;
    if (a->block_rows == 1 && a->block_cols == 1) {
        PICK_EXPANDED(1, 1, CSR_NV);
    } else if (a->block_rows == 4 && a->block_cols == 1) {
        PICK_EXPANDED(4, 1, B41_NV);
    } else if (a->block_rows == 8 && a->block_cols == 1) {
        PICK_EXPANDED(8, 1, 1);
    } else if (a->block_rows == 4 && a->block_cols == 4) {
        PICK_EXPANDED(4, 4, B44_NV);
    } else {
        ISA(tile_scalar)(a, mb0, mb1, n0, n1);
        return;
    }
    int n = n0;
    for (; n + wide_cols <= n1; n += wide_cols) wide(a, mb0, mb1, n);
    for (; n + VEC_FLOATS <= n1; n += VEC_FLOATS) narrow(a, mb0, mb1, n);
    /* A last partial vector is recomputed overlapping the previous one (same values, same
     * order) when this range is wide enough; only tiny ranges fall back to scalar code. */
    if (n < n1 && n1 - n0 >= VEC_FLOATS) narrow(a, mb0, mb1, n1 - VEC_FLOATS);
    else if (n < n1) ISA(tile_scalar)(a, mb0, mb1, n, n1);
}

#undef PICK
#undef PICK_EXPANDED
#undef DEFINE_SHAPE
#undef DEFINE_SHAPE_EXPANDED
#undef SPLAT
#undef V8F
#undef V8FU
#undef V8I
