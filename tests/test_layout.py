"""Any strides, byte order, alignment, axis and number of dimensions give the
reference's answer, the input is left alone, and outputs are laid out like the input.

Each layout below builds a view whose logical content equals a given
``(rows, classes)`` matrix, with the class axis at ``axis``. Memory a view skips
over is filled with NaN, so a kernel that reads outside its row shows it.
"""

import itertools

import numpy as np
import pytest

import fastsoftmax
import reference
from strategies import (
    assert_close_scaled,
    assert_cross_entropy_close,
    assert_matches_reference,
    assert_same_values,
    is_simulated,
    max_side,
)

DTYPES = [np.float32, np.float64]


def _poisoned(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


def contiguous(a):
    return a.copy(), -1


def fortran(a):
    return np.asfortranarray(a), -1


def class_axis_first(a):
    return np.ascontiguousarray(a.T), 0


def class_axis_first_negative(a):
    return np.ascontiguousarray(a.T), -2


def class_axis_first_fortran(a):
    # Memory holds rows contiguously, but the class axis is axis 0.
    return np.asfortranarray(a.T), 0


def every_other_row(a):
    big = _poisoned((2 * a.shape[0], a.shape[1]), a.dtype)
    big[::2] = a
    return big[::2], -1


def every_third_class(a):
    big = _poisoned((a.shape[0], 3 * a.shape[1]), a.dtype)
    big[:, ::3] = a
    return big[:, ::3], -1


def padded_rows(a):
    big = _poisoned((a.shape[0], a.shape[1] + 5), a.dtype)
    big[:, 2 : 2 + a.shape[1]] = a
    return big[:, 2 : 2 + a.shape[1]], -1


def reversed_rows(a):
    return a[::-1].copy()[::-1], -1


def reversed_classes(a):
    return a[:, ::-1].copy()[:, ::-1], -1


def reversed_both(a):
    return a[::-1, ::-1].copy()[::-1, ::-1], -1


def byteswapped(a):
    return a.astype(a.dtype.newbyteorder("S")), -1


def byteswapped_class_axis_first(a):
    return np.ascontiguousarray(a.T).astype(a.dtype.newbyteorder("S")), 0


def unaligned(a):
    raw = np.zeros(a.nbytes + 1, dtype=np.uint8)
    x = raw[1:].view(a.dtype).reshape(a.shape)
    x[...] = a
    assert not x.flags.aligned
    return x, -1


LAYOUTS = [
    contiguous,
    fortran,
    class_axis_first,
    class_axis_first_negative,
    class_axis_first_fortran,
    every_other_row,
    every_third_class,
    padded_rows,
    reversed_rows,
    reversed_classes,
    reversed_both,
    byteswapped,
    byteswapped_class_axis_first,
    unaligned,
]
LAST_AXIS_LAYOUTS = [f for f in LAYOUTS if f(np.zeros((2, 3)))[1] == -1]


def matrix(backend, dtype, seed=0, rows=7, classes=13):
    rng = np.random.default_rng(seed)
    shape = (max_side(backend, rows), max_side(backend, classes))
    return (rng.standard_normal(shape) * 4).astype(dtype)


def base_of(x):
    """The whole buffer behind a view, to check that nothing in it changed."""
    while isinstance(x.base, np.ndarray):
        x = x.base
    return x


def expected_rowwise(fn, a, axis, **kw):
    return np.moveaxis(fn(a, **kw), -1, axis)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_ops(backend, layout, dtype):
    a = matrix(backend, dtype)
    x, axis = layout(a)
    whole = base_of(x)
    before = whole.copy()
    p = fastsoftmax.softmax(x, axis=axis, backend=backend)
    assert_matches_reference(p, expected_rowwise(reference.softmax, a, axis), "probability", dtype)
    logp = fastsoftmax.log_softmax(x, axis=axis, temperature=0.7, backend=backend)
    expected = expected_rowwise(reference.log_softmax, a, axis, temperature=0.7)
    assert_matches_reference(logp, expected, "log", dtype)
    lse = fastsoftmax.logsumexp(x, axis=axis, backend=backend)
    assert_matches_reference(lse, reference.logsumexp(a), "log", dtype)
    probs, index = fastsoftmax.softmax_topk(x, 3, axis=axis, backend=backend)
    expected_probs, expected_index = reference.softmax_topk(a, 3)
    assert_matches_reference(probs, np.moveaxis(expected_probs, -1, axis), "probability", dtype)
    assert_same_values(index, np.moveaxis(expected_index, -1, axis))
    assert_same_values(whole, before)


@pytest.mark.parametrize(
    "grad_layout, saved_layout",
    [
        (contiguous, fortran),
        (every_third_class, reversed_rows),
        (byteswapped, unaligned),
        (padded_rows, reversed_both),
        (reversed_classes, every_other_row),
        (class_axis_first, class_axis_first_fortran),
        (byteswapped_class_axis_first, class_axis_first),
    ],
    ids=lambda f: f.__name__,
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_ops(backend, grad_layout, saved_layout, dtype):
    g = matrix(backend, dtype, seed=1)
    logits = matrix(backend, np.float64, seed=2)
    y = reference.softmax(logits).astype(dtype)
    logp = reference.log_softmax(logits).astype(dtype)
    grad, axis = grad_layout(g)
    for op, saved_values in (("softmax_backward", y), ("log_softmax_backward", logp)):
        saved, saved_axis = saved_layout(saved_values)
        assert saved_axis == axis
        wholes = [base_of(grad), base_of(saved)]
        before = [w.copy() for w in wholes]
        result = getattr(fastsoftmax, op)(grad, saved, axis=axis, backend=backend)
        expected = getattr(reference, op)(g, saved_values)
        scale = np.abs(g).max(axis=-1, keepdims=True) * 2
        assert_close_scaled(
            result, np.moveaxis(expected, -1, axis), np.moveaxis(scale, -1, axis), dtype
        )
        for w, b in zip(wholes, before):
            assert_same_values(w, b)


@pytest.mark.parametrize("layout", LAST_AXIS_LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_logit_layouts(backend, layout, dtype):
    a = matrix(backend, dtype)
    target = np.arange(a.shape[0]) * 3 % a.shape[1]
    logits, _ = layout(a)
    whole = base_of(logits)
    before = whole.copy()
    loss, grad = fastsoftmax.cross_entropy(
        logits, target, reduction="none", return_grad=True, backend=backend
    )
    expected_loss, expected_grad = reference.cross_entropy(a, target, reduction="none")
    assert_cross_entropy_close(loss, grad, expected_loss, expected_grad, a, target, "none")
    assert_same_values(whole, before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_strided_targets(backend, dtype):
    a = matrix(backend, dtype)
    rows, classes = a.shape
    big_target = np.full(2 * rows, 10**6)  # out of range: read by mistake, it raises
    big_target[::2] = np.arange(rows) % classes
    target = big_target[::2]
    loss = fastsoftmax.cross_entropy(a, target, reduction="sum", backend=backend)
    expected, _ = reference.cross_entropy(a, target, reduction="sum")
    assert_cross_entropy_close(loss, None, expected, None, a, target, "sum")

    probabilities = reference.softmax(matrix(backend, np.float64, seed=3))
    for layout in (fortran, every_third_class, byteswapped, reversed_both):
        t, _ = layout(probabilities.astype(dtype))
        loss, grad = fastsoftmax.cross_entropy(a, t, return_grad=True, backend=backend)
        expected, expected_grad = reference.cross_entropy(a, probabilities.astype(dtype))
        assert_cross_entropy_close(loss, grad, expected, expected_grad, a, t, "mean")


def nd_arrays(backend, dtype):
    """4-d arrays: contiguous, transposed, and strided with reversed axes (only
    this last one on the simulator, where each call is slow)."""
    rng = np.random.default_rng(5)
    shape = tuple(max_side(backend, n) for n in (2, 3, 4, 5))
    base = (rng.standard_normal(shape) * 3).astype(dtype)
    if not is_simulated(backend):
        yield base
        yield np.transpose(base, (2, 0, 3, 1))
    big = np.full((shape[0], 2 * shape[1], shape[2], shape[3]), np.nan, dtype=dtype)
    big[:, ::2] = base
    yield np.transpose(big[:, ::-2][:, ::-1], (3, 1, 0, 2))


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_axis_of_nd_arrays(backend, dtype):
    for x in nd_arrays(backend, dtype):
        for axis in range(-x.ndim, x.ndim):
            moved = np.moveaxis(x, axis, -1)
            p = fastsoftmax.softmax(x, axis=axis, backend=backend)
            assert_matches_reference(
                p, np.moveaxis(reference.softmax(moved), -1, axis), "probability"
            )
            logp = fastsoftmax.log_softmax(x, axis=axis, backend=backend)
            assert_matches_reference(
                logp, np.moveaxis(reference.log_softmax(moved), -1, axis), "log"
            )
            lse = fastsoftmax.logsumexp(x, axis=axis, backend=backend)
            assert_matches_reference(lse, reference.logsumexp(moved), "log")
            kept = fastsoftmax.logsumexp(x, axis=axis, keepdims=True, backend=backend)
            assert_matches_reference(kept, np.expand_dims(reference.logsumexp(moved), axis), "log")
            probs, index = fastsoftmax.softmax_topk(x, 2, axis=axis, backend=backend)
            expected_probs, expected_index = reference.softmax_topk(moved, 2)
            assert_matches_reference(probs, np.moveaxis(expected_probs, -1, axis), "probability")
            assert_same_values(index, np.moveaxis(expected_index, -1, axis))
            g = np.cos(x)
            back = fastsoftmax.softmax_backward(g, p, axis=axis, backend=backend)
            expected = reference.softmax_backward(
                np.moveaxis(g, axis, -1), np.moveaxis(p, axis, -1)
            )
            assert_close_scaled(back, np.moveaxis(expected, -1, axis), 2.0, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_nd_batch(backend, dtype):
    for x in nd_arrays(backend, dtype):
        target = np.arange(np.prod(x.shape[:-1])).reshape(x.shape[:-1]) % x.shape[-1]
        target[(0,) * target.ndim] = -100
        loss, grad = fastsoftmax.cross_entropy(x, target, return_grad=True, backend=backend)
        expected_loss, expected_grad = reference.cross_entropy(x, target)
        assert_cross_entropy_close(loss, grad, expected_loss, expected_grad, x, target, "mean")
        loss = fastsoftmax.cross_entropy(x, target, reduction="none", backend=backend)
        assert loss.shape == x.shape[:-1]


def test_one_dimensional_input(backend):
    x = np.array([1.0, 2.0, 3.0])
    assert_matches_reference(
        fastsoftmax.softmax(x, backend=backend), reference.softmax(x), "probability"
    )
    lse = fastsoftmax.logsumexp(x, backend=backend)
    assert isinstance(lse, np.ndarray) and lse.shape == ()
    assert_matches_reference(lse, reference.logsumexp(x), "log")
    assert fastsoftmax.logsumexp(x, keepdims=True, backend=backend).shape == (1,)
    probs, index = fastsoftmax.softmax_topk(x, 2, backend=backend)
    assert probs.shape == index.shape == (2,)
    np.testing.assert_array_equal(index, [2, 1])
    loss = fastsoftmax.cross_entropy(x, np.array(2), backend=backend)
    assert loss == pytest.approx(reference.cross_entropy(x, np.array(2))[0], rel=1e-13)


def test_broadcast_input(backend):
    # Stride 0 across rows, and stride 0 along the class axis.
    row = np.array([0.5, -1.0, 2.0, 0.0])[: max_side(backend, 4)]
    for x in (
        np.broadcast_to(row, (max_side(backend, 5), len(row))),
        np.broadcast_to(row[:, None], (len(row), 3)),
    ):
        assert_matches_reference(
            fastsoftmax.softmax(x, backend=backend), reference.softmax(x), "probability"
        )
        assert_matches_reference(
            fastsoftmax.logsumexp(x, backend=backend), reference.logsumexp(x), "log"
        )


@pytest.mark.parametrize(
    "layout", [fortran, class_axis_first_fortran, every_other_row, reversed_both]
)
def test_results_are_laid_out_like_the_input(backend, layout):
    a = matrix(backend, np.float64)
    x, axis = layout(a)
    like = np.empty_like(x)
    for result in (
        fastsoftmax.softmax(x, axis=axis, backend=backend),
        fastsoftmax.log_softmax(x, axis=axis, backend=backend),
        fastsoftmax.softmax_backward(x, x, axis=axis, backend=backend),
        fastsoftmax.log_softmax_backward(x, x, axis=axis, backend=backend),
    ):
        assert result.strides == like.strides, (result.strides, like.strides)
    if axis == -1:
        _, grad = fastsoftmax.cross_entropy(
            x, np.zeros(len(x), dtype=int), return_grad=True, backend=backend
        )
        assert grad.strides == like.strides


def test_permuted_nd_result_keeps_the_memory_order(backend):
    base = np.random.default_rng(6).normal(size=tuple(max_side(backend, n) for n in (3, 4, 5)))
    for order in itertools.permutations(range(3)):
        x = np.transpose(base, order)
        for axis in range(3):
            result = fastsoftmax.softmax(x, axis=axis, backend=backend)
            assert result.strides == x.strides
            expected = np.moveaxis(reference.softmax(np.moveaxis(x, axis, -1)), -1, axis)
            assert_matches_reference(result, expected, "probability")
