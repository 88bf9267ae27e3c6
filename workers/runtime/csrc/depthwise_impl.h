/* Depthwise convolution (NCHW, one filter per channel), included once per instruction set after
 * vec_impl.h. depthwise_planes runs images*channels planes [p0, p1) on one thread's zeroed
 * scratch (depthwise_scratch_floats in sparse_kernels.c). 3x3 filters with stride 1 or 2 take a
 * fast path; other filters the general one below it.
 */

#if VEC_FLOATS == 8
#define EVEN_LANES ((V8I){0, 2, 4, 6, 8, 10, 12, 14})
#define ODD_LANES ((V8I){1, 3, 5, 7, 9, 11, 13, 15})
#else
#define EVEN_LANES ((V8I){0, 2, 4, 6})
#define ODD_LANES ((V8I){1, 3, 5, 7})
#endif

/* Even (odd = 0) or odd (odd = 1) lanes of the 2 * VEC_FLOATS floats first:second. On AVX2 an
 * in-lane shufps and a 64-bit lane permute; GCC's generic shuffle takes vpermd pairs, a blend. */
static inline __attribute__((always_inline)) V8F ISA(half_lanes)(V8F first, V8F second, int odd) {
#if defined(__x86_64__) && VEC_FLOATS == 8
    const __m256 pairs = odd ? _mm256_shuffle_ps((__m256)first, (__m256)second, 0xDD)
                             : _mm256_shuffle_ps((__m256)first, (__m256)second, 0x88);
    return (V8F)_mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(pairs), 0xD8));
#else
    return odd ? __builtin_shuffle(first, second, ODD_LANES)
               : __builtin_shuffle(first, second, EVEN_LANES);
#endif
}

/* ---- 3x3, dilation 1, stride 1 or 2 ---------------------------------------------------------
 * Each plane is copied into zero-padded scratch rows of depthwise_row_floats floats. Stride 2
 * stores a padded row as its even columns, then (at half the row) its odd columns, so the three
 * taps of a row are plain vector loads (even[j], odd[j], even[j + 1]) instead of shuffles. The
 * nine taps stay in registers; DW3_NV output vectors per row give independent FMA chains. */
#define DW3_NV 4

/* Zeroes the padding rows above and below the plane: a fused layer's bands change pt, pb and h
 * between calls on one scratch, so rows written as data before may be padding now. */
static void ISA(zero_pad_rows)(const depthwise_args *a, float *pad, int rs) {
    memset(pad, 0, sizeof(float) * rs * a->pt);
    memset(pad + (size_t)(a->pt + a->h) * rs, 0, sizeof(float) * rs * a->pb);
}

/* Output plane p starts here: planes are oh * ow apart unless y_plane says otherwise (bands). */
static inline float *ISA(dw_out_plane)(const depthwise_args *a, int p) {
    return a->y + (size_t)p * (a->y_plane ? (size_t)a->y_plane : (size_t)a->oh * a->ow);
}

static void ISA(dw3x3_fill)(const depthwise_args *a, const float *src, float *pad, int rs) {
    const int half = rs / 2, w = a->w;
    /* Padded column c = source column + pl: even source columns land on the even (pl even) or
     * odd (pl odd) half, at these offsets. Only data is written: padding slots stay zero. */
    const int even_to = a->pl % 2 ? half + (a->pl - 1) / 2 : a->pl / 2;
    const int odd_to = a->pl % 2 ? (a->pl + 1) / 2 : half + a->pl / 2;
    ISA(zero_pad_rows)(a, pad, rs);
    for (int r = 0; r < a->h; ++r) {
        float *row = pad + (size_t)(r + a->pt) * rs;
        const float *s = src + (size_t)r * w;
        if (a->sh == 1) {
            memcpy(row + a->pl, s, sizeof(float) * w);
            continue;
        }
        /* Straight from the source (a staging copy would make every load here wait on a
         * store-forwarding failure); whole vectors while they stay inside the row. */
        int t = 0;
        for (; 2 * t + 2 * VEC_FLOATS <= w; t += VEC_FLOATS) {
            const V8F first = *(const V8FU *)(s + 2 * t);
            const V8F second = *(const V8FU *)(s + 2 * t + VEC_FLOATS);
            *(V8FU *)(row + even_to + t) = ISA(half_lanes)(first, second, 0);
            *(V8FU *)(row + odd_to + t) = ISA(half_lanes)(first, second, 1);
        }
        for (; 2 * t < w; ++t) {
            row[even_to + t] = s[2 * t];
            if (2 * t + 1 < w) row[odd_to + t] = s[2 * t + 1];
        }
    }
}

/* Tap (row, kj) for outputs [pos, pos + VEC_FLOATS) of a stride-S row; constant-folds. */
static inline __attribute__((always_inline)) V8F ISA(dw3_load)(const float *row, int half, int S,
                                                                 int kj, int pos) {
    if (S == 1) return *(const V8FU *)(row + pos + kj);
    if (kj == 1) return *(const V8FU *)(row + half + pos);
    return *(const V8FU *)(row + pos + kj / 2);
}

#define DW3_TAPS(acc, pos)                                                                       \
    do {                                                                                         \
        acc += t0 * ISA(dw3_load)(r0, half, S, 0, pos);                                          \
        acc += t1 * ISA(dw3_load)(r0, half, S, 1, pos);                                          \
        acc += t2 * ISA(dw3_load)(r0, half, S, 2, pos);                                          \
        acc += t3 * ISA(dw3_load)(r1, half, S, 0, pos);                                          \
        acc += t4 * ISA(dw3_load)(r1, half, S, 1, pos);                                          \
        acc += t5 * ISA(dw3_load)(r1, half, S, 2, pos);                                          \
        acc += t6 * ISA(dw3_load)(r2, half, S, 0, pos);                                          \
        acc += t7 * ISA(dw3_load)(r2, half, S, 1, pos);                                          \
        acc += t8 * ISA(dw3_load)(r2, half, S, 2, pos);                                          \
    } while (0)

/* NVG vectors from ``start``; starts past ow - VEC_FLOATS are clamped there (a repeated vector
 * writes the same values twice), so a short remainder keeps its independent chains. */
#define DW3_GROUP(NVG, start)                                                                    \
    do {                                                                                         \
        int pos[NVG];                                                                            \
        V8F acc[NVG];                                                                            \
        _Pragma("GCC unroll 4") for (int v = 0; v < NVG; ++v) {                                 \
            int at = (start) + v * VEC_FLOATS;                                                   \
            pos[v] = at + VEC_FLOATS <= ow ? at : ow - VEC_FLOATS;                               \
            acc[v] = bias;                                                                       \
        }                                                                                        \
        _Pragma("GCC unroll 4") for (int v = 0; v < NVG; ++v) DW3_TAPS(acc[v], pos[v]);         \
        _Pragma("GCC unroll 4") for (int v = 0; v < NVG; ++v)                                   \
            *(V8FU *)(d + pos[v]) = ISA(clip8)(acc[v], lo, hi);                                  \
    } while (0)

/* Stride 1, two output rows at once: input rows 1 and 2 serve both, so each loaded vector feeds
 * two FMAs (12 loads for 18 FMAs instead of 18) and 2 * NVG chains run side by side. */
#define DW3_PAIR_ROW(x0, x1, x2, acc, ta, tb, tc)                                               \
    do {                                                                                         \
        acc += ta * x0;                                                                          \
        acc += tb * x1;                                                                          \
        acc += tc * x2;                                                                          \
    } while (0)

#define DW3_PAIR_GROUP(NVG, start)                                                               \
    do {                                                                                         \
        int pos[NVG];                                                                            \
        V8F top[NVG], bottom[NVG];                                                               \
        _Pragma("GCC unroll 4") for (int v = 0; v < NVG; ++v) {                                 \
            int at = (start) + v * VEC_FLOATS;                                                   \
            pos[v] = at + VEC_FLOATS <= ow ? at : ow - VEC_FLOATS;                               \
            top[v] = bottom[v] = bias;                                                           \
        }                                                                                        \
        _Pragma("GCC unroll 4") for (int v = 0; v < NVG; ++v) {                                 \
            const float *p0 = r0 + pos[v], *p1 = r1 + pos[v], *p2 = r2 + pos[v];                 \
            const float *p3 = r3 + pos[v];                                                       \
            V8F x0 = *(const V8FU *)p0, x1 = *(const V8FU *)(p0 + 1);                            \
            V8F x2 = *(const V8FU *)(p0 + 2);                                                    \
            DW3_PAIR_ROW(x0, x1, x2, top[v], t0, t1, t2);                                        \
            x0 = *(const V8FU *)p1, x1 = *(const V8FU *)(p1 + 1), x2 = *(const V8FU *)(p1 + 2);  \
            DW3_PAIR_ROW(x0, x1, x2, top[v], t3, t4, t5);                                        \
            DW3_PAIR_ROW(x0, x1, x2, bottom[v], t0, t1, t2);                                     \
            x0 = *(const V8FU *)p2, x1 = *(const V8FU *)(p2 + 1), x2 = *(const V8FU *)(p2 + 2);  \
            DW3_PAIR_ROW(x0, x1, x2, top[v], t6, t7, t8);                                        \
            DW3_PAIR_ROW(x0, x1, x2, bottom[v], t3, t4, t5);                                     \
            x0 = *(const V8FU *)p3, x1 = *(const V8FU *)(p3 + 1), x2 = *(const V8FU *)(p3 + 2);  \
            DW3_PAIR_ROW(x0, x1, x2, bottom[v], t6, t7, t8);                                     \
        }                                                                                        \
        _Pragma("GCC unroll 4") for (int v = 0; v < NVG; ++v) {                                 \
            *(V8FU *)(d + pos[v]) = ISA(clip8)(top[v], lo, hi);                                  \
            *(V8FU *)(d + ow + pos[v]) = ISA(clip8)(bottom[v], lo, hi);                          \
        }                                                                                        \
    } while (0)

#define DEFINE_DW3(S_)                                                                           \
    static void ISA(dw3x3_rows_s##S_)(const float *pad, int rs, const float *k, float b,         \
                                       float lo, float hi, int oh, int ow, float *dst) {         \
        enum { S = S_ };                                                                         \
        const int half = rs / 2;                                                                 \
        const V8F t0 = SPLAT(k[0]), t1 = SPLAT(k[1]), t2 = SPLAT(k[2]), t3 = SPLAT(k[3]);        \
        const V8F t4 = SPLAT(k[4]), t5 = SPLAT(k[5]), t6 = SPLAT(k[6]), t7 = SPLAT(k[7]);        \
        const V8F t8 = SPLAT(k[8]), bias = SPLAT(b);                                             \
        for (int i = 0; i < oh; ++i) {                                                           \
            const float *r0 = pad + (size_t)(i * S) * rs, *r1 = r0 + rs, *r2 = r1 + rs;          \
            float *d = dst + (size_t)i * ow;                                                     \
            if (ow < VEC_FLOATS) { /* lanes past ow read scratch padding and are dropped */     \
                V8F acc = bias;                                                                  \
                DW3_TAPS(acc, 0);                                                                \
                float lanes[VEC_FLOATS];                                                         \
                *(V8FU *)lanes = ISA(clip8)(acc, lo, hi);                                        \
                memcpy(d, lanes, sizeof(float) * ow);                                            \
                continue;                                                                        \
            }                                                                                    \
            if (S == 1 && i + 1 < oh) {                                                          \
                const float *r3 = r2 + rs;                                                       \
                for (int start = 0; start < ow; start += 2 * VEC_FLOATS) DW3_PAIR_GROUP(2, start); \
                ++i;                                                                             \
                continue;                                                                        \
            }                                                                                    \
            int start = 0;                                                                       \
            for (; start + DW3_NV * VEC_FLOATS <= ow; start += DW3_NV * VEC_FLOATS)              \
                DW3_GROUP(DW3_NV, start);                                                        \
            if (ow - start > 2 * VEC_FLOATS) DW3_GROUP(DW3_NV, start);                           \
            else if (ow > start) DW3_GROUP(2, start);                                            \
        }                                                                                        \
    }

DEFINE_DW3(1)
DEFINE_DW3(2)

/* Stride 1 with one column of padding on each side ("same" padding), rows of 9 or more: no
 * padded copy at all. Rows outside the image read a row of zeros; the first and last vectors of
 * a row take their out-of-row tap from a lane shift with a zero lane; the vectors between load
 * the source rows directly (the last vector overlaps the one before when ow is not a multiple). */
#if VEC_FLOATS == 8
#define SHIFT_IN_LEFT ((V8I){8, 0, 1, 2, 3, 4, 5, 6})
#define SHIFT_IN_RIGHT ((V8I){1, 2, 3, 4, 5, 6, 7, 8})
#else
#define SHIFT_IN_LEFT ((V8I){4, 0, 1, 2})
#define SHIFT_IN_RIGHT ((V8I){1, 2, 3, 4})
#endif

static int ISA(dw3x3_direct_ok)(const depthwise_args *a) {
    return a->sh == 1 && a->pl == 1 && a->pr == 1 && a->w >= VEC_FLOATS + 1 && a->ow == a->w;
}

#define DW3_DIRECT_ROW(row, ta, tb, tc, edge)                                                    \
    do {                                                                                         \
        const V8F mid = *(const V8FU *)((row) + pos);                                            \
        const V8F left = (edge) < 0 ? __builtin_shuffle(mid, zero, SHIFT_IN_LEFT)                \
                                    : *(const V8FU *)((row) + pos - 1);                          \
        const V8F right = (edge) > 0 ? __builtin_shuffle(mid, zero, SHIFT_IN_RIGHT)              \
                                     : *(const V8FU *)((row) + pos + 1);                         \
        DW3_PAIR_ROW(left, mid, right, acc, ta, tb, tc);                                         \
    } while (0)

/* One output vector at ``pos``; edge -1: first vector, +1: last vector, 0: inside. */
#define DW3_DIRECT_VECTOR(pos_, edge)                                                            \
    do {                                                                                         \
        const int pos = (pos_);                                                                  \
        V8F acc = bias;                                                                          \
        DW3_DIRECT_ROW(r0, t0, t1, t2, edge);                                                    \
        DW3_DIRECT_ROW(r1, t3, t4, t5, edge);                                                    \
        DW3_DIRECT_ROW(r2, t6, t7, t8, edge);                                                    \
        *(V8FU *)(d + pos) = ISA(clip8)(acc, lo, hi);                                            \
    } while (0)

/* Locals of the in-place paths (here and dw3x3_s2.h): geometry, the nine taps, bias, zero. */
#define DW3_DIRECT_LOCALS(a, k, b)                                                               \
    const int w = (a)->w, h = (a)->h, ow = (a)->ow, pt = (a)->pt;                                \
    const float lo = (a)->lo, hi = (a)->hi;                                                      \
    const V8F t0 = SPLAT((k)[0]), t1 = SPLAT((k)[1]), t2 = SPLAT((k)[2]);                        \
    const V8F t3 = SPLAT((k)[3]), t4 = SPLAT((k)[4]), t5 = SPLAT((k)[5]);                        \
    const V8F t6 = SPLAT((k)[6]), t7 = SPLAT((k)[7]), t8 = SPLAT((k)[8]);                        \
    const V8F bias = SPLAT(b), zero = SPLAT(0.0f)

/* Input rows first, first + 1, first + 2 of the plane, or the row of zeros outside it. */
#define DW3_DIRECT_INPUT_ROWS(first)                                                             \
    const float *rows[3];                                                                        \
    for (int ki = 0; ki < 3; ++ki) {                                                             \
        const int r = (first) + ki;                                                              \
        rows[ki] = r >= 0 && r < h ? src + (size_t)r * w : zeros;                                \
    }                                                                                            \
    const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2]

static void ISA(dw3x3_rows_direct)(const depthwise_args *a, const float *src, const float *zeros,
                                   const float *k, float b, float *dst) {
    DW3_DIRECT_LOCALS(a, k, b);
    for (int i = 0; i < a->oh; ++i) {
        DW3_DIRECT_INPUT_ROWS(i - pt);
        float *d = dst + (size_t)i * ow;
        DW3_DIRECT_VECTOR(0, -1);
        /* Inside vectors at VEC_FLOATS, 2 VEC_FLOATS, ... before the last vector's start: they
         * read columns up to at + VEC_FLOATS <= ow - 1, inside the row. */
        for (int at = VEC_FLOATS; at < ow - VEC_FLOATS; at += VEC_FLOATS) DW3_DIRECT_VECTOR(at, 0);
        DW3_DIRECT_VECTOR(ow - VEC_FLOATS, 1);
    }
}

#include "dw3x3_s2.h"

#undef DW3_DIRECT_VECTOR
#undef DW3_DIRECT_ROW
#undef DW3_DIRECT_LOCALS
#undef DW3_DIRECT_INPUT_ROWS
#undef SHIFT_IN_LEFT
#undef SHIFT_IN_RIGHT

/* Small same-padded stride-1 planes (7x7, 14x14: a row is at most two vectors, so per-row work
 * dominates): the plane is one flat run of h * w outputs, vectorised across row ends. The taps
 * of output q are flat[q + (ki - 1) * w + kj - 1]; rows above and below read the zero margins,
 * and the lanes where a left (right) tap would wrap to the previous (next) row are masked to 0.
 * The masks depend only on the vector's position, so they are made once per call. */
#define DW3_SMALL_MAX_VECTORS 32

static int ISA(dw3x3_small_ok)(const depthwise_args *a) {
    return a->sh == 1 && a->pt == 1 && a->pl == 1 && a->pb == 1 && a->pr == 1 &&
           a->oh == a->h && a->ow == a->w && a->h * a->w >= VEC_FLOATS &&
           a->h * a->w <= DW3_SMALL_MAX_VECTORS * VEC_FLOATS;
}

static inline int ISA(dw3_small_start)(int v, int size) {
    return (v + 1) * VEC_FLOATS <= size ? v * VEC_FLOATS : size - VEC_FLOATS;
}

static void ISA(dw3x3_small_masks)(const depthwise_args *a, V8I *left, V8I *right) {
    const int size = a->h * a->w, vectors = (size + VEC_FLOATS - 1) / VEC_FLOATS;
    for (int v = 0; v < vectors; ++v) {
        const int start = ISA(dw3_small_start)(v, size);
        for (int lane = 0; lane < VEC_FLOATS; ++lane) {
            const int column = (start + lane) % a->w;
            left[v][lane] = column == 0 ? 0 : -1;
            right[v][lane] = column == a->w - 1 ? 0 : -1;
        }
    }
}

static void ISA(dw3x3_small_plane)(const depthwise_args *a, const float *src, float *scratch,
                                   const V8I *left, const V8I *right, const float *k, float b,
                                   float *dst) {
    const int w = a->w, size = a->h * w, vectors = (size + VEC_FLOATS - 1) / VEC_FLOATS;
    float *flat = scratch + w + 16; /* margins of w + 16 zeros on both sides stay zero */
    memcpy(flat, src, sizeof(float) * size);
    const V8F bias = SPLAT(b);
    for (int v = 0; v < vectors; ++v) {
        const int start = ISA(dw3_small_start)(v, size);
        V8F acc = bias;
        _Pragma("GCC unroll 3") for (int ki = 0; ki < 3; ++ki) {
            const float *row = flat + start + (ki - 1) * w;
            const V8F l = (V8F)((V8I) * (const V8FU *)(row - 1) & left[v]);
            const V8F r = (V8F)((V8I) * (const V8FU *)(row + 1) & right[v]);
            acc += SPLAT(k[3 * ki]) * l;
            acc += SPLAT(k[3 * ki + 1]) * *(const V8FU *)row;
            acc += SPLAT(k[3 * ki + 2]) * r;
        }
        *(V8FU *)(dst + start) = ISA(clip8)(acc, a->lo, a->hi);
    }
}

/* The scratch starts zeroed and the direct path never writes it: its first floats are the row
 * of zeros (a call uses one path for all its planes: the choice depends on the geometry only). */
static void ISA(dw3x3_planes)(const depthwise_args *a, int p0, int p1, float *scratch) {
    const int rs = depthwise_row_floats(a), small = ISA(dw3x3_small_ok)(a);
    V8I left[DW3_SMALL_MAX_VECTORS], right[DW3_SMALL_MAX_VECTORS];
    if (small) ISA(dw3x3_small_masks)(a, left, right);
    for (int p = p0; p < p1; ++p) {
        const int ch = (p + a->ch0) % a->c;
        const float *k = a->weight + (size_t)ch * 9;
        const float b = a->bias ? a->bias[ch] : 0.0f;
        float *dst = ISA(dw_out_plane)(a, p);
        if (small) {
            ISA(dw3x3_small_plane)(a, a->x + (size_t)p * a->h * a->w, scratch, left, right, k, b,
                                   dst);
            continue;
        }
        if (ISA(dw3x3_direct_ok)(a)) {
            ISA(dw3x3_rows_direct)(a, a->x + (size_t)p * a->h * a->w, scratch, k, b, dst);
            continue;
        }
        if (ISA(dw3x3_s2_direct_ok)(a)) {
            ISA(dw3x3_rows_s2_direct)(a, a->x + (size_t)p * a->h * a->w, scratch, k, b, dst);
            continue;
        }
        ISA(dw3x3_fill)(a, a->x + (size_t)p * a->h * a->w, scratch, rs);
        if (a->sh == 1) ISA(dw3x3_rows_s1)(scratch, rs, k, b, a->lo, a->hi, a->oh, a->ow, dst);
        else ISA(dw3x3_rows_s2)(scratch, rs, k, b, a->lo, a->hi, a->oh, a->ow, dst);
    }
}

#undef DEFINE_DW3
#undef DW3_SMALL_MAX_VECTORS
#undef DW3_PAIR_GROUP
#undef DW3_PAIR_ROW
#undef DW3_GROUP
#undef DW3_TAPS
#undef DW3_NV

#include "depthwise_general.h"

/* Floats at the start of a thread's scratch that must be zero for this geometry's path: the
 * margins of a small plane, the zero row of the in-place path, or the whole padded plane. */
static size_t ISA(depthwise_zeroed)(const depthwise_args *a) {
    if (depthwise_fast_3x3(a) && ISA(dw3x3_small_ok)(a))
        return (size_t)a->h * a->w + 2 * (size_t)a->w + 64;
    if (depthwise_fast_3x3(a) && (ISA(dw3x3_direct_ok)(a) || ISA(dw3x3_s2_direct_ok)(a)))
        return (size_t)a->w + 64;
    return depthwise_scratch_floats(a);
}

static void ISA(depthwise_planes)(const depthwise_args *a, int p0, int p1, float *scratch) {
    if (depthwise_fast_3x3(a)) ISA(dw3x3_planes)(a, p0, p1, scratch);
    else ISA(depthwise_planes_general)(a, p0, p1, scratch);
}

#undef EVEN_LANES
#undef ODD_LANES
