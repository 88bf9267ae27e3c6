/* 3x3 depthwise, stride 2, one column of padding on the left, w = 2 * ow (MobileNet's stride-2
 * layers): no padded copy. Output column j of row i is the stride-1 output at column 2j of input
 * row 2i - pt + 1, so each output vector is two stride-1 vectors (the direct path's, at columns
 * 2j and 2j + VEC_FLOATS) with their even lanes kept; rows shorter than 2 VEC_FLOATS take the
 * row's two end vectors and pick their even columns one by one. Twice the multiply-adds of
 * stride 2, but without the even/odd column pass, which took ~40% of the time at 112x112, and
 * faster per output than its taps (bench/results/strips_epyc_2cores.md: 96@112 8.2 -> 11.5,
 * 16@56 6.4 -> 9.8, 32@28 4.3 -> 7.5, 96@14 1.5 -> 2.4 GMAC/s counted at stride 2).
 * Included by depthwise_impl.h inside the direct path's section (its macros are in scope). */

static int ISA(dw3x3_s2_direct_ok)(const depthwise_args *a) {
    return a->sh == 2 && a->sw == 2 && a->pl == 1 && a->w == 2 * a->ow && a->w > VEC_FLOATS;
}

/* The stride-1 vector at column ``at`` of rows r0..r2 (edge -1 first, +1 last, 0 inside), one
 * chain of three FMAs per row (a chain of nine left the loop waiting on FMA latency). */
#define DW3_S1_ROW(sum, row, ta, tb, tc, start, edge)                                            \
    do {                                                                                         \
        V8F acc = start;                                                                         \
        DW3_DIRECT_ROW(row, ta, tb, tc, edge);                                                   \
        sum = acc;                                                                               \
    } while (0)
#define DW3_S1_VECTOR(out, at, edge)                                                             \
    do {                                                                                         \
        const int pos = (at);                                                                    \
        V8F top, middle, bottom;                                                                 \
        DW3_S1_ROW(top, r0, t0, t1, t2, bias, edge);                                             \
        DW3_S1_ROW(middle, r1, t3, t4, t5, zero, edge);                                          \
        DW3_S1_ROW(bottom, r2, t6, t7, t8, zero, edge);                                          \
        out = top + (middle + bottom);                                                           \
    } while (0)

static void ISA(dw3x3_rows_s2_direct)(const depthwise_args *a, const float *src,
                                      const float *zeros, const float *k, float b, float *dst) {
    DW3_DIRECT_LOCALS(a, k, b);
    for (int i = 0; i < a->oh; ++i) {
        DW3_DIRECT_INPUT_ROWS(2 * i - pt);
        float *d = dst + (size_t)i * ow;
        /* Output vectors at 0, VEC_FLOATS, ... and a last one ending at ow (it may recompute a
         * few outputs, with the same values): the stride-1 vectors at 2j and 2j + VEC_FLOATS.
         * Only the first output vector's first and the last one's second touch the row's ends;
         * the loop between has no edge cases (GCC splits FMAs around branches otherwise). */
        V8F first, second;
        DW3_S1_VECTOR(first, 0, -1);
        if (ow < VEC_FLOATS) { /* 7x7 outputs: one row of stride 1 is the row's two end vectors */
            float lanes[2 * VEC_FLOATS];
            DW3_S1_VECTOR(second, w - VEC_FLOATS, 1);
            *(V8FU *)lanes = first;
            *(V8FU *)(lanes + w - VEC_FLOATS) = second; /* the same values where they overlap */
            for (int j = 0; j < ow; ++j) d[j] = ISA(clip1)(lanes[2 * j], lo, hi);
            continue;
        }
        if (ow == VEC_FLOATS) {
            DW3_S1_VECTOR(second, VEC_FLOATS, 1);
            *(V8FU *)d = ISA(clip8)(ISA(half_lanes)(first, second, 0), lo, hi);
            continue;
        }
        DW3_S1_VECTOR(second, VEC_FLOATS, 0);
        *(V8FU *)d = ISA(clip8)(ISA(half_lanes)(first, second, 0), lo, hi);
        for (int j = VEC_FLOATS; j < ow - VEC_FLOATS; j += VEC_FLOATS) {
            DW3_S1_VECTOR(first, 2 * j, 0);
            DW3_S1_VECTOR(second, 2 * j + VEC_FLOATS, 0);
            *(V8FU *)(d + j) = ISA(clip8)(ISA(half_lanes)(first, second, 0), lo, hi);
        }
        const int last = ow - VEC_FLOATS;
        DW3_S1_VECTOR(first, 2 * last, 0);
        DW3_S1_VECTOR(second, 2 * last + VEC_FLOATS, 1);
        *(V8FU *)(d + last) = ISA(clip8)(ISA(half_lanes)(first, second, 0), lo, hi);
    }
}

#undef DW3_S1_VECTOR
#undef DW3_S1_ROW
