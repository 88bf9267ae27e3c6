/* Register-blocked sparse x dense kernels, included once per instruction set.
 *
 * Y[M, N] = act(W[M, K] @ X[K, N] + bias), W sparse in block-CSR form with R x C blocks
 * (CSR is R = C = 1).  X and Y are row-major; N is the pixel (or batch) axis, so each nonzero
 * weight block multiplies contiguous rows of X, as in XNNPACK's SpMM ("Fast Sparse ConvNets").
 * Vector types come from vec_impl.h (VEC_FLOATS floats per vector, ISA(name) suffixes).
 */

/* The arguments as locals: stores to Y could otherwise alias the float fields and force reloads. */
#define SPMM_LOCALS(a)                                                                           \
    const int N = (a)->n, M = (a)->m;                                                           \
    const float lo = (a)->lo, hi = (a)->hi;                                                     \
    const float *bias = (a)->bias, *residual = (a)->residual, *x = (a)->x;                      \
    const float *values = (a)->values;                                                          \
    const int32_t *block_ptr = (a)->block_ptr, *block_col = (a)->block_col;                     \
    const int Y0 = (a)->y_row0, YC0 = (a)->y_col0;                                             \
    const size_t LDY = (size_t)(a)->ldy;                                                        \
    float *y = (a)->y

/* One tile kernel per (R, C, NV): R output rows x NV vectors of VEC_FLOATS columns held in
 * registers. It walks block rows [mb0, mb1) and, inside each, the tiles of [n0, n1) (a multiple
 * of the tile width), so each output row segment is written contiguously. */
#define DEFINE_TILE(R_, C_, NV_)                                                                 \
    static void ISA(tile_##R_##x##C_##_##NV_)(const spmm_args *a, int mb0, int mb1, int n0,     \
                                              int n1) {                                         \
        enum { R = R_, C = C_, NV = NV_ };                                                      \
        SPMM_LOCALS(a);                                                                         \
        for (int mb = mb0; mb < mb1; ++mb) {                                                    \
            const int jbegin = block_ptr[mb], jend = block_ptr[mb + 1];                         \
            float b[R];                                                                         \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)                                 \
                b[r] = (bias && mb * R + r < M) ? bias[mb * R + r] : 0.0f;                      \
            for (int n = n0; n < n1; n += NV * VEC_FLOATS) {                                    \
                V8F acc[R][NV];                                                                 \
                _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {                           \
                    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[r][v] = SPLAT(b[r]); \
                    if (residual && mb * R + r < M) {                                           \
                        const float *rp = residual + (size_t)(mb * R + r) * N + n;              \
                        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                    \
                            acc[r][v] += *(const V8FU *)(rp + VEC_FLOATS * v);                  \
                    }                                                                           \
                }                                                                               \
                for (int j = jbegin; j < jend; ++j) {                                           \
                    const float *w = values + (size_t)j * (R * C);                              \
                    const float *xp = x + (size_t)block_col[j] * N + n;                         \
                    if (PREFETCH_AHEAD && j + PREFETCH_AHEAD < jend) {                          \
                        const char *ahead =                                                     \
                            (const char *)(x + (size_t)block_col[j + PREFETCH_AHEAD] * N + n);  \
                        _Pragma("GCC unroll 8") for (int line = 0; line < NV * VEC_FLOATS * 4;  \
                                                     line += 64) __builtin_prefetch(ahead + line); \
                    }                                                                           \
                    _Pragma("GCC unroll 4") for (int c = 0; c < C; ++c) {                       \
                        V8F xv[NV];                                                             \
                        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                    \
                            xv[v] = *(const V8FU *)(xp + (size_t)c * N + VEC_FLOATS * v);       \
                        _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {                   \
                            V8F wv = SPLAT(w[c * R + r]);                                       \
                            _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                \
                                acc[r][v] += wv * xv[v];                                        \
                        }                                                                       \
                    }                                                                           \
                }                                                                               \
                _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {                           \
                    if (mb * R + r >= M) break;                                                 \
                    float *yp = y + (mb * R + r - Y0) * LDY + (n - YC0);                         \
                    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                        \
                        *(V8FU *)(yp + VEC_FLOATS * v) = ISA(clip8)(acc[r][v], lo, hi);         \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }

/* Fewer than VEC_FLOATS columns (matrix-vector products, odd leftovers): scalar code with the
 * R rows of a block in registers and U interleaved partial sums per row, so consecutive blocks
 * do not wait on one another's additions. */
#define DEFINE_SCALAR(R_, C_, U_)                                                                \
    static void ISA(scalar_##R_##x##C_)(const spmm_args *a, int mb0, int mb1, int n0, int n1) {  \
        enum { R = R_, C = C_, U = U_ };                                                        \
        SPMM_LOCALS(a);                                                                         \
        for (int mb = mb0; mb < mb1; ++mb) {                                                    \
            for (int n = n0; n < n1; ++n) {                                                     \
                float acc[U][R];                                                                \
                _Pragma("GCC unroll 8") for (int u = 0; u < U; ++u)                             \
                    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) acc[u][r] = 0.0f;       \
                int j = block_ptr[mb];                                                          \
                const int jend = block_ptr[mb + 1];                                             \
                for (; j + U <= jend; j += U) {                                                 \
                    _Pragma("GCC unroll 8") for (int u = 0; u < U; ++u) {                       \
                        const float *w = values + (size_t)(j + u) * (R * C);                    \
                        const float *xp = x + (size_t)block_col[j + u] * N + n;                 \
                        _Pragma("GCC unroll 4") for (int c = 0; c < C; ++c)                     \
                            _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)                 \
                                acc[u][r] += w[c * R + r] * xp[(size_t)c * N];                  \
                    }                                                                           \
                }                                                                               \
                for (; j < jend; ++j) {                                                         \
                    const float *w = values + (size_t)j * (R * C);                              \
                    const float *xp = x + (size_t)block_col[j] * N + n;                         \
                    _Pragma("GCC unroll 4") for (int c = 0; c < C; ++c)                         \
                        _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r)                     \
                            acc[0][r] += w[c * R + r] * xp[(size_t)c * N];                      \
                }                                                                               \
                _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {                           \
                    const int row = mb * R + r;                                                 \
                    if (row >= M) break;                                                        \
                    float sum = bias ? bias[row] : 0.0f;                                        \
                    if (residual) sum += residual[(size_t)row * N + n];                         \
                    _Pragma("GCC unroll 8") for (int u = 0; u < U; ++u) sum += acc[u][r];       \
                    y[(row - Y0) * LDY + (n - YC0)] = ISA(clip1)(sum, lo, hi);                  \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }

/* Any other block shape: generic loops (slow, but exact). */
static void ISA(tile_scalar)(const spmm_args *a, int mb0, int mb1, int n0, int n1) {
    const int R = a->block_rows, C = a->block_cols, N = a->n, M = a->m;
    for (int mb = mb0; mb < mb1; ++mb) {
        for (int r = 0; r < R && mb * R + r < M; ++r) {
            const int row = mb * R + r;
            for (int n = n0; n < n1; ++n) {
                float acc = a->bias ? a->bias[row] : 0.0f;
                if (a->residual) acc += a->residual[(size_t)row * N + n];
                for (int j = a->block_ptr[mb]; j < a->block_ptr[mb + 1]; ++j) {
                    const float *w = a->values + (size_t)j * (R * C);
                    const float *xp = a->x + (size_t)a->block_col[j] * N + n;
                    for (int c = 0; c < C; ++c) acc += w[c * R + r] * xp[(size_t)c * N];
                }
                a->y[(size_t)(row - a->y_row0) * a->ldy + (n - a->y_col0)] = ISA(clip1)(acc, a->lo, a->hi);
            }
        }
    }
}

/* Register budget (16 vector registers on AVX2 and SSE2): R * NV accumulators, NV loads of X and
 * one broadcast weight. Enough independent accumulators hide the FMA latency. */
#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 4
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
#if CSR_NV > 4
DEFINE_TILE(1, 1, 4)
#define CSR_MID ISA(tile_1x1_4)
#else
#define CSR_MID NULL
#endif
DEFINE_SHAPE_EXPANDED(4, 1, B41_NV)
DEFINE_TILE(8, 1, 1)
DEFINE_SHAPE_EXPANDED(4, 4, B44_NV)
DEFINE_SCALAR(1, 1, 4)
DEFINE_SCALAR(4, 1, 2)
DEFINE_SCALAR(8, 1, 1)
DEFINE_SCALAR(4, 4, 1)

typedef void (*ISA(tile_fn))(const spmm_args *, int, int, int, int);

#define PICK(R_, C_, NV_)                                                                        \
    wide = ISA(tile_##R_##x##C_##_##NV_), narrow = ISA(tile_##R_##x##C_##_1),                    \
    scalar = ISA(scalar_##R_##x##C_), wide_cols = (NV_) * VEC_FLOATS
#define PICK_EXPANDED(R_, C_, NV_) PICK(R_, C_, NV_)

/* X columns per panel: a panel of X (K rows) stays within about half of a 512 KiB L2. */
#define PANEL_BYTES (256 * 1024)

/* Rows [mb0, mb1) of block rows and columns [n0, n1) of X/Y, panel by panel: wide tiles, single
 * vectors, then the last partial vector recomputed overlapping (same values, same order) or, for
 * ranges narrower than a vector, scalar code. */
static void ISA(spmm_range)(const spmm_args *a, int mb0, int mb1, int n0, int n1) {
    ISA(tile_fn) wide, narrow, scalar, mid = NULL;
    int wide_cols;
    if (a->block_rows == 1 && a->block_cols == 1) {
        PICK_EXPANDED(1, 1, CSR_NV);
        mid = CSR_MID; /* 4 vectors: enough chains for short rows where 8 do not fit */
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
    if (n1 - n0 < VEC_FLOATS) {
        scalar(a, mb0, mb1, n0, n1);
        return;
    }
    long panel = PANEL_BYTES / (4L * (a->k > 0 ? a->k : 1));
    panel = panel < wide_cols ? wide_cols : panel / wide_cols * wide_cols;
    const int mid_cols = 4 * VEC_FLOATS;
    for (int p0 = n0; p0 < n1; p0 += (int)panel) {
        int p1 = p0 + panel < n1 ? p0 + (int)panel : n1;
        int n = p0 + (p1 - p0) / wide_cols * wide_cols;
        if (n > p0) wide(a, mb0, mb1, p0, n);
        /* A partial tile at the end is recomputed overlapping the previous columns (same values,
         * same order) when the range allows, so short rows keep all their FMA chains. */
        if (n < p1 && p1 - n0 >= wide_cols) {
            wide(a, mb0, mb1, p1 - wide_cols, p1);
            continue;
        }
        if (mid && n < p1 && p1 - n0 >= mid_cols) {
            int mid_end = n + (p1 - n) / mid_cols * mid_cols;
            if (mid_end > n) mid(a, mb0, mb1, n, mid_end);
            if (mid_end < p1) mid(a, mb0, mb1, p1 - mid_cols, p1);
            continue;
        }
        int narrow_end = n + (p1 - n) / VEC_FLOATS * VEC_FLOATS;
        if (narrow_end > n) narrow(a, mb0, mb1, n, narrow_end);
        if (narrow_end < p1) narrow(a, mb0, mb1, p1 - VEC_FLOATS, p1);
    }
}

#undef PICK
#undef CSR_MID

#undef PICK_EXPANDED
#undef DEFINE_SHAPE
#undef DEFINE_SHAPE_EXPANDED
#undef DEFINE_TILE
#undef DEFINE_SCALAR
#undef SPMM_LOCALS
