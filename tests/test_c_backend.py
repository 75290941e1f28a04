"""Tests of the C backend itself: its exp/log, instruction sets, threads, build.

The generic suite runs the ``c`` backend through the public API; these tests
cover what is particular to it: the accuracy of the vectorized exp and log in
ulps over the whole float32 range, every instruction-set build the CPU can run
(compared with tests/reference.py), 256k-long rows, the row-splitting thread
pool, the sanitizer build of the C test driver, and the fallback when the
extension is missing.
"""

import concurrent.futures
import importlib.util
import multiprocessing
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

import fastsoftmax
import reference
from strategies import assert_cross_entropy_close

c_backend = pytest.importorskip("fastsoftmax._backends.c_backend")
if c_backend.lib is None:
    pytest.fail("the C extension is not built: " + c_backend.availability()[1], pytrace=False)

ROOT = pathlib.Path(__file__).resolve().parent.parent
SRC_C = ROOT / "src_c"
LEVELS = c_backend.ISA_LEVELS[: c_backend.ISA_LEVELS.index(c_backend.supported_isa()) + 1]


@pytest.fixture(params=LEVELS)
def isa(request):
    """Each instruction set this CPU runs, made the one the kernels use."""
    with c_backend.limit_isa(request.param) as name:
        assert name == request.param
        yield name


def _float32_samples(stride):
    """Every `stride`-th float32 bit pattern (negatives, subnormals, inf, NaN included)."""
    bits = np.arange(0, 2**32, stride, dtype=np.uint64).astype(np.uint32)
    return bits.view(np.float32)


def _ulp_errors_f32(got, exact):
    """|got - exact| in units of the float32 spacing at the correctly rounded result."""
    rounded = exact.astype(np.float32)
    spacing = np.spacing(np.abs(rounded)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / np.maximum(spacing, 2.0**-149)


def _check_specials(got, exact, dtype):
    """NaN where the exact result is NaN; 0 and inf exactly where the rounded result is."""
    rounded = exact.astype(dtype)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(exact))
    extreme = np.isinf(rounded) | (rounded == 0)
    np.testing.assert_array_equal(got[extreme], rounded[extreme])
    return np.isfinite(rounded) & (rounded != 0)


# Over these many samples (2**32 / 257: about 16.7M float32 values) the largest
# error seen is 0.89 ulp for exp and 0.82 ulp for log; exhaustive runs over all
# 2**32 inputs agree.
SAMPLE_STRIDE = 257


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_exp_float32_within_one_ulp_over_the_whole_range(isa):
    x = _float32_samples(SAMPLE_STRIDE)
    exact = np.exp(x.astype(np.float64))
    got = c_backend.vector_exp(x)
    normal = _check_specials(got, exact, np.float32)
    assert _ulp_errors_f32(got[normal], exact[normal]).max() < 1.0
    # the variant the kernels apply to x - max(x), over its domain x <= 0
    nonpositive = ~(x > 0)
    got = c_backend.vector_exp_nonpositive(x[nonpositive])
    normal = _check_specials(got, exact[nonpositive], np.float32)
    assert _ulp_errors_f32(got[normal], exact[nonpositive][normal]).max() < 1.0


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_log_float32_within_one_ulp_over_the_whole_range(isa):
    x = _float32_samples(SAMPLE_STRIDE)
    exact = np.log(x.astype(np.float64))
    got = c_backend.vector_log(x)
    normal = _check_specials(got, exact, np.float32)
    assert _ulp_errors_f32(got[normal], exact[normal]).max() < 1.0


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_short_rows_exp_within_a_sixth_of_the_probability_bound(isa):
    # The register kernels' cheaper float32 exp (rows of 8 to 16 classes):
    # every nonpositive sample, then a fine grid where results are normal.
    x = _float32_samples(SAMPLE_STRIDE)
    x = np.concatenate([x[~(x > 0)], np.linspace(-87.3, 0, 1_000_001, dtype=np.float32)])
    exact = np.exp(x.astype(np.float64))
    got = c_backend.vector_exp_short_rows(x)
    normal = _check_specials(got, exact, np.float32) & (exact >= np.finfo(np.float32).tiny)
    assert _ulp_errors_f32(got[normal], exact[normal]).max() < 5.0
    relative = np.abs(got[normal] - exact[normal]) / exact[normal]
    assert (relative / (1e-6 + 1.2e-7 * np.abs(x[normal]))).max() < 1 / 6
    subnormal = (exact < np.finfo(np.float32).tiny) & (exact.astype(np.float32) > 0)
    assert (np.abs(got[subnormal] - exact[subnormal]) / 2.0**-149).max() < 3.5


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_exp_float64_within_one_ulp(isa):
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.uniform(-750, 712, 1_000_000),
            rng.uniform(-1, 1, 200_000),
            [-np.inf, np.inf, np.nan, 0.0, -745.1, -745.2, 709.78, 709.79, -708.4,
             -1063.5, -1064.0, -1064.5, -1e300],
        ]
    )
    exact = np.exp(x.astype(np.longdouble))
    for got, keep in ((c_backend.vector_exp(x), slice(None)),
                      (c_backend.vector_exp_nonpositive(x[~(x > 0)]), ~(x > 0))):
        want = exact[keep]
        normal = _check_specials(got, want, np.float64)
        rounded = want[normal].astype(np.float64)
        spacing = np.maximum(np.spacing(np.abs(rounded)), 2.0**-1074).astype(np.longdouble)
        errors = np.abs(got[normal].astype(np.longdouble) - want[normal]) / spacing
        assert errors.max() < 1.0


VECTOR_BYTES = {"baseline": 16, "avx2": 32, "avx512": 64}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_exp_gives_the_scalar_result_lane_for_lane(isa, dtype):
    # vector_exp_nonpositive takes every other SIMD vector of its input through
    # the vector form of the exp: with each vector of values given twice, the
    # two forms meet every value
    lanes = VECTOR_BYTES[isa] // np.dtype(dtype).itemsize
    rng = np.random.default_rng(3)
    values = np.concatenate(
        [
            -rng.exponential(40, 20_000),
            -rng.uniform(0, 800, 20_000),
            [-np.inf, np.nan, 0.0, -0.0, -87.4, -103.9, -110.5, -132.0, -132.5, -133.0,
             -745.1, -746.0, -760.0, -1063.5, -1064.0, -1064.5, -1e30],
        ]
    ).astype(dtype)
    values = values[: values.size // lanes * lanes].reshape(-1, 1, lanes)
    twice = np.repeat(values, 2, axis=1).ravel()
    exps = [c_backend.vector_exp_nonpositive]
    if dtype == np.float32:
        exps.append(c_backend.vector_exp_short_rows)
    for exp in exps:
        got = exp(twice)
        bits = got.view(np.uint32 if dtype == np.float32 else np.uint64).reshape(-1, 2, lanes)
        np.testing.assert_array_equal(bits[:, 0], bits[:, 1])


def _special_rows(dtype, n_cols):
    rng = np.random.default_rng(n_cols)
    x = (rng.standard_normal((9, n_cols)) * 4).astype(dtype)
    x[1, n_cols // 2] = np.nan
    x[2, -1] = np.inf
    x[3] = -np.inf
    x[4, ::2] = -np.inf
    x[5, 0], x[5, -1] = np.inf, np.nan
    # huge logits of both signs: x - max(x) overflows unless computed with care
    # (half the largest double, so that the float64 reference itself does not overflow)
    huge = np.finfo(dtype).max if dtype == np.float32 else np.finfo(dtype).max / 2
    x[6] = huge
    x[6, ::3] = -huge
    return x


def _check_probabilities(got, want, dtype):
    """The contract's accuracy bound (DESIGN.md), with exact zeros and NaN rows."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(got[want == 0], 0)
    if dtype == np.float32:
        big = want > 1e-30
        bound = 1e-6 + 1.2e-7 * np.abs(np.log(want[big]))
        assert np.all(np.abs(got[big] - want[big]) <= bound * want[big])
        assert np.all(np.abs(got[~big & (want >= 0)] - want[~big & (want >= 0)]) <= 1e-30)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-300)


def _check_log_probabilities(got, want, dtype):
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    with np.errstate(over="ignore"):
        rounded = want.astype(dtype)
    infinite = np.isinf(rounded)
    np.testing.assert_array_equal(got[infinite], rounded[infinite])
    small = np.abs(want) < 100
    if dtype == np.float32:
        np.testing.assert_allclose(got[small], want[small], rtol=0, atol=1e-5)
    else:
        np.testing.assert_allclose(got[small], want[small], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("n_cols", [8, 9, 10, 12, 14, 16])
def test_short_rows_give_the_same_bits_as_lines_as_rows_and_streamed(n_cols):
    # float32 softmax over contiguous rows of an even number of classes moves
    # whole 32-byte lines (AVX2), streamed into outputs of 16 MiB and more
    # that are 16-byte aligned; rows at a stride go row by row. All the same.
    rows = (16 << 20) // (4 * n_cols) + 13  # streamed, and a partial group of rows
    rng = np.random.default_rng(n_cols)
    x = (rng.standard_normal((rows, n_cols)) * 20).astype(np.float32)
    x[3, 1], x[8, 2], x[9] = np.inf, np.nan, -np.inf
    x[10, ::2] = -np.inf
    x[11, 0] = -200.0
    contiguous = fastsoftmax.softmax(x, backend="c")
    wide = np.zeros((rows, n_cols + 1), np.float32)
    wide[:, :n_cols] = x
    strided = fastsoftmax.softmax(wide[:, :n_cols], backend="c")
    np.testing.assert_array_equal(contiguous.view(np.uint32), strided.view(np.uint32))
    buffer = np.empty(x.size + 32, np.float32)
    for offset in (4, 1):  # 16 bytes past a 64-byte line: streamed; 4 bytes: not
        start = (-buffer.ctypes.data // 4) % 16 + offset
        out = buffer[start : start + x.size].reshape(x.shape)
        fastsoftmax.softmax(x, out=out, backend="c")
        np.testing.assert_array_equal(out.view(np.uint32), contiguous.view(np.uint32))
    in_place = x.copy()  # in place: each group is read before the one before it is written
    fastsoftmax.softmax(in_place, out=in_place, backend="c")
    np.testing.assert_array_equal(in_place.view(np.uint32), contiguous.view(np.uint32))
    small = x[:1000]
    np.testing.assert_array_equal(
        fastsoftmax.softmax(small, backend="c").view(np.uint32),
        contiguous[:1000].view(np.uint32),
    )
    _check_probabilities(contiguous[:20], reference.softmax(x[:20]), np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_cols", [1, 3, 8, 10, 13, 16, 17, 64, 65, 128, 203, 256, 257, 1025, 3000])
def test_every_instruction_set_matches_the_reference(isa, dtype, n_cols):
    x = _special_rows(dtype, n_cols)
    for temperature in (1.0, 0.3, 7.0):
        with np.errstate(over="ignore"):  # the reference overflows where the result does
            want_p = reference.softmax(x, temperature)
            want_logp = reference.log_softmax(x, temperature)
        _check_probabilities(
            fastsoftmax.softmax(x, temperature=temperature, backend="c"), want_p, dtype
        )
        _check_log_probabilities(
            fastsoftmax.log_softmax(x, temperature=temperature, backend="c"), want_logp, dtype
        )
    with np.errstate(over="ignore"):
        want = reference.logsumexp(x).astype(dtype)
    np.testing.assert_allclose(
        fastsoftmax.logsumexp(x, backend="c"), want, rtol=2e-7 if dtype == np.float32 else 1e-14
    )
    k = min(n_cols, 4)
    probs, index = fastsoftmax.softmax_topk(x, k, backend="c")
    want_probs, want_index = reference.softmax_topk(x, k)
    np.testing.assert_array_equal(index, want_index)
    _check_probabilities(probs, want_probs, dtype)
    plain = x[[0, 4, 7, 8]]
    target = np.arange(4) % n_cols
    loss, grad = fastsoftmax.cross_entropy(
        plain, target, label_smoothing=0.1, z_loss=1e-3, return_grad=True, backend="c"
    )
    want_loss, want_grad = reference.cross_entropy(plain, target, label_smoothing=0.1, z_loss=1e-3)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss, want_loss, rtol=rtol)
    np.testing.assert_allclose(grad, want_grad, rtol=rtol * 10, atol=rtol / 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_of_256k_meet_the_accuracy_bound(isa, dtype):
    x = (np.random.default_rng(1).standard_normal((2, 256_000)) * 2).astype(dtype)
    x[1, :1000] += 9  # a row whose mass sits in a few classes
    _check_probabilities(fastsoftmax.softmax(x, backend="c"), reference.softmax(x), dtype)
    _check_log_probabilities(
        fastsoftmax.log_softmax(x, backend="c"), reference.log_softmax(x), dtype
    )
    rtol = 1e-7 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(
        fastsoftmax.logsumexp(x, backend="c"), reference.logsumexp(x), rtol=rtol
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_large_enough_for_streaming_stores(threads, dtype):
    # 40 MB per call on one thread: softmax, log_softmax and the cross-entropy
    # gradient use streaming stores; medium rows whatever their alignment
    threads(1)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((10_000 if dtype == np.float32 else 5000, 1003)).astype(dtype)
    rows = [0, 1, 2345, 4999]
    rtol = 1e-4 if dtype == np.float32 else 1e-11
    for offset in (0, 1, 5):  # the output 0, 4 and 20 bytes (float32) after a 64-byte line
        buffer = np.empty(x.size + 64, dtype)
        start = (-buffer.ctypes.data // buffer.itemsize) % (64 // buffer.itemsize) + offset
        out = buffer[start : start + x.size].reshape(x.shape)
        _check_probabilities(
            fastsoftmax.softmax(x, out=out, backend="c")[rows], reference.softmax(x[rows]), dtype
        )
        _check_log_probabilities(
            fastsoftmax.log_softmax(x, out=out, backend="c")[rows],
            reference.log_softmax(x[rows]),
            dtype,
        )
    target = rng.integers(0, x.shape[1], len(x))
    weight = rng.uniform(0.5, 2, x.shape[1])
    loss, grad = fastsoftmax.cross_entropy(
        x, target, weight=weight, label_smoothing=0.1, reduction="none", return_grad=True,
        backend="c",
    )
    want_loss, want_grad = reference.cross_entropy(
        x[rows], target[rows], weight=weight, label_smoothing=0.1, reduction="none"
    )
    np.testing.assert_allclose(loss[rows], want_loss, rtol=rtol)
    np.testing.assert_allclose(grad[rows], want_grad, rtol=rtol, atol=rtol / 1000)
    probs = rng.uniform(0, 1, x.shape).astype(dtype)
    probs /= probs.sum(axis=1, keepdims=True)
    want_loss, want_grad = reference.cross_entropy(x[rows], probs[rows], reduction="none")
    loss, grad = fastsoftmax.cross_entropy(  # the gradient over the logits, in place
        x, probs, reduction="none", return_grad=True, grad_out=x, backend="c"
    )
    assert grad is x
    np.testing.assert_allclose(loss[rows], want_loss, rtol=rtol)
    np.testing.assert_allclose(grad[rows], want_grad, rtol=rtol, atol=rtol / 1000)


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------


@pytest.fixture
def threads():
    """Set the thread count for one test and restore it afterwards."""
    previous = fastsoftmax.get_num_threads()
    yield fastsoftmax.set_num_threads
    fastsoftmax.set_num_threads(previous)


def _record_kernel_calls(monkeypatch, ops, entry):
    """Spy on the C kernels named in `ops`: the list of ``entry(op, args)`` of each call."""
    calls = []
    real = c_backend._function

    def spy(op, dtype):
        kernel = real(op, dtype)
        if op not in ops:
            return kernel

        def call(*args):
            calls.append(entry(op, args))
            return kernel(*args)

        return call

    monkeypatch.setattr(c_backend, "_function", spy)
    return calls


@pytest.fixture
def lent_workspaces(monkeypatch):
    """For each softmax kernel call, whether it was given a workspace."""
    return _record_kernel_calls(
        monkeypatch, ("softmax",), lambda op, args: args[-1] != c_backend.ffi.NULL
    )


def _long_special_rows(dtype, seed):
    """264 rows of 16407 classes (16 MiB of float32 at one thread: long rows
    that stream and pipeline) with special rows at the start and a NaN at the
    very end, and an output off a vector boundary."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((264, 16_400 + 7)) * 4).astype(dtype)
    x[1, 5] = np.nan
    x[2, 77] = np.inf
    x[3] = -np.inf
    x[4, ::3] = -np.inf
    x[5, 16_000] = 3e30  # all the mass in one class
    x[6, :100] += 12
    x[7, :5000] = -np.inf  # a NaN among a leading run of -inf
    x[7, 300] = np.nan
    x[8, :5000] = -np.inf  # the first finite logit after several parts of -inf
    x[9] = np.linspace(-30, 30, x.shape[1])  # a maximum that grows in every part
    x[-1, -1] = np.nan  # the last row: a pipeline ends on a NaN row
    buffer = np.empty(x.size + 16, dtype)
    return x, buffer[1 : 1 + x.size].reshape(x.shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_rows_with_and_without_a_workspace_match_the_reference(
    threads, monkeypatch, lent_workspaces, dtype
):
    # rows long and many enough for softmax to lend the kernel a workspace: each
    # exponential computed once, the output streamed, the next row prefetched;
    # without one, float32 keeps the exponentials in the output and scales them
    # there, a part at a time, once the row's sum is known
    threads(1)
    x, out = _long_special_rows(dtype, seed=8)
    rows = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 131, 262, 263]
    share = c_backend.WORKSPACE_SHARE
    for temperature in (1.0, 0.3):
        with np.errstate(over="ignore", invalid="ignore"):
            want = reference.softmax(x[rows], temperature)
        for lend in (True, False):
            monkeypatch.setattr(c_backend, "WORKSPACE_SHARE", share if lend else 0.0)
            fastsoftmax.softmax(x, temperature=temperature, out=out, backend="c")
            assert lent_workspaces.pop() is lend
            _check_probabilities(out[rows], want, dtype)
            in_place = x.copy()
            fastsoftmax.softmax(in_place, temperature=temperature, out=in_place, backend="c")
            assert lent_workspaces.pop() is lend
            _check_probabilities(in_place[rows], want, dtype)
            # starting on a NaN row
            got = fastsoftmax.softmax(x[1:], temperature=temperature, backend="c")
            assert lent_workspaces.pop() is lend
            _check_probabilities(got[[r - 1 for r in rows[1:]]], want[1:], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_log_softmax_rows_match_the_reference(threads, dtype):
    # rows long and many enough (16 MiB at one thread) for the float32 kernel
    # to pipeline them: one row's maximum and sum taken while the previous
    # row's output streams
    threads(1)
    x, out = _long_special_rows(dtype, seed=9)
    rows = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 131, 262, 263]
    # outputs 0, 1, 2 and 3 KiB further on: the kernel starts each row's sum
    # at the part whose loads keep clear of the output's stores modulo 4 KiB,
    # so these take every starting part (the last part, partial, mid-row)
    buffer = np.empty(x.size + 1024, dtype)
    shifted = [
        buffer[k : k + x.size].reshape(x.shape)
        for k in range(1, 1 + 4096 // x.itemsize, 1024 // x.itemsize)
    ]
    for temperature in (1.0, 0.3):
        with np.errstate(over="ignore", invalid="ignore"):
            want = reference.log_softmax(x[rows], temperature)
        for o in [out, *shifted]:
            fastsoftmax.log_softmax(x, temperature=temperature, out=o, backend="c")
            _check_log_probabilities(o[rows], want, dtype)
        in_place = x.copy()
        fastsoftmax.log_softmax(in_place, temperature=temperature, out=in_place, backend="c")
        _check_log_probabilities(in_place[rows], want, dtype)
        # starting on a NaN row
        got = fastsoftmax.log_softmax(x[1:], temperature=temperature, backend="c")
        _check_log_probabilities(got[[r - 1 for r in rows[1:]]], want[1:], dtype)


@pytest.mark.parametrize("cols", [1000, 3000])
def test_cross_entropy_gradients_from_stored_exponentials_match_the_reference(threads, cols):
    # A gradient row keeps the row's exponentials and is scaled from them: through a
    # local workspace where the gradient streams (an output of 16 MiB or more on a
    # vector boundary, rows of at most 2048 classes), in the gradient row itself
    # otherwise, and over the logits when the gradient is written in place
    threads(1)
    rows = (16 << 20) // (cols * 4) + 3
    rng = np.random.default_rng(21)
    x = (rng.standard_normal((rows, cols)) * 4).astype(np.float32)
    x[1, 7] = np.nan
    x[2, :100] += 30
    target = rng.integers(0, cols, rows)
    target[3] = -100
    weight = rng.uniform(0.5, 2.0, cols).astype(np.float32)

    def on_a_line(values):
        buffer = np.empty(values.size + 16, np.float32)
        start = (-buffer.ctypes.data % 64) // 4
        aligned = buffer[start : start + values.size].reshape(values.shape)
        aligned[...] = values
        return aligned

    grad_out = on_a_line(np.zeros_like(x))
    for options in ({}, {"weight": weight, "label_smoothing": 0.1, "z_loss": 1e-3}):
        want_loss, want_grad = reference.cross_entropy(x, target, reduction="none", **options)
        for in_place in (False, True):
            logits = on_a_line(x) if in_place else x
            loss, grad = fastsoftmax.cross_entropy(
                logits, target, reduction="none", return_grad=True,
                grad_out=logits if in_place else grad_out, backend="c", **options,
            )
            assert_cross_entropy_close(
                loss, grad, want_loss, want_grad, x, target, "none", **options
            )


def test_softmax_lends_a_workspace_only_within_the_memory_rule(threads, lent_workspaces):
    # DESIGN.md: with out= given, peak memory grows by less than 1 % of the input;
    # a workspace is one row per thread, so only calls of enough rows get one
    assert c_backend.WORKSPACE_SHARE < 0.01
    threads(1)
    x = np.zeros((200, 21_000), np.float32)  # rows long enough, outputs large enough ...
    assert c_backend.lib.fs_softmax_work_f32(x.shape[1], x.nbytes) == 2 * x.shape[1]  # two rows
    assert c_backend.lib.fs_softmax_work_f64(x.shape[1], 2 * x.nbytes) == 2 * x.shape[1]
    fastsoftmax.softmax(x, out=np.empty_like(x), backend="c")
    assert lent_workspaces == [False]  # ... but two rows are 1 % of the input
    fastsoftmax.softmax(x[:, :1000], backend="c")
    assert c_backend.lib.fs_softmax_work_f32(1000, x.nbytes) == 0  # medium rows need none
    assert c_backend.lib.fs_softmax_work_f32(32_000, 256_000) == 0  # nor small outputs


@pytest.fixture
def output_sizes_told(monkeypatch):
    """For each C kernel call that writes rows, the output size it was told."""

    def told(op, args):
        if op.startswith("cross_entropy"):
            return op, args[-1].grad_bytes
        return op, args[7]  # x, x_stride, out, out_stride, rows, cols, inv_temperature, bytes

    ops = ("softmax", "log_softmax", "cross_entropy", "cross_entropy_probs")
    return _record_kernel_calls(monkeypatch, ops, told)


def test_every_range_is_told_the_whole_output_size(threads, output_sizes_told):
    # Whether stores stream past the caches must not depend on how many threads
    # share a call: with 3 threads each range writes a third of a 20 MB output,
    # and is told 20 MB, as a call on one thread would be.
    threads(3)
    x = np.zeros((160, 32_000), np.float32)
    out = np.empty_like(x)
    fastsoftmax.softmax(x, out=out, backend="c")
    fastsoftmax.log_softmax(x, out=out, backend="c")
    target = np.zeros(len(x), np.int64)
    fastsoftmax.cross_entropy(x, target, return_grad=True, grad_out=out, backend="c")
    fastsoftmax.cross_entropy(x, target, backend="c")  # no gradient: nothing to stream
    assert output_sizes_told == (
        [("softmax", out.nbytes)] * 3
        + [("log_softmax", out.nbytes)] * 3
        + [("cross_entropy", out.nbytes)] * 3
        + [("cross_entropy", 0)] * 3
    )


def test_rows_are_split_into_one_range_per_thread(threads):
    big = 64 * c_backend.MIN_ELEMENTS_PER_THREAD
    for n in (1, 2, 3, 5):
        threads(n)
        ranges = []
        c_backend._run(lambda start, stop: ranges.append((start, stop)), 1000, big)
        assert sorted(ranges) == [(1000 * i // n, 1000 * (i + 1) // n) for i in range(n)]


def test_small_inputs_stay_on_one_thread(threads):
    threads(8)
    assert c_backend.thread_count(10_000, c_backend.MIN_ELEMENTS_PER_THREAD) == 1
    assert c_backend.thread_count(3, 10**9) == 3  # never more threads than rows
    assert c_backend.thread_count(10**6, 10**9) == 8


@pytest.mark.parametrize("n_cols", [10, 1000])
def test_thread_count_does_not_change_results(threads, n_cols):
    x = np.random.default_rng(2).standard_normal((40_000, n_cols)).astype(np.float32)
    x = x[:, : n_cols - 1] if n_cols > 10 else x  # a row stride that is not the row length
    target = np.arange(len(x)) % x.shape[1]
    results = []
    for n in (1, 2, 3, 7):
        threads(n)
        results.append(
            (
                fastsoftmax.softmax(x, backend="c"),
                fastsoftmax.log_softmax(x, backend="c"),
                fastsoftmax.logsumexp(x, backend="c"),
                fastsoftmax.cross_entropy(
                    x, target, return_grad=True, reduction="none", backend="c"
                ),
                fastsoftmax.softmax_topk(x, 3, backend="c"),
            )
        )
    flat = [
        [array for item in result for array in (item if isinstance(item, tuple) else (item,))]
        for result in results
    ]
    for other in flat[1:]:
        for a, b in zip(flat[0], other):
            np.testing.assert_array_equal(a, b)


def test_calls_from_many_python_threads_at_once(threads):
    threads(2)
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((3000 + 7 * i, 97)).astype(np.float32) for i in range(16)]
    wanted = [reference.softmax(x) for x in inputs]

    def work(i):
        for _ in range(5):
            got = fastsoftmax.softmax(inputs[i], backend="c")
            _check_probabilities(got, wanted[i], np.float32)
        return i

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        assert sorted(pool.map(work, range(16))) == list(range(16))


def _softmax_in_child(queue):
    fastsoftmax.set_num_threads(2)
    x = np.ones((4096, 300), dtype=np.float32)
    queue.put(float(fastsoftmax.softmax(x, backend="c").sum()))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_forked_children_can_use_threads(threads):
    threads(2)
    x = np.ones((4096, 300), dtype=np.float32)
    fastsoftmax.softmax(x, backend="c")  # the parent's pool now exists
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_softmax_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0, "the forked child hung or failed"
    assert queue.get(timeout=5) == pytest.approx(4096)


# ---------------------------------------------------------------------------
# Build: sanitizers, portability, the missing-extension fallback
# ---------------------------------------------------------------------------


def _build_flags():
    spec = importlib.util.spec_from_file_location("build_ffi", SRC_C / "build_ffi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _c_compiler():
    configured = (sysconfig.get_config_var("CC") or "").split()
    for candidate in (configured[:1] or []) + ["gcc", "cc"]:
        if shutil.which(candidate):
            return candidate
    return None


@pytest.mark.slow
def test_kernels_pass_the_c_tests_under_address_and_undefined_sanitizers(tmp_path):
    compiler = _c_compiler()
    if compiler is None:
        pytest.skip("no C compiler on PATH")
    build = _build_flags()
    # -O2 keeps the vectorized block loops while halving the instrumented build time
    flags = [f for f in build.GNU_FLAGS if not f.startswith("-O")] + [
        "-O2",
        "-g",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        "-fno-omit-frame-pointer",
        "-DFS_STREAM_MIN_BYTES=0",  # run the streaming-store paths on the small test data
        "-DFS_STREAM_LONG_COLS=1025",  # and stream the long rows whatever their alignment
        "-DFS_STREAM_MEDIUM_COLS=65",  # and every medium row
        "-DFS_LOG_PIPELINE_COLS=1025",  # and pipeline log_softmax's long rows
        f"-I{SRC_C}",
    ]
    sources = [SRC_C / name for name in build.SOURCES] + [SRC_C / "tests" / "test_kernels.c"]
    compiles = [
        subprocess.Popen(
            [compiler, *flags, "-c", str(source), "-o", str(tmp_path / (source.stem + ".o"))],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for source in sources
    ]
    for process in compiles:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output
    program = tmp_path / "test_kernels"
    subprocess.run(
        [compiler, "-fsanitize=address,undefined", *map(str, tmp_path.glob("*.o")), "-lm",
         "-o", str(program)],
        check=True,
    )
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1")
    result = subprocess.run([str(program)], capture_output=True, text=True, timeout=600, env=env)
    report = result.stdout[-4000:] + result.stderr[-4000:]
    assert result.returncode == 0, report
    assert result.stdout.rstrip().splitlines()[-1].startswith("OK: 0 failures"), report


def test_build_flags_are_portable():
    build = _build_flags()
    for flag in build.GNU_FLAGS + build.GCC_SCHEDULING_FLAGS + build.MSVC_FLAGS:
        assert "march" not in flag and "mtune" not in flag and "fast-math" not in flag
        assert flag not in ("-Ofast", "-ffinite-math-only", "-fno-signed-zeros")


def _cpu_flags():
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def test_runtime_dispatch_picks_the_best_instruction_set_of_this_cpu():
    flags = _cpu_flags()
    if flags is None or sysconfig.get_platform().split("-")[-1] not in ("x86_64", "amd64"):
        pytest.skip("instruction-set detection is checked on x86-64 Linux")
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl", "avx2", "fma"} <= flags:
        expected = "avx512"
    elif {"avx2", "fma"} <= flags:
        expected = "avx2"
    else:
        expected = "baseline"
    assert c_backend.supported_isa() == expected
    assert fastsoftmax.backends()["c"].version.endswith(f"({c_backend.isa()})")


def test_extension_holds_avx2_and_avx512_code():
    objdump = shutil.which("objdump")
    if objdump is None or sysconfig.get_platform().split("-")[-1] not in ("x86_64", "amd64"):
        pytest.skip("needs objdump on x86-64")
    extension = importlib.util.find_spec("fastsoftmax._fastsoftmax_c").origin
    listing = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", extension],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "vfmadd" in listing and "%ymm" in listing  # the AVX2 + FMA build
    assert "%zmm" in listing  # the AVX-512 build


def test_package_imports_and_reports_c_unavailable_without_the_extension():
    script = (
        "import sys\n"
        "sys.modules['fastsoftmax._fastsoftmax_c'] = None  # as if it was never built\n"
        "import numpy as np, fastsoftmax\n"
        "info = fastsoftmax.backends()['c']\n"
        "assert not info.available and 'C compiler' in info.reason, info\n"
        "try:\n"
        "    fastsoftmax.softmax(np.zeros(3), backend='c')\n"
        "except RuntimeError as exc:\n"
        "    assert 'not available' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('backend c ran without its extension')\n"
        "print(fastsoftmax.softmax(np.zeros(2)))\n"
    )
    env = dict(os.environ, FASTSOFTMAX_BACKEND="")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "[0.5 0.5]" in result.stdout
