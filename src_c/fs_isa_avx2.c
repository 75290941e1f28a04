/* Kernels for CPUs with AVX2 and FMA (x86-64-v3); chosen at run time. */
#include "fs_internal.h"

#if FS_X86_DISPATCH
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif

#define FS_FMA 1
#define FS_VECTOR_BYTES 32
#define FS_TABLE fs_kernels_avx2
#include "fs_instantiate.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#else
typedef int fs_no_avx2_build; /* an empty translation unit is not valid C */
#endif
