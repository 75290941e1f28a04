"""The cuda backend: every kernel path, device arrays, device-side validation.

Runs in the ``NUMBA_ENABLE_CUDASIM=1 pytest -m cuda`` invocation (the variable
must be set before Numba is imported) or on a machine with a GPU. The
``tiny_blocks`` fixture patches the launch sizes so that a few classes already
take every path: the short-row path (a group of threads per row), the
block-per-row path with the row in registers, and the streaming path that
reads the rest of the row twice; several rows share a block and a reduction
spans several levels.
"""

import os
import pathlib
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastsoftmax
import reference
from strategies import assert_close_scaled, assert_matches_reference

pytestmark = pytest.mark.cuda

if not fastsoftmax.backends()["cuda"].available:
    pytest.skip(
        "the cuda backend needs a GPU, or NUMBA_ENABLE_CUDASIM=1 set before Numba is imported",
        allow_module_level=True,
    )

from numba import cuda  # noqa: E402  (only importable once the backend is)
from numba.cuda import types  # noqa: E402
from numba.cuda.np import numpy_support  # noqa: E402

from fastsoftmax import _host  # noqa: E402
from fastsoftmax._backends import cuda_backend  # noqa: E402
from fastsoftmax._backends._cuda import arrays, plan, runtime, settings, sums  # noqa: E402

TINY = {
    "ROW_LANES": 2,
    "LANE_VALUES": 2,
    "ROWS_BLOCK": 4,
    "ROW_BLOCK_MAX": 4,
    "ROW_CACHE_BYTES": 8,
    "TOPK_BLOCK": 4,
    "TOPK_LOCAL": 2,
    "SUM_BLOCK": 4,
    "SUM_VALUES": 2,
}
# With TINY: up to 4 classes take the short path (2 lanes x 2 values); float32
# rows up to 8 classes stay in registers (4 threads x 2 values), longer ones
# stream; float64 keeps one value per thread, so it streams from 5 classes.
WIDTHS = [1, 3, 4, 7, 8, 9, 23]
DTYPES = [np.float32, np.float64]


@pytest.fixture
def tiny_blocks(monkeypatch):
    for name, value in TINY.items():
        monkeypatch.setattr(settings, name, value)


def special_rows(n_classes, dtype, seed=0):
    """Random rows plus one row of every kind in the numerics table."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=4.0, size=(9, n_classes))
    x[1, 0] = -np.inf  # some -inf: exactly 0 / -inf there
    x[2, :] = -np.inf  # only -inf: NaN row, logsumexp -inf
    x[3, -1] = np.inf  # +inf: NaN row, logsumexp +inf
    x[4, n_classes // 2] = np.nan  # NaN: NaN row
    x[5] += 1e30 if dtype == np.float64 else 3e38  # huge offsets never overflow
    x[6] = np.linspace(-1e37, 1e37, n_classes) if n_classes > 1 else 1.0
    x[7] = 2.5  # equal logits
    return x.astype(dtype)


def device_copy(host):
    """A device array holding `host`."""
    return cuda.to_device(np.ascontiguousarray(host))


def device_window(host, transform):
    """A strided device view: `transform` applied to the layout of a copy of `host`."""
    base = arrays.view_of(device_copy(host))
    return base.with_address(transform(base.address)).kernel_arg()


def to_host(device_array):
    return device_array.copy_to_host()


# ---------------------------------------------------------------------------
# Every path, through the public API with host arrays


def test_tiny_settings_reach_every_path(tiny_blocks):
    kinds = {
        width: (p.lanes <= TINY["ROW_LANES"] and p.block > p.lanes, p.stream)
        for width in WIDTHS
        for p in [plan.row_plan(width, 4)]
    }
    assert kinds[3] == (True, False)  # short rows, several per block
    assert kinds[7] == (False, False)  # a block per row, row in registers
    assert kinds[23] == (False, True)  # a block per row, streaming
    assert plan.row_plan(7, 8).stream  # float64 streams sooner


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", WIDTHS)
def test_forward_ops_on_every_path(tiny_blocks, width, dtype):
    x = special_rows(width, dtype, seed=width)
    for temperature in (1.0, 0.3):
        got = fastsoftmax.softmax(x, temperature=temperature, backend="cuda")
        assert_matches_reference(got, reference.softmax(x, temperature), "probability")
        got = fastsoftmax.log_softmax(x, temperature=temperature, backend="cuda")
        assert_matches_reference(got, reference.log_softmax(x, temperature), "log")
    assert_matches_reference(fastsoftmax.logsumexp(x, backend="cuda"), reference.logsumexp(x), "log")


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_long_float32_rows_meet_the_bound(tiny_blocks, op):
    rng = np.random.default_rng(1)
    x = (rng.normal(scale=3.0, size=(2, 3000))).astype(np.float32)
    got = getattr(fastsoftmax, op)(x, backend="cuda")
    kind = "probability" if op == "softmax" else "log"
    assert_matches_reference(got, getattr(reference, op)(x), kind)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", WIDTHS)
def test_backward_ops_on_every_path(tiny_blocks, width, dtype):
    rng = np.random.default_rng(width)
    logits = rng.normal(size=(5, width))
    grad = rng.normal(size=(5, width)).astype(dtype)
    y = reference.softmax(logits).astype(dtype)
    logp = reference.log_softmax(logits).astype(dtype)
    scale = np.abs(grad).sum(axis=-1, keepdims=True)
    got = fastsoftmax.softmax_backward(grad, y, backend="cuda")
    assert_close_scaled(got, reference.softmax_backward(grad, y), scale, dtype)
    got = fastsoftmax.log_softmax_backward(grad, logp, backend="cuda")
    assert_close_scaled(got, reference.log_softmax_backward(grad, logp), scale, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", WIDTHS)
def test_cross_entropy_on_every_path(tiny_blocks, width, dtype):
    rng = np.random.default_rng(width)
    logits = rng.normal(scale=3.0, size=(7, width)).astype(dtype)
    logits[6] += dtype(1e4)  # a common offset must not cost accuracy
    target = rng.integers(0, width, size=7)
    target[2] = -1
    weight = rng.uniform(0.2, 2.0, size=width)
    probabilities = reference.softmax(rng.normal(size=(7, width)))
    cases = [
        (target, dict(ignore_index=-1)),
        (target, dict(ignore_index=-1, weight=weight, label_smoothing=0.2, z_loss=0.01)),
        (probabilities, dict(weight=weight, label_smoothing=0.1, z_loss=0.01)),
    ]
    for t, options in cases:
        for reduction in ("mean", "sum", "none"):
            loss, grad = fastsoftmax.cross_entropy(
                logits, t, reduction=reduction, return_grad=True, backend="cuda", **options
            )
            ref_loss, ref_grad = reference.cross_entropy(logits, t, reduction=reduction, **options)
            assert_close_scaled(loss, ref_loss, 1.0, dtype, rtol=1e-5 if dtype == np.float32 else None)
            assert_close_scaled(grad, ref_grad, np.abs(ref_grad).max(), dtype)
            only_loss = fastsoftmax.cross_entropy(logits, t, reduction=reduction, backend="cuda", **options)
            np.testing.assert_array_equal(only_loss, loss)


def test_cross_entropy_special_rows_on_every_path(tiny_blocks):
    for width in (3, 7, 23):
        x = special_rows(width, np.float64, seed=width)[:5]
        target = np.zeros(5, dtype=np.int64)
        loss, grad = fastsoftmax.cross_entropy(
            x, target, reduction="none", return_grad=True, backend="cuda"
        )
        with np.errstate(invalid="ignore", over="ignore"):
            ref_loss, ref_grad = reference.cross_entropy(x, target, reduction="none")
        np.testing.assert_array_equal(np.isnan(loss), np.isnan(ref_loss))
        np.testing.assert_array_equal(np.isnan(grad), np.isnan(ref_grad))
        finite = np.isfinite(ref_grad)
        np.testing.assert_allclose(grad[finite], ref_grad[finite], rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [1, 3, 9, 23])
def test_topk_on_every_path(tiny_blocks, width, dtype):
    x = special_rows(width, dtype, seed=width)
    x[8] = np.round(x[8])  # many ties: equal logits go to the lower index
    for k in sorted({k for k in (1, 2, 5, width) if k <= width}):
        probs, index = fastsoftmax.softmax_topk(x, k, temperature=0.7, backend="cuda")
        ref_probs, ref_index = reference.softmax_topk(x, k, temperature=0.7)
        np.testing.assert_array_equal(index, ref_index)
        assert index.dtype == np.int64
        assert_matches_reference(probs, ref_probs, "probability")


def test_topk_along_another_axis(tiny_blocks):
    x = np.random.default_rng(3).normal(size=(3, 11, 2))
    probs, index = fastsoftmax.softmax_topk(x, 4, axis=1, backend="cuda")
    ref_probs, ref_index = reference.softmax_topk(np.moveaxis(x, 1, -1), 4)
    np.testing.assert_array_equal(index, np.moveaxis(ref_index, -1, 1))
    np.testing.assert_allclose(probs, np.moveaxis(ref_probs, -1, 1), rtol=1e-13)


# ---------------------------------------------------------------------------
# The warp-shuffle path, which real GPUs take


def _shuffle_through_barriers(self, mask, value, lane_mask):
    """``shfl_xor_sync`` for the simulator: swap values through a table and two barriers."""
    thread = threading.current_thread()
    table = self.__dict__.setdefault("_shuffled", {})
    table[thread.thread_id] = value
    self.syncthreads()
    partner = table[thread.thread_id ^ lane_mask]
    self.syncthreads()
    return partner


_SHARED_ALLOCATION = threading.Lock()


def _shared_array_once(self, shape, dtype, alignment=None):
    """``cuda.shared.array`` for the simulator with each static array made exactly once.

    The simulator keys static shared arrays by the calling line but checks and
    stores without a lock, so two threads of a block can each get a private
    array and read the other's slots uninitialised.
    """
    if alignment is not None:
        raise RuntimeError("array alignment is not supported in the simulator")
    dtype = numpy_support.as_dtype(dtype) if isinstance(dtype, types.Type) else np.dtype(dtype)
    if shape == 0:
        return np.frombuffer(self._dynshared.data, dtype=dtype, count=self._dynshared_size // dtype.itemsize)
    caller = sys._getframe(1)
    key = (caller.f_code.co_filename, caller.f_lineno)
    with _SHARED_ALLOCATION:
        if key not in self._allocations:
            self._allocations[key] = np.empty(shape, dtype)
        return self._allocations[key]


@pytest.fixture
def warp_shuffles(monkeypatch):
    """Kernels built with warp shuffles, emulated in the simulator (which lacks them).

    Blocks of 64 threads make the row reductions span two warps, so the path
    through shared memory between warps runs too.
    """
    if not runtime.SIMULATOR:
        pytest.skip("on a GPU the shuffle path is the default one, run by every test")
    from numba.cuda.simulator.kernelapi import FakeCUDAModule, FakeCUDAShared

    monkeypatch.setattr(FakeCUDAModule, "shfl_xor_sync", _shuffle_through_barriers, raising=False)
    # Reductions wider than a warp keep the warps' results in static shared arrays.
    monkeypatch.setattr(FakeCUDAShared, "array", _shared_array_once)
    sizes = {
        "USE_SHUFFLE": True, "ROW_LANES": 32, "LANE_VALUES": 2, "ROWS_BLOCK": 64,
        "ROW_BLOCK_MAX": 64, "ROW_CACHE_BYTES": 8, "TOPK_BLOCK": 64, "TOPK_LOCAL": 2,
        "SUM_BLOCK": 64, "SUM_VALUES": 2,
    }
    for name, value in sizes.items():
        monkeypatch.setattr(settings, name, value)


@pytest.mark.parametrize("width", [5, 40, 100, 300])
def test_warp_shuffle_path(warp_shuffles, width):
    # 5: groups of 8 lanes; 40: a full warp per row; 100 and 300: a block of
    # two warps per row, in registers (100) or streaming (300).
    x = special_rows(width, np.float32, seed=width)[:6]
    assert plan.row_plan(width, 4).shuffle
    got = fastsoftmax.softmax(x, temperature=0.5, backend="cuda")
    assert_matches_reference(got, reference.softmax(x, 0.5), "probability")
    assert_matches_reference(fastsoftmax.logsumexp(x, backend="cuda"), reference.logsumexp(x), "log")
    rng = np.random.default_rng(width)
    logits = rng.normal(size=(3, width))
    target = np.array([0, width - 1, -100])
    loss, grad = fastsoftmax.cross_entropy(
        logits, target, label_smoothing=0.1, return_grad=True, backend="cuda"
    )
    ref_loss, ref_grad = reference.cross_entropy(logits, target, label_smoothing=0.1)
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-16)
    grad_in = rng.normal(size=(3, width))
    y = reference.softmax(logits)
    got = fastsoftmax.softmax_backward(grad_in, y, backend="cuda")
    np.testing.assert_allclose(got, reference.softmax_backward(grad_in, y), rtol=1e-12, atol=1e-15)
    probs, index = fastsoftmax.softmax_topk(np.round(logits * 2), 4, backend="cuda")
    ref_probs, ref_index = reference.softmax_topk(np.round(logits * 2), 4)
    np.testing.assert_array_equal(index, ref_index)
    np.testing.assert_allclose(probs, ref_probs, rtol=1e-13)


# ---------------------------------------------------------------------------
# Device arrays (through the entry points the public API calls for them)


def test_device_input_gives_a_device_result_laid_out_like_it(tiny_blocks):
    host = np.random.default_rng(4).normal(size=(6, 5))
    x = device_window(host, lambda a: a.T)  # (5, 6), Fortran-ordered
    result = cuda_backend.device_rowwise("softmax", x, -1, None, None, 1.0)
    assert arrays.is_device_array(result)
    assert result.shape == (5, 6)
    assert arrays.view_of(result).address.flags.f_contiguous
    assert_matches_reference(to_host(result), reference.softmax(host.T), "probability")


@pytest.mark.parametrize(
    "transform, axis",
    [
        (lambda a: a, 1),
        (lambda a: a[:, ::2], -1),
        (lambda a: a[::-1, :, ::-1], -1),
        (lambda a: a.transpose(2, 0, 3, 1)[:, 1:, :, ::2], 1),  # more than two leading dims
        (lambda a: a.transpose(1, 3, 0, 2), 0),
    ],
)
def test_device_views_of_any_layout(tiny_blocks, transform, axis):
    host = np.random.default_rng(5).normal(size=(3, 4, 5, 6)).astype(np.float32)
    x = device_window(host, transform)
    expected_input = transform(host)
    moved = np.moveaxis(expected_input, axis, -1)
    result = to_host(cuda_backend.device_rowwise("log_softmax", x, axis, None, None, 1.0))
    assert_matches_reference(np.moveaxis(result, axis, -1), reference.log_softmax(moved), "log")
    lse = to_host(cuda_backend.device_logsumexp(x, axis, False, None, None))
    assert_matches_reference(lse, reference.logsumexp(moved), "log")
    probs, index = cuda_backend.device_softmax_topk(x, 2, axis, 1.0)
    np.testing.assert_array_equal(np.moveaxis(to_host(index), axis, -1), reference.softmax_topk(moved, 2)[1])
    np.testing.assert_array_equal(to_host(arrays.view_of(x).kernel_arg()), expected_input)  # unchanged


def test_device_out_in_place_and_its_errors(tiny_blocks):
    host = np.random.default_rng(6).normal(size=(4, 9))
    expected = reference.softmax(host)
    x = device_copy(host)
    out = cuda.device_array((4, 9), dtype=np.float64)
    assert cuda_backend.device_rowwise("softmax", x, -1, out, None, 1.0) is out
    assert_matches_reference(to_host(out), expected, "probability")
    assert cuda_backend.device_rowwise("softmax", x, -1, x, None, 1.0) is x  # in place
    assert_matches_reference(to_host(x), expected, "probability")
    x = device_copy(host)
    with pytest.raises(TypeError, match="out must be a GPU array"):
        cuda_backend.device_rowwise("softmax", x, -1, np.empty((4, 9)), None, 1.0)
    with pytest.raises(TypeError, match="dtype float32, but the result has dtype float64"):
        cuda_backend.device_rowwise("softmax", x, -1, cuda.device_array((4, 9), np.float32), None, 1.0)
    with pytest.raises(ValueError, match=r"shape \(9, 4\), but the result has shape \(4, 9\)"):
        cuda_backend.device_rowwise("softmax", x, -1, cuda.device_array((9, 4)), None, 1.0)
    base = arrays.view_of(device_copy(np.zeros((4, 10))))
    left = base.with_address(base.address[:, :9]).kernel_arg()
    right = base.with_address(base.address[:, 1:]).kernel_arg()
    with pytest.raises(ValueError, match="partly overlaps x"):
        cuda_backend.device_rowwise("softmax", left, -1, right, None, 1.0)
    evens = base.with_address(base.address[:, 0::2]).kernel_arg()
    odds = base.with_address(base.address[:, 1::2]).kernel_arg()
    cuda_backend.device_rowwise("softmax", evens, -1, odds, None, 1.0)  # interleaved, disjoint
    assert_matches_reference(to_host(odds), np.full((4, 5), 0.2), "probability")


def test_device_half_and_integer_inputs(tiny_blocks):
    host = np.random.default_rng(7).normal(scale=3.0, size=(3, 9))
    half = cuda_backend.device_rowwise("softmax", device_copy(host.astype(np.float16)), -1, None, None, 1.0)
    assert half.dtype == np.float16
    assert_matches_reference(to_host(half), reference.softmax(host.astype(np.float16)), "probability")
    half_input = device_copy(host.astype(np.float16))
    as32 = cuda_backend.device_rowwise("log_softmax", half_input, -1, None, np.float32, 1.0)
    assert as32.dtype == np.float32
    ints = np.round(host).astype(np.int32)
    result = cuda_backend.device_rowwise("softmax", device_copy(ints), -1, None, None, 1.0)
    assert result.dtype == np.float64
    assert_matches_reference(to_host(result), reference.softmax(ints), "probability")


def test_device_logsumexp_keepdims_and_empty_rows(tiny_blocks):
    host = np.random.default_rng(8).normal(size=(3, 9, 2))
    result = cuda_backend.device_logsumexp(device_copy(host), 1, True, None, None)
    assert result.shape == (3, 1, 2)
    assert_matches_reference(to_host(result)[:, 0], reference.logsumexp(np.moveaxis(host, 1, -1)), "log")
    empty = cuda_backend.device_logsumexp(device_copy(np.zeros((5, 0))), -1, False, None, None)
    np.testing.assert_array_equal(to_host(empty), np.full(5, -np.inf))


def test_device_backward_with_saved_values_on_either_side(tiny_blocks):
    rng = np.random.default_rng(9)
    grad = rng.normal(size=(4, 9))
    y = reference.softmax(rng.normal(size=(4, 9)))
    expected = reference.softmax_backward(grad, y)
    for saved in (device_copy(y), y):
        result = cuda_backend.device_backward("softmax_backward", device_copy(grad), saved, -1, None)
        assert arrays.is_device_array(result)
        np.testing.assert_allclose(to_host(result), expected, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match=r"grad has shape \(4, 9\) but y has shape \(9, 4\)"):
        cuda_backend.device_backward("softmax_backward", device_copy(grad), y.T, -1, None)


def ce_device(logits, target, **options):
    defaults = dict(
        weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, z_loss=0.0,
        return_grad=True, grad_out=None,
    )
    defaults.update(options)
    return cuda_backend.device_cross_entropy(logits, target, **defaults)


def test_device_cross_entropy(tiny_blocks):
    rng = np.random.default_rng(10)
    logits = rng.normal(size=(6, 9))
    target = rng.integers(0, 9, size=6).astype(np.int32)
    target[1] = -100
    weight = rng.uniform(0.5, 2.0, size=9)
    options = dict(weight=weight, label_smoothing=0.1, z_loss=0.01)
    ref_loss, ref_grad = reference.cross_entropy(logits, target, **options)
    on_device = {**options, "weight": device_copy(weight)}
    loss, grad = ce_device(device_copy(logits), device_copy(target), **on_device)
    assert isinstance(loss, np.float64)  # a host scalar for "mean"
    assert arrays.is_device_array(grad)
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    np.testing.assert_allclose(to_host(grad), ref_grad, rtol=1e-12, atol=1e-16)
    none, _ = ce_device(device_copy(logits), target, reduction="none", **options)
    assert arrays.is_device_array(none)
    np.testing.assert_allclose(
        to_host(none), reference.cross_entropy(logits, target, reduction="none", **options)[0], rtol=1e-13
    )
    in_place = device_copy(logits)  # the gradient overwrites the logits
    loss, grad = ce_device(in_place, target, grad_out=in_place, **options)
    assert grad is in_place and loss == pytest.approx(ref_loss, rel=1e-13)
    np.testing.assert_allclose(to_host(in_place), ref_grad, rtol=1e-12, atol=1e-16)


def test_device_cross_entropy_errors_match_the_host_path(tiny_blocks):
    logits = np.zeros((2, 3, 5))
    target = np.array([[0, 1, 4], [2, 7, 9]])
    with pytest.raises(ValueError) as host_error:
        fastsoftmax.cross_entropy(logits, target, backend="numpy")
    with pytest.raises(ValueError) as device_error:
        ce_device(device_copy(logits), device_copy(target))
    assert str(device_error.value) == str(host_error.value) == (
        "target[1, 1] = 7 is outside [0, 5) and is not ignore_index (-100)"
    )
    # With the caller's grad_out (here the logits, in place) nothing is written
    # before the check has passed.
    in_place = device_copy(logits)
    with pytest.raises(ValueError, match=r"target\[1, 1\] = 7"):
        ce_device(in_place, device_copy(target), grad_out=in_place)
    np.testing.assert_array_equal(to_host(in_place), logits)
    with pytest.raises(ValueError, match="weight holds NaN or infinite values"):
        ce_device(device_copy(logits), target.clip(0, 4), weight=device_copy(np.array([1, 1, np.nan, 1, 1])))
    with pytest.raises(ValueError, match=r"weight has shape \(4,\) but must be \(5,\)"):
        ce_device(device_copy(logits), target.clip(0, 4), weight=device_copy(np.ones(4)))
    with pytest.raises(ValueError, match="class-index target has shape"):
        ce_device(device_copy(logits), device_copy(target[0]))


def test_device_topk_returns_device_arrays(tiny_blocks):
    host = np.random.default_rng(11).normal(size=(5, 9))
    probs, index = cuda_backend.device_softmax_topk(device_copy(host), 3, -1, 1.0)
    assert arrays.is_device_array(probs) and arrays.is_device_array(index)
    assert index.dtype == np.int64
    ref_probs, ref_index = reference.softmax_topk(host, 3)
    np.testing.assert_array_equal(to_host(index), ref_index)
    np.testing.assert_allclose(to_host(probs), ref_probs, rtol=1e-13)


@pytest.mark.xfail(
    runtime.SIMULATOR and not _host.is_device_array(cuda.to_device(np.zeros(1))),
    reason="the simulator's device arrays have no __cuda_array_interface__, so the public "
    "API routes them only once fastsoftmax._host.is_device_array also accepts __cuda_ndarray__",
    strict=True,
)
def test_public_api_keeps_device_arrays_on_the_device():
    x = device_copy(np.random.default_rng(12).normal(size=(3, 4)))
    result = fastsoftmax.softmax(x)  # auto picks cuda for device arrays
    assert arrays.is_device_array(result)
    with pytest.raises(TypeError, match="lives on a GPU"):
        fastsoftmax.softmax(x, backend="numpy")


class ForeignDeviceArray:
    """A GPU array from another library: only its ``__cuda_array_interface__``."""

    def __init__(self, shape, strides, typestr="<f4"):
        # An address no one may read: building views must never touch it.
        self.__cuda_array_interface__ = {
            "shape": shape, "strides": strides, "typestr": typestr,
            "data": (0x7F0000000000, False), "version": 3,
        }


def test_foreign_arrays_are_viewed_by_their_layout_alone():
    x = ForeignDeviceArray((4, 6, 5), None)
    assert arrays.is_device_array(x)
    view = arrays.view_of(x)
    assert view.shape == (4, 6, 5) and view.dtype == np.float32 and view.owner is x
    assert view.address.strides == (120, 20, 4)
    moved = view.moveaxis(1, -1)
    assert moved.shape == (4, 5, 6) and moved.address.strides == (120, 4, 20)
    half = arrays.view_of(ForeignDeviceArray((4, 3), (-8, 2), "<f2"))
    assert half.dtype == np.float16 and half.address.strides == (-8, 2)
    assert moved.with_address(moved.address[:, 0]).shape == (4, 6)  # a slice, not an element
    assert arrays.shares_memory(view, moved)
    assert not arrays.shares_memory(view.with_address(view.address[:2]), view.with_address(view.address[2:]))


# ---------------------------------------------------------------------------
# Sums, concurrency, availability


def test_device_sums_are_exact_to_rounding_and_deterministic(tiny_blocks):
    values = np.random.default_rng(13).normal(size=1000) * 10.0 ** np.arange(-5, 5).repeat(100)
    device = device_copy(values)
    first, second = sums.total(device), sums.total(device)
    assert first == second  # the same bits every time
    assert first == pytest.approx(float(np.sum(values)), rel=1e-12)
    assert sums.total(cuda.device_array(0)) == 0.0


def test_concurrent_calls_give_serial_results(tiny_blocks):
    rng = np.random.default_rng(14)
    inputs = [rng.normal(size=(3, 9)) for _ in range(6)]
    expected = [fastsoftmax.log_softmax(x, backend="cuda") for x in inputs]
    results = [None] * len(inputs)

    def work(i):
        results[i] = fastsoftmax.log_softmax(inputs[i], backend="cuda")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


def test_availability_reports_the_simulator():
    info = fastsoftmax.backends()["cuda"]
    assert info.available and info.reason == ""
    assert ("CUDA simulator" in info.version) == runtime.SIMULATOR


def test_gpu_benchmark_refuses_the_simulator_clearly():
    script = pathlib.Path(__file__).parents[1] / "benchmarks" / "gpu_bench.py"
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "simulator cannot be benchmarked" in done.stderr
