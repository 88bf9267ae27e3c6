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
    const size_t LDY = (size_t)(a)->ldy, LDR = (size_t)(a)->ldr;                               \
    float *y = (a)->y

/* Pieces of the R-row kernels (tiles here, strips in strips_impl.h), with R, NV and the
 * SPMM_LOCALS in scope. Accumulators of block row mb at column n: the bias of row r (``b_r``, an
 * expression in r) plus the residual. */
#define BLOCK_ROWS_INIT(acc, mb, n, b_r)                                                         \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {                                       \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[r][v] = SPLAT(b_r);            \
        if (residual && (mb) * R + r < M) {                                                     \
            const float *rp = residual + ((mb) * R + r) * LDR + (n);                            \
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                                \
                acc[r][v] += *(const V8FU *)(rp + VEC_FLOATS * v);                              \
        }                                                                                       \
    }
/* acc[r] += w[r] * xv for the R weights of one block column. */
#define BLOCK_ROWS_FMA(acc, w, xv)                                                               \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {                                       \
        const V8F wv = SPLAT((w)[r]);                                                           \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[r][v] += wv * xv[v];           \
    }
/* Clipped accumulators to the rows of Y that exist (the last block row may be partial). */
#define BLOCK_ROWS_STORE(acc, mb, n)                                                             \
    _Pragma("GCC unroll 8") for (int r = 0; r < R; ++r) {                                       \
        if ((mb) * R + r >= M) break;                                                           \
        float *yp = y + ((mb) * R + r - Y0) * LDY + ((n) - YC0);                                 \
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                                    \
            *(V8FU *)(yp + VEC_FLOATS * v) = ISA(clip8)(acc[r][v], lo, hi);                     \
    }

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
                BLOCK_ROWS_INIT(acc, mb, n, b[r]);                                              \
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
                        BLOCK_ROWS_FMA(acc, w + c * R, xv);                                     \
                    }                                                                           \
                }                                                                               \
                BLOCK_ROWS_STORE(acc, mb, n);                                                   \
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
                    if (residual) sum += residual[row * LDR + n];                               \
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
                if (a->residual) acc += a->residual[(size_t)row * a->ldr + n];
                for (int j = a->block_ptr[mb]; j < a->block_ptr[mb + 1]; ++j) {
                    const float *w = a->values + (size_t)j * (R * C);
                    const float *xp = a->x + (size_t)a->block_col[j] * N + n;
                    for (int c = 0; c < C; ++c) acc += w[c * R + r] * xp[(size_t)c * N];
                }
                float *out = a->y + (size_t)(row - a->y_row0) * a->ldy + (n - a->y_col0);
                *out = ISA(clip1)(acc, a->lo, a->hi);
            }
        }
    }
}

/* Register budget (16 vector registers on AVX2 and SSE2): R * NV accumulators, NV loads of X and
 * one broadcast weight. Enough independent accumulators hide the FMA latency; every width up to
 * the widest is compiled so that a row of N columns splits into tiles of nearly equal width
 * (see spmm_range) instead of full tiles plus a narrow or recomputed remainder. */
#ifndef PREFETCH_AHEAD
#define PREFETCH_AHEAD 4
#endif
#define CSR_NV 8 /* widest tile per block shape, in vectors (bench/results: tile sweeps) */
#define B41_NV 3
#define B81_NV 1
#define B44_NV 2
DEFINE_TILE(1, 1, 1) DEFINE_TILE(1, 1, 2) DEFINE_TILE(1, 1, 3) DEFINE_TILE(1, 1, 4)
DEFINE_TILE(1, 1, 5) DEFINE_TILE(1, 1, 6) DEFINE_TILE(1, 1, 7) DEFINE_TILE(1, 1, 8)
DEFINE_TILE(4, 1, 1) DEFINE_TILE(4, 1, 2) DEFINE_TILE(4, 1, 3)
DEFINE_TILE(8, 1, 1)
DEFINE_TILE(4, 4, 1) DEFINE_TILE(4, 4, 2)
#include "strips_impl.h"
DEFINE_SCALAR(1, 1, 4)
DEFINE_SCALAR(4, 1, 2)
DEFINE_SCALAR(8, 1, 1)
DEFINE_SCALAR(4, 4, 1)

typedef void (*ISA(tile_fn))(const spmm_args *, int, int, int, int);

/* Tiles by width in vectors (index 0 unused), the widest width, and the scalar kernel; for strips,
 * the weights per row of X a range needs before copying X pays (spmm_range). */
typedef struct {
    ISA(tile_fn) tiles[9];
    int widest;
    ISA(tile_fn) scalar;
    int min_reuse;
} ISA(tile_set);

static const ISA(tile_set) ISA(csr_tiles) = {
    {NULL, ISA(tile_1x1_1), ISA(tile_1x1_2), ISA(tile_1x1_3), ISA(tile_1x1_4), ISA(tile_1x1_5),
     ISA(tile_1x1_6), ISA(tile_1x1_7), ISA(tile_1x1_8)},
    CSR_NV, ISA(scalar_1x1), 0};
static const ISA(tile_set) ISA(csr_strips) = {
    {NULL, ISA(strip_1), ISA(strip_2), ISA(strip_3), ISA(strip_4)}, CSR_STRIP_NV, ISA(scalar_1x1),
    CSR_STRIP_MIN_REUSE};
static const ISA(tile_set) ISA(b41_strips) = {
    {NULL, ISA(strip_4x1_1), ISA(strip_4x1_2), ISA(strip_4x1_3)}, B41_STRIP_NV, ISA(scalar_4x1),
    B41_STRIP_MIN_REUSE};
static const ISA(tile_set) ISA(b41_tiles) = {
    {NULL, ISA(tile_4x1_1), ISA(tile_4x1_2), ISA(tile_4x1_3)}, B41_NV, ISA(scalar_4x1), 0};
static const ISA(tile_set) ISA(b81_tiles) = {{NULL, ISA(tile_8x1_1)}, B81_NV, ISA(scalar_8x1), 0};
static const ISA(tile_set) ISA(b44_tiles) = {
    {NULL, ISA(tile_4x4_1), ISA(tile_4x4_2)}, B44_NV, ISA(scalar_4x4), 0};

/* X columns per panel: a panel of X (K rows) stays within about half of a 512 KiB L2. */
#define PANEL_BYTES (256 * 1024)

/* Columns [c0, c1) as tiles of nearly equal width: v vectors in t tiles, the first v % t of them
 * v / t + 1 vectors wide and the others v / t, so every tile keeps most of the widest tile's FMA
 * chains. Each run of equal tiles is one call (rows outer, tiles inner: a row's weights stay in
 * L1 across its tiles). A partial last vector is recomputed overlapping columns before it (same
 * values, same order), never before ``lo`` (the caller's range start, a vector or more back). */
static void ISA(balanced_tiles)(const ISA(tile_set) *set, const spmm_args *a, int mb0, int mb1,
                                int c0, int c1, int lo) {
    const int vectors = (c1 - c0 + VEC_FLOATS - 1) / VEC_FLOATS;
    const int tiles = (vectors + set->widest - 1) / set->widest;
    const int base = vectors / tiles, wider = vectors % tiles, cols = base * VEC_FLOATS;
    int at = c0;
    if (wider) { /* ends before c1: at least one base-width tile follows */
        set->tiles[base + 1](a, mb0, mb1, at, at + wider * (cols + VEC_FLOATS));
        at += wider * (cols + VEC_FLOATS);
    }
    const int last = at + (tiles - wider - 1) * cols; /* start of the last tile */
    if (last > at) set->tiles[base](a, mb0, mb1, at, last);
    if (last + cols <= c1) {
        set->tiles[base](a, mb0, mb1, last, last + cols);
    } else if (c1 - cols >= lo) { /* shifted back over columns already done */
        set->tiles[base](a, mb0, mb1, c1 - cols, c1);
    } else { /* no room to shift: one vector less, then the few columns left */
        const int done = last + cols - VEC_FLOATS;
        if (base > 1) set->tiles[base - 1](a, mb0, mb1, last, done);
        /* A single-vector tile is one serial FMA chain per row; up to 3 columns cost less as
         * scalar code with interleaved sums. */
        if (c1 - done <= 3) set->scalar(a, mb0, mb1, done, c1);
        else set->tiles[1](a, mb0, mb1, c1 - VEC_FLOATS, c1);
    }
}

/* Rows [mb0, mb1) of block rows and columns [n0, n1) of X/Y, in panels of columns that keep X in
 * L2 (the last panel up to twice as wide); ranges narrower than a vector run scalar code. */
static void ISA(spmm_range)(const spmm_args *a, int mb0, int mb1, int n0, int n1) {
    const ISA(tile_set) *set, *strips = NULL;
    if (a->block_rows == 1 && a->block_cols == 1) {
        set = &ISA(csr_tiles);
        strips = &ISA(csr_strips);
    } else if (a->block_rows == 4 && a->block_cols == 1) {
        set = &ISA(b41_tiles);
        strips = &ISA(b41_strips);
    } else if (a->block_rows == 8 && a->block_cols == 1) set = &ISA(b81_tiles);
    else if (a->block_rows == 4 && a->block_cols == 4) set = &ISA(b44_tiles);
    else {
        ISA(tile_scalar)(a, mb0, mb1, n0, n1);
        return;
    }
    if (n1 - n0 < VEC_FLOATS) {
        set->scalar(a, mb0, mb1, n0, n1);
        return;
    }
    /* Strips copy K rows of X each: worth it when the rows reuse them enough; fewer weights per
     * row of X run the tiles on X in place. */
    spmm_args with_strip;
    const long weights = (long)a->block_rows * (a->block_ptr[mb1] - a->block_ptr[mb0]);
    float *buffer = strips && weights >= strips->min_reuse * (long)a->k
                        ? take_strip_buffer((size_t)a->k * strips->widest * VEC_FLOATS) : NULL;
    if (buffer) {
        with_strip = *a;
        with_strip.strip = buffer;
        a = &with_strip;
        set = strips;
    }
    /* Panels are whole widest tiles; the last one takes the remainder, split evenly. */
    const int tile_cols = set->widest * VEC_FLOATS;
    long panel = PANEL_BYTES / (4L * (a->k > 0 ? a->k : 1));
    panel = panel < tile_cols ? tile_cols : panel / tile_cols * tile_cols;
    for (int at = n0; at < n1;) {
        const int end = n1 - at < 2 * panel ? n1 : at + (int)panel;
        ISA(balanced_tiles)(set, a, mb0, mb1, at, end, n0);
        at = end;
    }
}

#undef CSR_NV
#undef CSR_STRIP_NV
#undef B41_STRIP_NV
#undef CSR_STRIP_MIN_REUSE
#undef B41_STRIP_MIN_REUSE
#undef DEFINE_STRIP
#undef DEFINE_STRIP_ROWS
#undef B41_NV
#undef B81_NV
#undef B44_NV
#undef DEFINE_TILE
#undef DEFINE_SCALAR
#undef SPMM_LOCALS
#undef BLOCK_ROWS_INIT
#undef BLOCK_ROWS_FMA
#undef BLOCK_ROWS_STORE
