/* Vector types and helpers shared by the kernel headers, included once per instruction set.
 *
 * The includer defines VEC_FLOATS (8 for AVX2, 4 for the portable copy) and ISA(name); GCC vector
 * extensions lower to AVX2/FMA or to baseline SSE2 (scalar code elsewhere). vec_end.h undoes the
 * macros after the last kernel header.
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

/* clip(v, lo, hi). On x86 as max then min with the bound first (vmaxps/vminps return their
 * second operand when one is NaN, so NaN stays NaN, as in clip1); elsewhere with lane masks. */
static inline V8F ISA(clip8)(V8F v, float lo, float hi) {
    const V8F lov = SPLAT(lo), hiv = SPLAT(hi);
#if defined(__x86_64__) && VEC_FLOATS == 8
    return (V8F)_mm256_min_ps((__m256)hiv, _mm256_max_ps((__m256)lov, (__m256)v));
#elif defined(__x86_64__) && VEC_FLOATS == 4
    return (V8F)_mm_min_ps((__m128)hiv, _mm_max_ps((__m128)lov, (__m128)v));
#else
    V8I below = v < lov, above = v > hiv;
    V8I bits = ((V8I)v & ~below) | ((V8I)lov & below);
    bits = (bits & ~above) | ((V8I)hiv & above);
    return (V8F)bits;
#endif
}

static inline float ISA(clip1)(float v, float lo, float hi) {
    return v < lo ? lo : (v > hi ? hi : v);
}

