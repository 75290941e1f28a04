"""Compile options shared by every Numba kernel of the package."""

import numba

from . import cache

# Fast-math flags: contraction gives fused multiply-adds; signed zeros and
# reciprocals do not matter here. ``nnan`` and ``ninf`` are left out on purpose:
# rows holding NaN or infinities must give the contract's results, so the
# compiler may not assume they are absent. Nor is ``reassoc`` in this set: the
# kernels rely on the order of their operations, e.g. ``(m - z) + log(s)`` or
# the range reduction of ``exp``, which reassociation may rewrite.
KERNEL_FASTMATH = frozenset({"nsz", "arcp", "contract"})

# Sums alone may be reassociated: that is what lets LLVM split them across
# vector lanes. Only the `reduction` helpers, whose one job is a sum, get it.
REDUCTION_FASTMATH = KERNEL_FASTMATH | {"reassoc"}

# nogil: the kernels release the GIL. error_model="numpy": a float division by
# zero gives inf or NaN instead of raising, and no checks sit in the loops.
_OPTIONS = {"nogil": True, "error_model": "numpy"}


def _compile(function, **options):
    """A lazily compiling, disk-cached Numba dispatcher for `function`."""
    return cache.enable(numba.njit(**_OPTIONS, **options)(function))


def kernel(function):
    """Compile `function` as a serial kernel (an entry point)."""
    return _compile(function, fastmath=set(KERNEL_FASTMATH))


def helper(function):
    """Compile `function` as a building block that LLVM always inlines.

    Inlining lets LLVM see that the scratch arrays and rows handed from one
    loop to the next are the same, and saves a call (with every array passed
    field by field) per row or per block.
    """
    return _compile(function, fastmath=set(KERNEL_FASTMATH), forceinline=True)


def reduction(function):
    """Like `helper`, for a function that sums: its additions may be reassociated."""
    return _compile(function, fastmath=set(REDUCTION_FASTMATH), forceinline=True)


def parallel_kernel(function):
    """Compile `function` as a ``parallel=True`` kernel (``prange`` loops)."""
    return _compile(function, fastmath=set(KERNEL_FASTMATH), parallel=True)
