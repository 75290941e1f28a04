"""What every benchmark shares: the parameter lists, cached data, bytes and timing.

The parameter lists are fixed: they never depend on what is installed, so result
files from different machines and commits line up. An implementation that cannot
run here is skipped by raising NotImplementedError in ``setup``.
"""

import functools
import os
import statistics
import time

import numpy as np

# CPU threads for every implementation that can use more than one (the C and
# Numba backends, PyTorch); NumPy and SciPy run on one thread whatever it says.
# One value for us and the peers keeps the comparison fair; override it with the
# environment variable to measure scaling.
THREADS_VARIABLE = "FASTSOFTMAX_BENCH_THREADS"
DEFAULT_THREADS = 2

# rows x classes: from many short rows to few very long ones, about 10 to 33
# million elements each, so every input is far larger than the caches.
SHAPES = ["1048576x10", "65536x128", "16384x1000", "1024x32000", "64x256000"]
DTYPES = ["float32", "float64"]
BACKENDS = ["numpy", "c", "numba", "numba-parallel", "cuda"]
PEERS = ["numpy-naive", "scipy", "torch"]
IMPLEMENTATIONS = BACKENDS + PEERS
# "new": the result is allocated by the call; "out": written into a
# preallocated array (skipped where an implementation has no such argument).
OUTPUTS = ["new", "out"]

TOPK = 5
SEED = 1234
# Seconds one benchmark case may take: the slowest peers need a few seconds a
# call at the largest shapes, and a busy machine stretches that.
TIMEOUT = 300


def threads():
    """The thread count the benchmarks run with."""
    return int(os.environ.get(THREADS_VARIABLE, DEFAULT_THREADS))


def shape_of(label):
    """``"1024x32000"`` -> ``(1024, 32000)``."""
    rows, classes = label.split("x")
    return int(rows), int(classes)


def _frozen(array):
    """`array` made read-only, so a benchmark that writes its input fails loudly."""
    array.flags.writeable = False
    return array


# Cached data makers: asv re-runs ``setup`` before every sample, and the table
# script visits many cases in one process; each maker builds an array once and
# keeps the last two, bounding memory at the largest shapes.


@functools.lru_cache(maxsize=2)
def logits(shape, dtype):
    """Standard normal logits, seeded."""
    rng = np.random.default_rng(SEED)
    return _frozen(rng.standard_normal(shape, dtype=np.dtype(dtype)))


# A tenth of the classes of masked logits are -inf (masked out), scattered.
MASKED_SHARE = 0.1


@functools.lru_cache(maxsize=2)
def masked_logits(shape, dtype):
    """`logits` with a seeded MASKED_SHARE of them set to -inf."""
    rng = np.random.default_rng(SEED + 3)
    x = np.array(logits(shape, dtype))
    x[rng.random(shape) < MASKED_SHARE] = -np.inf
    return _frozen(x)


@functools.lru_cache(maxsize=2)
def upstream_grad(shape, dtype):
    """Gradient arriving at a softmax output, seeded independently of the logits."""
    rng = np.random.default_rng(SEED + 1)
    return _frozen(rng.standard_normal(shape, dtype=np.dtype(dtype)))


@functools.lru_cache(maxsize=2)
def probabilities(shape, dtype):
    """Softmax of `logits`, the ``y`` a backward pass receives."""
    y = np.array(logits(shape, dtype))
    y -= y.max(axis=-1, keepdims=True)
    np.exp(y, out=y)
    y /= y.sum(axis=-1, keepdims=True)
    return _frozen(y)


@functools.lru_cache(maxsize=2)
def class_targets(rows, classes):
    """One int64 class index per row, seeded."""
    rng = np.random.default_rng(SEED + 2)
    return _frozen(rng.integers(0, classes, size=rows, dtype=np.int64))


@functools.lru_cache(maxsize=2)
def scratch(shape, dtype):
    """A preallocated output, written once so its pages are mapped before timing."""
    return np.zeros(shape, dtype=np.dtype(dtype))


def bytes_moved(op, shape, dtype):
    """Bytes an operation must read once and write once: the GB/s numerator.

    Results that are reduced to a scalar (the cross-entropy loss) count as
    nothing; class indices count 8 bytes each.
    """
    rows, classes = shape
    item = np.dtype(dtype).itemsize
    matrix = rows * classes * item
    if op in ("softmax", "log_softmax"):
        return 2 * matrix
    if op == "logsumexp":
        return matrix + rows * item
    if op == "softmax_backward":
        return 3 * matrix
    if op == "cross_entropy":
        return 2 * matrix + rows * 8
    if op == "softmax_topk":
        return matrix + rows * TOPK * (item + 8)
    raise ValueError(f"unknown operation {op!r}")


def median_seconds(call, repeat):
    """Median wall time of `repeat` calls of `call`."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gigabytes_per_second(op, shape, dtype, seconds):
    """Effective bandwidth: `bytes_moved` over the time of one call."""
    return bytes_moved(op, shape, dtype) / seconds / 1e9
