/* Kernels for CPUs with AVX-512 F, DQ, BW and VL (x86-64-v4); chosen at run time. */
#include "fs_internal.h"

#if FS_X86_DISPATCH
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
#endif

#define FS_FMA 1
#define FS_VECTOR_BYTES 64
#define FS_TABLE fs_kernels_avx512
#include "fs_instantiate.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
typedef int fs_no_avx512_build; /* an empty translation unit is not valid C */
#endif
