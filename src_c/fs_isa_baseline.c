/* Kernels for any CPU the compiler targets by default (SSE2 on x86-64). */
#include "fs_internal.h"

#define FS_FMA 0
#define FS_VECTOR_BYTES 16
#define FS_TABLE fs_kernels_baseline
#include "fs_instantiate.h"
