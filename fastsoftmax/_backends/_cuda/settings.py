"""Launch sizes of the CUDA kernels.

Host code reads these module attributes on every call and kernels are built per
value, so a test can patch them small (the simulator runs one Python thread per
CUDA thread) and exercise the multi-block and multi-pass paths on tiny data.
All thread counts are powers of two.
"""

from numba import cuda

# Rows of at most ROW_LANES * LANE_VALUES classes take a group of at most
# ROW_LANES threads (one warp) and keep the row in registers.
ROW_LANES = 32
LANE_VALUES = 32
# Threads per block for the short-row kernels (several rows per block).
ROWS_BLOCK = 256

# Longer rows take one block of at most ROW_BLOCK_MAX threads each; every
# thread keeps ROW_CACHE_BYTES of the row in registers and streams the rest.
ROW_BLOCK_MAX = 1024
ROW_CACHE_BYTES = 128

# softmax_topk: threads per row, and candidates each thread keeps at hand.
TOPK_BLOCK = 128
TOPK_LOCAL = 8

# Threads per block and values per thread of the plain sum reductions.
SUM_BLOCK = 256
SUM_VALUES = 8

# None picks warp shuffles on a GPU and shared memory in the simulator (which
# has no shuffles); True or False forces one path.
USE_SHUFFLE = None

if cuda.config.ENABLE_CUDASIM:
    # The simulator runs one Python thread per CUDA thread and blocks one after
    # another: small blocks keep it fast, and rows of a few dozen classes
    # already take the streaming path.
    ROW_LANES = 8
    LANE_VALUES = 4
    ROWS_BLOCK = 16
    ROW_BLOCK_MAX = 16
    ROW_CACHE_BYTES = 32
    TOPK_BLOCK = 8
    TOPK_LOCAL = 4
    SUM_BLOCK = 16
    SUM_VALUES = 8
