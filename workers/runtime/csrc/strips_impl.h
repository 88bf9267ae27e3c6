/* Sparse x dense kernels in strips, included by spmm_impl.h once per instruction set.
 *
 * For each strip of NV vectors of columns, X's strip (K rows) is first copied into a contiguous,
 * aligned buffer (a->strip: K * NV * VEC_FLOATS floats, see spmm_range), then every block row of
 * W runs over it. The copy stays in L1 or streams from L2 in order, where the tiles reading X in
 * place fetch short pieces of rows N floats apart: from L2 at best, and when N * 4 bytes is a
 * multiple of 4 KiB the pieces map to a few L1 sets. Measured +25-60% for CSR and up to +45% for
 * 4x1 blocks at 90% sparsity (bench/results/strips_epyc_2cores.md).
 */

/* CSR: U nonzeros per step feed U independent accumulator sets, so more FMA chains are in flight
 * than one nonzero's NV vectors (4 vectors x 2 nonzeros beat 2 x 4, 3 x 4, 4 x 3, 5 x 2, 6 x 1
 * and 6 x 2). */
#define DEFINE_STRIP(NV_, U_)                                                                    \
    static void ISA(strip_##NV_)(const spmm_args *a, int mb0, int mb1, int n0, int n1) {        \
        enum { NV = NV_, U = U_, W = NV_ * VEC_FLOATS };                                        \
        SPMM_LOCALS(a);                                                                         \
        float *pk = a->strip;                                                                   \
        (void)M;                                                                                \
        for (int n = n0; n < n1; n += W) {                                                      \
            for (int kk = 0; kk < a->k; ++kk)                                                   \
                _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                            \
                    *(V8F *)(pk + (size_t)kk * W + VEC_FLOATS * v) =                            \
                        *(const V8FU *)(x + (size_t)kk * N + n + VEC_FLOATS * v);               \
            for (int row = mb0; row < mb1; ++row) {                                             \
                int j = block_ptr[row];                                                         \
                const int jend = block_ptr[row + 1];                                            \
                V8F acc[U][NV];                                                                 \
                const float b = bias ? bias[row] : 0.0f;                                        \
                _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[0][v] = SPLAT(b);      \
                _Pragma("GCC unroll 8") for (int u = 1; u < U; ++u)                             \
                    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[u][v] = SPLAT(0.0f); \
                if (residual) {                                                                 \
                    const float *rp = residual + row * LDR + n;                                 \
                    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                        \
                        acc[0][v] += *(const V8FU *)(rp + VEC_FLOATS * v);                      \
                }                                                                               \
                for (; j + U <= jend; j += U) {                                                 \
                    _Pragma("GCC unroll 8") for (int u = 0; u < U; ++u) {                       \
                        const float *xp = pk + (size_t)block_col[j + u] * W;                    \
                        const V8F wv = SPLAT(values[j + u]);                                    \
                        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                    \
                            acc[u][v] += wv * *(const V8F *)(xp + VEC_FLOATS * v);              \
                    }                                                                           \
                }                                                                               \
                for (; j < jend; ++j) {                                                         \
                    const float *xp = pk + (size_t)block_col[j] * W;                            \
                    const V8F wv = SPLAT(values[j]);                                            \
                    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                        \
                        acc[0][v] += wv * *(const V8F *)(xp + VEC_FLOATS * v);                  \
                }                                                                               \
                _Pragma("GCC unroll 8") for (int u = 1; u < U; ++u)                             \
                    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[0][v] += acc[u][v]; \
                float *yp = y + (row - Y0) * LDY + (n - YC0);                                   \
                _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                            \
                    *(V8FU *)(yp + VEC_FLOATS * v) = ISA(clip8)(acc[0][v], lo, hi);             \
            }                                                                                   \
        }                                                                                       \
    }

/* R x 1 blocks: each vector of X feeds R rows, so one block per step keeps R * NV chains. */
#define DEFINE_STRIP_ROWS(R_, NV_)                                                               \
    static void ISA(strip_##R_##x1_##NV_)(const spmm_args *a, int mb0, int mb1, int n0,         \
                                          int n1) {                                             \
        enum { R = R_, NV = NV_, W = NV_ * VEC_FLOATS };                                        \
        SPMM_LOCALS(a);                                                                         \
        float *pk = a->strip;                                                                   \
        for (int n = n0; n < n1; n += W) {                                                      \
            for (int kk = 0; kk < a->k; ++kk)                                                   \
                _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                            \
                    *(V8F *)(pk + (size_t)kk * W + VEC_FLOATS * v) =                            \
                        *(const V8FU *)(x + (size_t)kk * N + n + VEC_FLOATS * v);               \
            for (int mb = mb0; mb < mb1; ++mb) {                                                \
                const int jbegin = block_ptr[mb], jend = block_ptr[mb + 1];                     \
                V8F acc[R][NV];                                                                 \
                BLOCK_ROWS_INIT(acc, mb, n, (bias && mb * R + r < M) ? bias[mb * R + r] : 0.0f); \
                for (int j = jbegin; j < jend; ++j) {                                           \
                    const float *w = values + (size_t)j * R;                                    \
                    const float *xp = pk + (size_t)block_col[j] * W;                            \
                    V8F xv[NV];                                                                 \
                    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)                        \
                        xv[v] = *(const V8F *)(xp + VEC_FLOATS * v);                            \
                    BLOCK_ROWS_FMA(acc, w, xv);                                                 \
                }                                                                               \
                BLOCK_ROWS_STORE(acc, mb, n);                                                   \
            }                                                                                   \
        }                                                                                       \
    }

#define CSR_STRIP_NV 4 /* widest strips, in vectors (4x1 2 wide: 5-15% slower) */
#define B41_STRIP_NV 3
/* Weights per row of X before strips pay. CSR: from 2 (12.8 on the bench's smallest layer gains
 * 20-30%). 4x1 tiles already share each load of X among 4 rows: strips lost 5-20% at 6-19
 * weights per row of X (more where N = 3136 makes X and Y stream from memory, which the tiles
 * read and write row by row) and gained 10-35% from 25.6. */
#define CSR_STRIP_MIN_REUSE 2
#define B41_STRIP_MIN_REUSE 24
DEFINE_STRIP(1, 2) DEFINE_STRIP(2, 2) DEFINE_STRIP(3, 2) DEFINE_STRIP(4, 2)
DEFINE_STRIP_ROWS(4, 1) DEFINE_STRIP_ROWS(4, 2) DEFINE_STRIP_ROWS(4, 3)
