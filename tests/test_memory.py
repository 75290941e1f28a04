"""The memory rule: with ``out=`` given, no temporary the size of the input.

Two measurements on every CPU backend, each after a warm-up call:

- ``tracemalloc`` peak, which sees every NumPy allocation (the API's and the
  NumPy backend's temporaries, staging buffers);
- peak resident memory (``VmHWM``, reset through ``/proc/self/clear_refs``),
  which also sees ``malloc`` in C and Numba's runtime. Free heap memory is
  first handed back to the system (``malloc_trim``) so that a temporary cannot
  hide in pages the process already holds.

Both must stay under 1% of the input plus `SMALL` (per-row arrays, blocks of a
few tens of thousands of elements, the interpreter's own bookkeeping).

Transparent huge pages are switched off for the process while resident memory
is measured: NumPy advises its arrays of 4 MiB and more as huge, the heap keeps
that advice after they are freed, and a small block temporary placed there
later would make a whole 2 MiB page resident. The check counts the pages a
call touches, not the page size the kernel chose for them.
"""

import contextlib
import ctypes
import ctypes.util
import sys
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

import fastsoftmax

SMALL = 1 << 20
ROWS, CLASSES = 2048, 2048  # 16 MiB of float32


def peak_traced(call):
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def _status(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def rss_peak_supported():
    if _libc() is None:
        return False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status("VmHWM")
    except OSError:
        return False
    return True


RSS_PEAK_SUPPORTED = rss_peak_supported()


PR_SET_THP_DISABLE, PR_GET_THP_DISABLE = 41, 42


@contextlib.contextmanager
def small_pages():
    """Transparent huge pages off for new faults of this process, then as before."""
    libc = _libc()
    previous = libc.prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0)
    switched = previous == 0 and libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        if switched:
            libc.prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0)


def peak_rss_growth(call, attempts=3):
    """Smallest growth of peak resident memory over a few calls.

    Resident memory belongs to the whole process, so another thread (a pool
    left by an earlier test, the garbage collector) can add a little to one
    measurement; a temporary made by `call` shows in every one.
    """
    growths = []
    with small_pages():
        for _ in range(attempts):
            _libc().malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident size
            before = _status("VmRSS")
            call()
            growths.append(_status("VmHWM") - before)
    return min(growths)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(41)
    x32 = rng.normal(size=(ROWS, CLASSES)).astype(np.float32)
    x64 = rng.normal(size=(ROWS // 2, CLASSES))
    x16 = x32.astype(np.float16)
    return SimpleNamespace(
        x32=x32,
        x64=x64,
        x16=x16,
        x32_swapped=x32.astype(">f4"),
        x32_class_axis_first=np.ascontiguousarray(x32.T),
        target=rng.integers(0, CLASSES, size=ROWS),
        probabilities=np.full((ROWS, CLASSES), 1.0 / CLASSES, dtype=np.float32),
        weight=np.ones(CLASSES),
        # Outputs are written once beforehand, so their pages are resident.
        out32=np.ones_like(x32),
        out64=np.ones_like(x64),
        out16=np.ones_like(x16),
        per_row=np.ones(ROWS, np.float32),
        scratch=x32.copy(),
    )


# name -> (d, backend) -> (call, bytes of input, bytes the call may allocate for its result)
CASES = {
    "softmax_f32": lambda d, b: (
        lambda: fastsoftmax.softmax(d.x32, out=d.out32, backend=b),
        d.x32.nbytes,
        0,
    ),
    "softmax_f64": lambda d, b: (
        lambda: fastsoftmax.softmax(d.x64, out=d.out64, backend=b),
        d.x64.nbytes,
        0,
    ),
    "log_softmax_tempered": lambda d, b: (
        lambda: fastsoftmax.log_softmax(d.x32, temperature=0.5, out=d.out32, backend=b),
        d.x32.nbytes,
        0,
    ),
    "softmax_in_place": lambda d, b: (
        lambda: fastsoftmax.softmax(d.scratch, out=d.scratch, backend=b),
        d.x32.nbytes,
        0,
    ),
    "softmax_float16_staged": lambda d, b: (
        lambda: fastsoftmax.softmax(d.x16, out=d.out16, backend=b),
        d.x16.nbytes,
        0,
    ),
    "softmax_byteswapped_staged": lambda d, b: (
        lambda: fastsoftmax.softmax(d.x32_swapped, out=d.out32, backend=b),
        d.x32.nbytes,
        0,
    ),
    "softmax_axis0_staged": lambda d, b: (
        lambda: fastsoftmax.softmax(d.x32_class_axis_first, axis=0, out=d.out32.T, backend=b),
        d.x32.nbytes,
        0,
    ),
    "logsumexp": lambda d, b: (
        lambda: fastsoftmax.logsumexp(d.x32, out=d.per_row, backend=b),
        d.x32.nbytes,
        0,
    ),
    "softmax_backward": lambda d, b: (
        lambda: fastsoftmax.softmax_backward(d.x32, d.x32, out=d.out32, backend=b),
        2 * d.x32.nbytes,
        0,
    ),
    "log_softmax_backward": lambda d, b: (
        lambda: fastsoftmax.log_softmax_backward(d.x32, d.x32, out=d.out32, backend=b),
        2 * d.x32.nbytes,
        0,
    ),
    "softmax_topk": lambda d, b: (
        lambda: fastsoftmax.softmax_topk(d.x32, 8, backend=b),
        d.x32.nbytes,
        0,
    ),
    "cross_entropy_loss_only": lambda d, b: (
        lambda: fastsoftmax.cross_entropy(d.x32, d.target, label_smoothing=0.1, backend=b),
        d.x32.nbytes,
        0,
    ),
    "cross_entropy_none": lambda d, b: (
        lambda: fastsoftmax.cross_entropy(d.x32, d.target, reduction="none", backend=b),
        d.x32.nbytes,
        0,
    ),
    "cross_entropy_grad_out": lambda d, b: (
        lambda: fastsoftmax.cross_entropy(
            d.x32, d.target, weight=d.weight, return_grad=True, grad_out=d.out32, backend=b
        ),
        d.x32.nbytes,
        0,
    ),
    "cross_entropy_grad_in_place": lambda d, b: (
        lambda: fastsoftmax.cross_entropy(
            d.scratch, d.target, return_grad=True, grad_out=d.scratch, backend=b
        ),
        d.x32.nbytes,
        0,
    ),
    "cross_entropy_probabilities_grad_out": lambda d, b: (
        lambda: fastsoftmax.cross_entropy(
            d.x32, d.probabilities, return_grad=True, grad_out=d.out32, backend=b
        ),
        2 * d.x32.nbytes,
        0,
    ),
    # Without grad_out the gradient itself is the one large allocation.
    "cross_entropy_grad": lambda d, b: (
        lambda: fastsoftmax.cross_entropy(
            d.x32, d.target, z_loss=1e-4, return_grad=True, backend=b
        ),
        d.x32.nbytes,
        d.x32.nbytes,
    ),
}


def allowed(input_bytes, result_bytes):
    return result_bytes + 0.01 * input_bytes + SMALL


@pytest.mark.parametrize("case", CASES)
def test_no_input_sized_temporaries(host_backend, data, case):
    call, input_bytes, result_bytes = CASES[case](data, host_backend)
    call()  # compile, fill caches
    limit = allowed(input_bytes, result_bytes)
    traced = peak_traced(call)
    assert (
        traced <= limit
    ), f"{case}: {traced / 2**20:.2f} MiB traced for {input_bytes / 2**20:.0f} MiB of input"
    if RSS_PEAK_SUPPORTED:
        growth = peak_rss_growth(call)
        message = f"{case}: resident memory grew {growth / 2**20:.2f} MiB"
        assert growth <= limit, f"{message} for {input_bytes / 2**20:.0f} MiB of input"


def test_resident_memory_is_measured_on_linux():
    # The second measurement must not silently switch off where it can run.
    if sys.platform.startswith("linux") and _libc() is not None:
        assert RSS_PEAK_SUPPORTED


def test_the_measurements_see_a_temporary():
    # A call that makes an input-sized temporary must fail both checks.
    x = np.ones((ROWS, CLASSES), np.float32)

    def wasteful():
        return float(np.exp(x).sum())

    wasteful()
    assert peak_traced(wasteful) > allowed(x.nbytes, 0)
    if RSS_PEAK_SUPPORTED:
        assert peak_rss_growth(wasteful) > allowed(x.nbytes, 0)
