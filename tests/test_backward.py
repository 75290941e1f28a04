"""softmax_backward and log_softmax_backward on every backend against the reference.

Both results are differences of terms (``y * (g - sum(g * y))``,
``g - p * sum(g)``), so their error is relative to the size of the terms;
`backward_scale` gives that size for the scaled comparison.
"""

import numpy as np
import pytest

import fastsoftmax
import reference
from strategies import assert_close_scaled, logits, max_side, property_test

DTYPES = [np.float32, np.float64]


def backward_scale(op, grad, saved):
    grad = np.asarray(grad, np.float64)
    saved = np.asarray(saved, np.float64)
    if op == "softmax_backward":
        dot = np.sum(np.abs(grad * saved), axis=-1, keepdims=True)
        return np.abs(saved) * (np.abs(grad) + dot)
    total = np.sum(np.abs(grad), axis=-1, keepdims=True)
    return np.abs(grad) + np.exp(saved) * total


def inputs(op, logit_values, grad_values, dtype):
    """(grad, saved) in `dtype` from float64 logits and upstream gradients."""
    saved = (
        reference.softmax(logit_values)
        if op == "softmax_backward"
        else reference.log_softmax(logit_values)
    )
    return grad_values.astype(dtype), saved.astype(dtype)


def check(op, grad, saved, backend, **kw):
    result = getattr(fastsoftmax, op)(grad, saved, backend=backend, **kw)
    expected = getattr(reference, op)(grad, saved)
    assert_close_scaled(result, expected, backward_scale(op, grad, saved), grad.dtype)
    return result


OPS = ["softmax_backward", "log_softmax_backward"]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_random_rows(backend, op, dtype):
    rng = np.random.default_rng(21)
    for n_classes in (1, 2, 3, 17, 1000):
        n_classes = max_side(backend, n_classes)
        shape = (max_side(backend, 8), n_classes)
        grad, saved = inputs(op, rng.normal(scale=3, size=shape), rng.normal(size=shape), dtype)
        check(op, grad, saved, backend)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_many_short_rows(backend, op, dtype):
    # Several blocks of rows and a partial last one: compiled backends handle
    # short rows a block at a time, lanes across rows.
    rng = np.random.default_rng(22)
    for n_classes in (5, 8, 10, 13, 24):
        shape = (max_side(backend, 203), max_side(backend, n_classes))
        grad, saved = inputs(op, rng.normal(scale=3, size=shape), rng.normal(size=shape), dtype)
        check(op, grad, saved, backend)
        # rows further apart than their length: the first columns of a wider array
        wide = rng.normal(size=(shape[0], shape[1] + 3))
        grad, saved = inputs(op, wide, rng.normal(size=wide.shape), dtype)
        check(op, grad[:, : shape[1]], saved[:, : shape[1]], backend)


@pytest.mark.parametrize("op", OPS)
def test_long_rows(host_backend, op):
    # The row sums must stay accurate over 256000 terms of one sign.
    rng = np.random.default_rng(22)
    shape = (2, 256_000)
    grad_values = np.abs(rng.normal(size=shape)) + 0.1
    grad, saved = inputs(op, rng.normal(size=shape), grad_values, np.float32)
    check(op, grad, saved, host_backend)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_saved_values_from_rows_with_minus_inf(backend, op, dtype):
    # Softmax outputs with exact zeros (log_softmax with -inf) give exactly 0
    # (softmax) or exactly grad (log_softmax) there.
    rng = np.random.default_rng(23)
    n = max_side(backend, 9)
    x = rng.normal(size=(3, n))
    x[:, ::2] = -np.inf
    x[:, 1] = 0.0
    grad, saved = inputs(op, x, rng.normal(size=(3, n)), dtype)
    result = check(op, grad, saved, backend)
    masked = np.isneginf(x)
    if op == "softmax_backward":
        assert (result[masked] == 0).all()
    else:
        np.testing.assert_array_equal(result[masked], grad[masked])


@pytest.mark.parametrize("op", OPS)
def test_single_class_has_zero_gradient(backend, op):
    grad = np.array([[3.0], [-2.0]])
    saved = np.array([[1.0], [1.0]]) if op == "softmax_backward" else np.zeros((2, 1))
    np.testing.assert_array_equal(getattr(fastsoftmax, op)(grad, saved, backend=backend), 0.0)


@pytest.mark.parametrize("op", OPS)
def test_empty_inputs(backend, op):
    for shape in ((0, 3), (3, 0), (2, 0, 4)):
        result = getattr(fastsoftmax, op)(np.zeros(shape), np.zeros(shape), backend=backend)
        assert result.shape == shape and result.dtype == np.float64


@pytest.mark.parametrize("op", OPS)
def test_backward_of_the_packages_own_forward(backend, op):
    # The usual use: saved values straight from the forward call, same backend.
    rng = np.random.default_rng(24)
    shape = (max_side(backend, 5), max_side(backend, 30))
    x = rng.normal(scale=2, size=shape).astype(np.float32)
    forward = fastsoftmax.softmax if op == "softmax_backward" else fastsoftmax.log_softmax
    saved = forward(x, backend=backend)
    grad = rng.normal(size=shape).astype(np.float32)
    check(op, grad, saved, backend)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_property_random_rows(backend, op, dtype):
    @property_test(backend, logits(backend, np.float64, bound=20.0, max_dims=3))
    def check_rows(x):
        grad_values = np.sin(3 * x) * 2
        grad, saved = inputs(op, x, grad_values, dtype)
        check(op, grad, saved, backend)

    check_rows()
