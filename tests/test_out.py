"""``out=`` and ``grad_out=``: written in any layout, in place, never partly
overlapping an input; the input is never modified otherwise; bad outputs raise."""

import numpy as np
import pytest

import fastsoftmax
import reference
from strategies import (
    assert_matches_reference,
    assert_same_to_rounding,
    assert_same_values,
    max_side,
)

DTYPES = [np.float32, np.float64]


def sample(backend, dtype, seed=0, rows=6, classes=11):
    rng = np.random.default_rng(seed)
    shape = (max_side(backend, rows), max_side(backend, classes))
    return (rng.standard_normal(shape) * 3).astype(dtype)


def same_shape_ops(backend):
    """name -> call(x, out, axis) for the ops whose result has x's shape.

    The backward ops take ``grad = cos(x)`` and the reference's forward result
    of `x` as the saved array.
    """

    def forward(fn, **kw):
        return lambda x, out, axis=-1: fn(x, axis=axis, out=out, backend=backend, **kw)

    def backward(fn, saved_fn):
        def call(x, out, axis=-1):
            saved = saved_fn(np.moveaxis(x, axis, -1).astype(np.float64))
            saved = np.moveaxis(saved, -1, axis).astype(x.dtype)
            return fn(np.cos(x), saved, axis=axis, out=out, backend=backend)

        return call

    return {
        "softmax": forward(fastsoftmax.softmax),
        "softmax_tempered": forward(fastsoftmax.softmax, temperature=2.5),
        "log_softmax": forward(fastsoftmax.log_softmax),
        "softmax_backward": backward(fastsoftmax.softmax_backward, reference.softmax),
        "log_softmax_backward": backward(fastsoftmax.log_softmax_backward, reference.log_softmax),
    }


KINDS = {
    "softmax": "probability",
    "softmax_tempered": "probability",
    "log_softmax": "log",
    "softmax_backward": "scaled",
    "log_softmax_backward": "scaled",
}
OP_NAMES = list(KINDS)
# Short rows and rows longer than a vector block: kernels may treat them apart.
CLASSES = [5, 45]


def strided_out(shape, dtype):
    """A view into a NaN-filled buffer, and the buffer (to check what was not written)."""
    big = np.full((shape[0] + 2, 2 * shape[1] + 1), np.nan, dtype=dtype)
    return big[1:-1, 1::2][::-1], big


@pytest.mark.parametrize("op", OP_NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("classes", CLASSES)
def test_out_in_every_layout(backend, op, dtype, classes):
    call = same_shape_ops(backend)[op]
    x = sample(backend, dtype, classes=classes)
    before = x.copy()
    expected = call(x, None)
    outs = [np.empty_like(x), np.empty_like(x, order="F"), np.empty(x.shape[::-1], dtype).T]
    for out in outs:
        out[...] = 7.0
        assert call(x, out) is out
        assert_same_to_rounding(out, expected, KINDS[op])
    out, big = strided_out(x.shape, dtype)
    assert call(x, out) is out
    assert_same_to_rounding(out, expected, KINDS[op])
    untouched = np.ones(big.shape, dtype=bool)
    untouched[1:-1, 1::2] = False
    assert np.isnan(big[untouched]).all(), "out= wrote outside its view"
    assert_same_values(x, before)


@pytest.mark.parametrize("op", OP_NAMES)
@pytest.mark.parametrize("dtype", DTYPES + [np.float16])
@pytest.mark.parametrize("classes", CLASSES)
def test_in_place(backend, op, dtype, classes):
    call = same_shape_ops(backend)[op]
    kind = KINDS[op]
    for axis, x in (
        (-1, sample(backend, dtype, classes=classes)),
        (-1, np.asfortranarray(sample(backend, dtype, classes=classes))),
        (-1, sample(backend, dtype, rows=12, classes=classes)[::-2]),
        (0, sample(backend, dtype, classes=classes).T),
    ):
        expected = call(x.copy(), None, axis)
        if op.endswith("backward"):
            # out = grad: the call builds grad = cos(x), so pass that array as out.
            grad = np.cos(x)
            saved_fn = reference.softmax if op == "softmax_backward" else reference.log_softmax
            saved = np.moveaxis(saved_fn(np.moveaxis(x, axis, -1).astype(np.float64)), -1, axis)
            saved = saved.astype(dtype)
            fn = getattr(fastsoftmax, op)
            assert fn(grad, saved, axis=axis, out=grad, backend=backend) is grad
            assert_same_to_rounding(grad, expected, kind)
            assert fn(np.cos(x), saved, axis=axis, out=saved, backend=backend) is saved
            assert_same_to_rounding(saved, expected, kind)
        else:
            assert call(x, x, axis) is x
            assert_same_to_rounding(x, expected, kind)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_out(backend, dtype):
    x = sample(backend, dtype)
    expected = fastsoftmax.logsumexp(x, backend=backend)
    out = np.empty(len(x), dtype=dtype)
    assert fastsoftmax.logsumexp(x, out=out, backend=backend) is out
    assert_same_to_rounding(out, expected, "log")
    kept = np.empty((len(x), 1), dtype=dtype)
    assert fastsoftmax.logsumexp(x, keepdims=True, out=kept, backend=backend) is kept
    assert_same_to_rounding(kept[:, 0], expected, "log")
    big = np.full(3 * len(x), np.nan, dtype=dtype)
    view = big[::-3]
    assert fastsoftmax.logsumexp(x, out=view, backend=backend) is view
    assert_same_to_rounding(view, expected, "log")
    assert np.isnan(np.delete(big, np.arange(len(big) - 1, -1, -3))).all()
    # A column of x is a valid, separate output for the reduction over axis 0.
    y = sample(backend, dtype, rows=4, classes=4)
    expected = reference.logsumexp(y.T)
    row = np.empty(y.shape[1], dtype=dtype)
    fastsoftmax.logsumexp(y, axis=0, out=row, backend=backend)
    assert_matches_reference(row, expected, "log")


def test_out_with_requested_dtype(backend):
    x = sample(backend, np.float32)
    out = np.empty(x.shape, np.float64)
    assert fastsoftmax.softmax(x, dtype=np.float64, out=out, backend=backend) is out
    assert_matches_reference(out, reference.softmax(x), "probability")
    with pytest.raises(TypeError, match="dtype") as info:
        fastsoftmax.softmax(x, out=out, backend=backend)  # the result would be float32
    assert info.type is TypeError


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_grad_out(backend, dtype):
    logits = sample(backend, dtype)
    target = np.arange(len(logits)) % logits.shape[1]
    before = logits.copy()
    loss, expected = fastsoftmax.cross_entropy(logits, target, return_grad=True, backend=backend)
    for grad_out in (
        np.empty_like(logits),
        np.empty_like(logits, order="F"),
        strided_out(logits.shape, dtype)[0],
    ):
        result = fastsoftmax.cross_entropy(
            logits, target, return_grad=True, grad_out=grad_out, backend=backend
        )
        assert result[1] is grad_out
        assert_same_to_rounding(result[0], loss, "scaled")
        assert_same_to_rounding(grad_out, expected, "scaled")
    assert_same_values(logits, before)
    # In place: the logits are overwritten by the gradient; the loss is unchanged.
    in_place = logits.copy()
    loss_in_place, grad = fastsoftmax.cross_entropy(
        in_place, target, return_grad=True, grad_out=in_place, backend=backend
    )
    assert grad is in_place
    assert_same_to_rounding(loss_in_place, loss, "scaled")
    assert_same_to_rounding(in_place, expected, "scaled")
    # Probability targets, in place too.
    probs = reference.softmax(sample(backend, np.float64, seed=1)).astype(dtype)
    _, expected = fastsoftmax.cross_entropy(logits, probs, return_grad=True, backend=backend)
    in_place = logits.copy()
    fastsoftmax.cross_entropy(in_place, probs, return_grad=True, grad_out=in_place, backend=backend)
    assert_same_to_rounding(in_place, expected, "scaled")


def test_non_overlapping_views_of_one_buffer_are_fine(backend):
    n, c = max_side(backend, 4), max_side(backend, 6)
    buf = np.random.default_rng(2).normal(size=(n, 2 * c))
    x, out = buf[:, ::2], buf[:, 1::2]
    before = x.copy()
    fastsoftmax.softmax(x, out=out, backend=backend)
    assert_same_values(x, before)
    assert_matches_reference(out, reference.softmax(before), "probability")
    # logsumexp into a row of the buffer that x does not touch
    buf = np.random.default_rng(3).normal(size=(n + 1, c))
    fastsoftmax.logsumexp(buf[:-1], axis=0, out=buf[-1], backend=backend)
    assert_matches_reference(buf[-1], reference.logsumexp(buf[:-1].T), "log")


def overlapping_pairs(backend):
    """(x, out) pairs that share memory without being the same view."""
    n, c = max_side(backend, 4), max_side(backend, 5)
    buf = np.zeros((n + 1, c))
    yield buf[:-1], buf[1:]  # shifted by one row
    flat = np.zeros(n * c + 1)
    yield flat[:-1].reshape(n, c), flat[1:].reshape(n, c)  # shifted by one element
    square = np.zeros((c, c))
    yield square, square.T  # same memory, other order
    yield square[::-1], square  # reversed rows


def test_partial_overlap_raises(backend):
    for x, out in overlapping_pairs(backend):
        before = x.copy()
        for call in (
            lambda: fastsoftmax.softmax(x, out=out, backend=backend),
            lambda: fastsoftmax.log_softmax(x, out=out, backend=backend),
            lambda: fastsoftmax.softmax_backward(x, np.ones_like(x), out=out, backend=backend),
            lambda: fastsoftmax.softmax_backward(np.ones_like(x), x, out=out, backend=backend),
            lambda: fastsoftmax.log_softmax_backward(x, np.ones_like(x), out=out, backend=backend),
            lambda: fastsoftmax.log_softmax_backward(np.ones_like(x), x, out=out, backend=backend),
            lambda: fastsoftmax.cross_entropy(
                x, np.zeros(len(x), dtype=int), return_grad=True, grad_out=out, backend=backend
            ),
            lambda: fastsoftmax.cross_entropy(
                np.ones_like(x), x, return_grad=True, grad_out=out, backend=backend
            ),
        ):
            with pytest.raises(ValueError, match="partly overlaps") as info:
                call()
            assert info.type is ValueError
            assert_same_values(x, before)
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match="partly overlaps"):
        fastsoftmax.logsumexp(x, out=x[:, 0], backend=backend)


def out_error_cases(shape):
    """(out, exception type, message pattern) for an op whose result is float64 of `shape`."""
    wrong = shape[::-1]
    return [
        (
            np.empty(wrong),
            ValueError,
            rf"shape \({wrong[0]}, {wrong[1]}\).*shape \({shape[0]}, {shape[1]}\)",
        ),
        (np.empty(shape + (1,)), ValueError, "shape"),
        (np.empty(shape, np.float32), TypeError, "float32.*float64"),
        (np.empty(shape, ">f8"), TypeError, "dtype"),
        (np.empty(shape, np.int64), TypeError, "dtype"),
        (np.zeros(shape).tolist(), TypeError, "numpy.ndarray"),
        (_read_only(shape), ValueError, "read-only"),
    ]


def _read_only(shape):
    out = np.empty(shape)
    out.flags.writeable = False
    return out


def test_bad_out_raises(backend):
    shape = (2, 3)
    x = np.ones(shape)
    calls = {
        "softmax": lambda out: fastsoftmax.softmax(x, out=out, backend=backend),
        "log_softmax": lambda out: fastsoftmax.log_softmax(x, out=out, backend=backend),
        "softmax_backward": lambda out: fastsoftmax.softmax_backward(
            x, x, out=out, backend=backend
        ),
        "log_softmax_backward": lambda out: fastsoftmax.log_softmax_backward(
            x, x, out=out, backend=backend
        ),
        "cross_entropy": lambda out: fastsoftmax.cross_entropy(
            x, np.zeros(2, dtype=int), return_grad=True, grad_out=out, backend=backend
        ),
    }
    for name, call in calls.items():
        for out, error, pattern in out_error_cases(shape):
            with pytest.raises(error, match=pattern) as info:
                call(out)
            assert info.type is error, name
    with pytest.raises(ValueError, match=r"shape \(3,\).*shape \(2,\)"):
        fastsoftmax.logsumexp(x, out=np.empty(3), backend=backend)
    with pytest.raises(ValueError, match=r"shape \(2,\).*shape \(2, 1\)"):
        fastsoftmax.logsumexp(x, keepdims=True, out=np.empty(2), backend=backend)
    with pytest.raises(TypeError, match="dtype"):
        fastsoftmax.logsumexp(x, out=np.empty(2, np.float32), backend=backend)
    with pytest.raises(ValueError, match="read-only"):
        fastsoftmax.logsumexp(x, out=_read_only((2,)), backend=backend)


def test_read_only_input_is_fine(backend):
    x = sample(backend, np.float64)
    x.flags.writeable = False
    assert_matches_reference(
        fastsoftmax.softmax(x, backend=backend), reference.softmax(x), "probability"
    )
    loss, grad = fastsoftmax.cross_entropy(
        x, np.zeros(len(x), dtype=int), return_grad=True, backend=backend
    )
    assert grad.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        fastsoftmax.softmax(x, out=x, backend=backend)
