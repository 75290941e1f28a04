"""The ``c`` backend: C99 kernels compiled by cffi when the package is installed.

The kernels (``src_c/``) are compiled once per instruction set and choose, at
run time, the best one the CPU has: AVX-512, AVX2 with FMA, or the compiler's
portable baseline. This module is the only one that touches the generated
``ffi`` and ``lib``: each wrapper below turns the protocol's NumPy views into
pointers and element strides and calls a kernel, which runs without the GIL.

Threads
-------
Rows are split into contiguous ranges, one per thread, and the ranges run at
the same time as GIL-free kernel calls: the calling thread takes the first
range and a small Python thread pool the others. This was chosen over OpenMP
and over a thread pool written in C because:

- GNU OpenMP (libgomp) is not fork-safe (a forked child, such as a
  multiprocessing or Dask worker, hangs in its first parallel region when the
  parent had used one), and its idle threads spin, taking CPU from other work
  between calls;
- a Python pool reads ``get_num_threads()`` on every call, needs no compiler
  support for threads, keeps the C code free of threading and global state,
  and is simple to make fork-safe: a forked child forgets the pool and builds
  its own on first use;
- its cost, a wake-up of a pool thread per call, matters only for small
  inputs, and those stay on the calling thread (fewer than
  `MIN_ELEMENTS_PER_THREAD` elements per thread). On a virtual machine the
  wake-up is slower than on bare metal (2-core KVM guest: a pool round trip
  of 21 us between back-to-back calls, 100 us after 10 ms idle), and calls
  of 1-4 MB gain little from a second thread there: float32 softmax over 512
  x 1024, 180 us on one thread, 155 us on two (numba-parallel, whose OpenMP
  threads spin between calls, 109 us); over 4096 x 1024 the two backends are
  level (783 and 830 us).

Each range is told the size of the whole output it is part of: a kernel
streams its stores past the caches for large outputs, and that choice must be
the same whether a call runs on two threads or on sixteen (a range of a 64 MB
output is 4 MB there).

Calls from many Python threads at once are safe: the kernels are reentrant,
and a caller whose ranges are still queued behind other calls runs them itself
rather than waiting.
"""

import concurrent.futures
import contextlib
import functools
import os
import threading

import numpy as np

from .._threads import get_num_threads
from .._version import __version__
from . import WORKSPACE_SHARE

try:
    from .._fastsoftmax_c import ffi, lib
except ImportError as exc:  # built without a C compiler, or a broken build
    ffi = lib = None
    _UNAVAILABLE = (
        f"the C extension fastsoftmax._fastsoftmax_c could not be imported ({exc}); "
        "reinstall fastsoftmax where a C compiler is available"
    )

# Below this many elements per thread a call stays on one thread: a kernel needs
# 60-150 us for 2**17 elements, ten times the pool's round trip (measured).
MIN_ELEMENTS_PER_THREAD = 1 << 17

ISA_LEVELS = ("baseline", "avx2", "avx512")

_C_TYPES = {
    np.dtype(np.float32): ("float *", "f32"),
    np.dtype(np.float64): ("double *", "f64"),
    np.dtype(np.int64): ("int64_t *", None),
}


def availability():
    if lib is None:
        return False, _UNAVAILABLE, None
    return True, "", f"{__version__} ({isa()})"


def isa():
    """Name of the instruction set the kernels use now."""
    return ISA_LEVELS[lib.fs_isa_level()]


def supported_isa():
    """Name of the best instruction set this CPU and build can run."""
    return ISA_LEVELS[lib.fs_isa_supported()]


@contextlib.contextmanager
def limit_isa(name):
    """Run the kernels at most at instruction set `name` inside the block (for tests).

    The limit is process-wide: do not run kernels from other threads meanwhile.
    """
    previous = lib.fs_isa_level()
    if previous == lib.fs_isa_supported():
        previous = len(ISA_LEVELS) - 1  # no limit was set
    lib.fs_isa_limit(ISA_LEVELS.index(name))
    try:
        yield isa()
    finally:
        lib.fs_isa_limit(previous)


# ---------------------------------------------------------------------------
# Pointers and the row-parallel runner
# ---------------------------------------------------------------------------


class _Rows:
    """A ``(rows, C)`` or ``(rows,)`` array seen as a C pointer moved row by row."""

    __slots__ = ("pointer", "stride")

    def __init__(self, array):
        c_type = _C_TYPES[array.dtype][0]
        if array.flags.c_contiguous:  # the fast way to an address
            self.pointer = ffi.cast(c_type, ffi.from_buffer(array))
        else:
            self.pointer = ffi.cast(c_type, array.ctypes.data)
        self.stride = array.strides[0] // array.itemsize if array.shape[0] > 1 else 0

    def at(self, row):
        return self.pointer + row * self.stride


@functools.cache
def _function(op, dtype):
    return getattr(lib, f"fs_{op}_{_C_TYPES[dtype][1]}")


_pool = None
_pool_size = 0
_pool_lock = threading.Lock()
_fork_hook_registered = False


def _forget_pool():
    """In a forked child: the parent's pool threads do not exist here."""
    global _pool, _pool_size, _pool_lock
    _pool, _pool_size, _pool_lock = None, 0, threading.Lock()


def _executor(workers):
    """The shared pool, replaced by a larger one when a call needs more threads.

    A replaced pool is not shut down: a concurrent call may still submit to
    it. Its threads end once the last call holding it lets it go.
    """
    global _pool, _pool_size, _fork_hook_registered
    with _pool_lock:
        if _pool is None or _pool_size < workers:
            if not _fork_hook_registered and hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_forget_pool)
                _fork_hook_registered = True
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="fastsoftmax-c"
            )
            _pool_size = workers
        return _pool


def thread_count(n_rows, n_elements):
    """How many threads a call over `n_rows` rows of `n_elements` in all uses."""
    by_size = n_elements // MIN_ELEMENTS_PER_THREAD
    if by_size <= 1 or n_rows <= 1:
        return 1  # without asking the system for its CPUs, a microsecond a time
    return max(1, min(get_num_threads(), n_rows, by_size))


def _run(part, n_rows, n_elements):
    """Call ``part(start, stop)`` over row ranges covering ``range(n_rows)``, in parallel."""
    threads = thread_count(n_rows, n_elements)
    if threads == 1:
        part(0, n_rows)
        return
    bounds = [n_rows * i // threads for i in range(threads + 1)]
    pool = _executor(threads - 1)
    queued = [
        (pool.submit(part, bounds[i], bounds[i + 1]), bounds[i], bounds[i + 1])
        for i in range(1, threads)
    ]
    part(bounds[0], bounds[1])
    for future, start, stop in queued:
        if future.cancel():  # not started: the pool is busy with other calls
            part(start, stop)
        else:
            future.result()


# ---------------------------------------------------------------------------
# Kernels (protocol of fastsoftmax._backends)
# ---------------------------------------------------------------------------


def softmax(x, out, inv_temperature):
    fn = _function("softmax", x.dtype)
    src, dst = _Rows(x), _Rows(out)
    n_rows, n_cols = x.shape
    # every range is told the size of the whole output, so that they all
    # choose to stream their stores (or not) as one call over it would
    output_bytes = out.nbytes
    threads = thread_count(n_rows, x.size)
    # one workspace per thread, lent where they all fit the memory rule
    size = _function("softmax_work", x.dtype)(n_cols, output_bytes)
    lend = 0 < threads * size <= x.size * WORKSPACE_SHARE

    def part(start, stop):
        work = np.empty(size, x.dtype) if lend else None  # held until the call returns
        pointer = ffi.cast(_C_TYPES[x.dtype][0], ffi.from_buffer(work)) if lend else ffi.NULL
        fn(src.at(start), src.stride, dst.at(start), dst.stride, stop - start, n_cols,
           inv_temperature, output_bytes, pointer)

    _run(part, n_rows, x.size)


def log_softmax(x, out, inv_temperature):
    fn = _function("log_softmax", x.dtype)
    src, dst = _Rows(x), _Rows(out)
    n_rows, n_cols = x.shape
    output_bytes = out.nbytes  # the whole output's, as in softmax

    def part(start, stop):
        fn(src.at(start), src.stride, dst.at(start), dst.stride, stop - start, n_cols,
           inv_temperature, output_bytes)

    _run(part, n_rows, x.size)


def logsumexp(x, out):
    fn = _function("logsumexp", x.dtype)
    src, dst = _Rows(x), _Rows(out)
    n_rows, n_cols = x.shape

    def part(start, stop):
        fn(src.at(start), src.stride, dst.at(start), stop - start, n_cols)

    _run(part, n_rows, x.size)


def _backward(op, grad, saved, out):
    fn = _function(op, grad.dtype)
    g, s, dst = _Rows(grad), _Rows(saved), _Rows(out)
    n_rows, n_cols = grad.shape

    def part(start, stop):
        rows = stop - start
        fn(g.at(start), g.stride, s.at(start), s.stride, dst.at(start), dst.stride, rows, n_cols)

    _run(part, n_rows, grad.size)


def softmax_backward(grad, y, out):
    _backward("softmax_backward", grad, y, out)


def log_softmax_backward(grad, logp, out):
    _backward("log_softmax_backward", grad, logp, out)


def cross_entropy(
    logits, target, weight, loss_out, grad_out, ignore_index, label_smoothing, z_loss, grad_scale
):
    options = ffi.new(
        "fs_ce_options *",
        {
            "ignore_index": ignore_index,
            "label_smoothing": label_smoothing,
            "z_loss": z_loss,
            "grad_scale": grad_scale,
            # the whole gradient's, as in softmax
            "grad_bytes": 0 if grad_out is None else grad_out.nbytes,
        },
    )
    z, loss = _Rows(logits), _Rows(loss_out)
    t = _Rows(target)
    w = ffi.NULL if weight is None else _Rows(weight).pointer
    g = None if grad_out is None else _Rows(grad_out)
    n_rows, n_cols = logits.shape
    probabilities = target.ndim == 2
    fn = _function("cross_entropy_probs" if probabilities else "cross_entropy", logits.dtype)

    def part(start, stop):
        grad_args = (ffi.NULL, 0) if g is None else (g.at(start), g.stride)
        target_args = (t.at(start), t.stride) if probabilities else (t.at(start),)
        fn(
            z.at(start),
            z.stride,
            *target_args,
            w,
            loss.at(start),
            *grad_args,
            stop - start,
            n_cols,
            options,
        )

    _run(part, n_rows, logits.size)


def softmax_topk(x, inv_temperature, probs_out, index_out):
    fn = _function("softmax_topk", x.dtype)
    src, probs, index = _Rows(x), _Rows(probs_out), _Rows(index_out)
    n_rows, n_cols = x.shape
    k = probs_out.shape[1]

    def part(start, stop):
        fn(
            src.at(start),
            src.stride,
            inv_temperature,
            probs.at(start),
            probs.stride,
            index.at(start),
            index.stride,
            stop - start,
            n_cols,
            k,
        )

    _run(part, n_rows, x.size)


# ---------------------------------------------------------------------------
# The kernels' own exp and log, element-wise (for accuracy tests)
# ---------------------------------------------------------------------------


def _elementwise(op, x):
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    c_type, suffix = _C_TYPES[x.dtype]
    getattr(lib, f"fs_{op}_{suffix}")(
        ffi.cast(c_type, x.ctypes.data), ffi.cast(c_type, out.ctypes.data), x.size
    )
    return out


def vector_exp(x):
    """exp of a float32 or float64 array with the kernels' vectorized exp."""
    return _elementwise("exp", x)


def vector_exp_nonpositive(x):
    """The exp the kernels apply to ``x - max(x)``: exact for ``x <= 0`` only."""
    return _elementwise("exp_nonpositive", x)


def vector_exp_short_rows(x):
    """The cheaper exp of the register kernels (float32 rows of 8 to 16 classes), ``x <= 0``."""
    return _elementwise("exp_short_rows", x)


def vector_log(x):
    """log of a float32 array with the kernels' vectorized log."""
    return _elementwise("log", x)
