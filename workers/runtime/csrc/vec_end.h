/* Undefines vec_impl.h's macros after the kernel headers of one instruction set. */
#undef SPLAT
#undef V8F
#undef V8FU
#undef V8I
