"""What differs between a real GPU and the CUDA simulator, in one place.

The simulator (``NUMBA_ENABLE_CUDASIM=1``) runs every CUDA thread as a Python
thread: it has no warp shuffles, accepts no compile options beyond the basic
ones, and runs one kernel at a time per process.
"""

import sys
import threading
import warnings

from numba import cuda

from . import settings

SIMULATOR = bool(cuda.config.ENABLE_CUDASIM)
FULL_WARP = 32

# The simulator keeps one global kernel context and stores the launch
# configuration on the kernel object itself, so concurrent launches from
# several Python threads must take turns there.
_simulator_lock = threading.Lock()
# Its block manager polls the thread of every CUDA thread while they wait at
# barriers; with the default 5 ms interval between GIL hand-overs, a barrier
# costs milliseconds. A short interval while a kernel runs makes tests ~10x faster.
_SIMULATOR_SWITCH_INTERVAL = 2e-5


def use_shuffle():
    """True when reductions should use warp shuffles (read on every call)."""
    if settings.USE_SHUFFLE is None:
        return not SIMULATOR
    return bool(settings.USE_SHUFFLE)


def kernel(max_threads):
    """``cuda.jit`` for a kernel launched with at most `max_threads` per block."""
    if SIMULATOR:
        return cuda.jit
    return cuda.jit(launch_bounds=max_threads)


def device(function):
    """``cuda.jit`` for an inlined device function."""
    if SIMULATOR:
        return cuda.jit(device=True)(function)
    return cuda.jit(device=True, forceinline=True)(function)


def launch(compiled, blocks, threads, shared_bytes, *args):
    """Launch `compiled` on `blocks` blocks of `threads` threads with dynamic shared memory."""
    if blocks == 0:
        return
    if SIMULATOR:
        # The simulator computes with NumPy scalars, which warn where a GPU
        # silently follows IEEE rules (inf - inf, float32 overflow to -inf).
        with _simulator_lock, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            interval = sys.getswitchinterval()
            sys.setswitchinterval(_SIMULATOR_SWITCH_INTERVAL)
            try:
                compiled[blocks, threads, 0, shared_bytes](*args)
            finally:
                sys.setswitchinterval(interval)
    else:
        compiled[blocks, threads, 0, shared_bytes](*args)
