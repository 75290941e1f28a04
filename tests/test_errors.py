"""Every error path of the public API raises the documented exception type with a
message naming what is wrong, before any kernel runs (so never a Numba or cffi error)."""

import contextlib

import numpy as np
import pytest

import fastsoftmax
import reference
from strategies import assert_matches_reference

X = np.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])


@contextlib.contextmanager
def raises_exactly(error, pattern=None):
    """pytest.raises that also rejects subclasses (a Numba error deriving from the type)."""
    with pytest.raises(error, match=pattern) as info:
        yield info
    assert info.type is error, f"{info.type} is not exactly {error}"


TEMPERATURE_OPS = {
    "softmax": lambda x, **kw: fastsoftmax.softmax(x, **kw),
    "log_softmax": lambda x, **kw: fastsoftmax.log_softmax(x, **kw),
    "softmax_topk": lambda x, **kw: fastsoftmax.softmax_topk(x, 2, **kw),
}


@pytest.mark.parametrize("op", TEMPERATURE_OPS)
@pytest.mark.parametrize("temperature", [0.0, -1.0, -0.0, np.inf, -np.inf, np.nan])
def test_temperature_must_be_finite_and_positive(backend, op, temperature):
    with raises_exactly(ValueError, "temperature must be finite and > 0"):
        TEMPERATURE_OPS[op](X, temperature=temperature, backend=backend)


@pytest.mark.parametrize("op", TEMPERATURE_OPS)
@pytest.mark.parametrize("temperature", ["1", None, True, 1j, [1.0]])
def test_temperature_must_be_a_real_number(backend, op, temperature):
    with raises_exactly(TypeError, "temperature must be a real number"):
        TEMPERATURE_OPS[op](X, temperature=temperature, backend=backend)


def test_numpy_scalar_temperature_is_accepted(backend):
    for temperature in (np.float32(0.5), np.int64(2), 2):
        result = fastsoftmax.softmax(X, temperature=temperature, backend=backend)
        assert_matches_reference(result, reference.softmax(X, float(temperature)), "probability")


AXIS_OPS = {
    "softmax": lambda x, axis, backend: fastsoftmax.softmax(x, axis=axis, backend=backend),
    "log_softmax": lambda x, axis, backend: fastsoftmax.log_softmax(x, axis=axis, backend=backend),
    "logsumexp": lambda x, axis, backend: fastsoftmax.logsumexp(x, axis=axis, backend=backend),
    "softmax_topk": lambda x, axis, backend: fastsoftmax.softmax_topk(
        x, 1, axis=axis, backend=backend
    ),
    "softmax_backward": lambda x, axis, backend: fastsoftmax.softmax_backward(
        x, x, axis=axis, backend=backend
    ),
    "log_softmax_backward": lambda x, axis, backend: fastsoftmax.log_softmax_backward(
        x, x, axis=axis, backend=backend
    ),
}


@pytest.mark.parametrize("op", AXIS_OPS)
@pytest.mark.parametrize("axis", [2, -3, 100])
def test_axis_out_of_range_raises_axis_error(backend, op, axis):
    with raises_exactly(np.exceptions.AxisError, str(axis)):
        AXIS_OPS[op](X, axis, backend)


@pytest.mark.parametrize("op", AXIS_OPS)
def test_zero_dimensional_input_has_no_axis(backend, op):
    with raises_exactly(np.exceptions.AxisError):
        AXIS_OPS[op](np.array(1.0), -1, backend)


@pytest.mark.parametrize("op", AXIS_OPS)
@pytest.mark.parametrize("axis", [1.0, "1", None, True])
def test_axis_must_be_an_integer(backend, op, axis):
    with raises_exactly(TypeError, "axis must be an integer"):
        AXIS_OPS[op](X, axis, backend)


def test_numpy_integer_axis_is_accepted(backend):
    result = fastsoftmax.softmax(X, axis=np.int64(0), backend=backend)
    assert_matches_reference(result, reference.softmax(X.T).T, "probability")


@pytest.mark.parametrize("k", [0, -1, 4, 10**12])
def test_k_outside_one_to_c(backend, k):
    with raises_exactly(
        ValueError, rf"k must be between 1 and the number of classes \(3\), got {k}"
    ):
        fastsoftmax.softmax_topk(X, k, backend=backend)


@pytest.mark.parametrize("k", [1.0, "2", None, True, np.float64(2)])
def test_k_must_be_an_integer(backend, k):
    with raises_exactly(TypeError, "k must be an integer"):
        fastsoftmax.softmax_topk(X, k, backend=backend)


def test_k_is_checked_against_the_chosen_axis(backend):
    with raises_exactly(ValueError, r"number of classes \(2\)"):
        fastsoftmax.softmax_topk(X, 3, axis=0, backend=backend)
    probs, _ = fastsoftmax.softmax_topk(X, np.int32(2), axis=0, backend=backend)
    assert probs.shape == (2, 3)


@pytest.mark.parametrize("op", ["softmax_backward", "log_softmax_backward"])
def test_backward_shape_mismatch_names_both_shapes(backend, op):
    name = "y" if op == "softmax_backward" else "logp"
    with raises_exactly(ValueError, rf"grad has shape \(2, 3\) but {name} has shape \(3, 2\)"):
        getattr(fastsoftmax, op)(X, X.T.copy(), backend=backend)


def test_masked_arrays_are_refused(backend):
    masked = np.ma.masked_array(X, mask=X > 3)
    with raises_exactly(TypeError, "masked array"):
        fastsoftmax.softmax(masked, backend=backend)
    with raises_exactly(TypeError, "masked array"):
        fastsoftmax.cross_entropy(X, np.ma.masked_array([0, 1]), backend=backend)


# --- cross_entropy ------------------------------------------------------------


def ce(backend, logits=X, target=(0, 2), **kw):
    return fastsoftmax.cross_entropy(logits, np.asarray(target), backend=backend, **kw)


@pytest.mark.parametrize(
    "target, message",
    [
        ((0, 3), r"target\[1\] = 3 is outside \[0, 3\) and is not ignore_index \(-100\)"),
        ((-1, 3), r"target\[0\] = -1 is outside"),
        ((0, -101), r"target\[1\] = -101 is outside"),
        ((2**40, 0), rf"target\[0\] = {2**40} is outside"),
    ],
)
def test_target_out_of_range_names_the_first_bad_row_and_value(backend, target, message):
    with raises_exactly(ValueError, message):
        ce(backend, target=target)


def test_target_error_in_a_batch_of_several_dimensions(backend):
    logits = np.zeros((2, 3, 4))
    target = np.zeros((2, 3), dtype=np.int64)
    target[1, 1], target[1, 2] = 4, -7
    with raises_exactly(ValueError, r"target\[1, 1\] = 4 is outside \[0, 4\)"):
        ce(backend, logits=logits, target=target)
    target[1, 1] = 5
    with raises_exactly(ValueError, r"ignore_index \(5\)") as info:
        ce(backend, logits=logits, target=target, ignore_index=5)
    assert "target[1, 2] = -7" in str(info.value)


def test_target_shape_mismatch_names_both_shapes(backend):
    with raises_exactly(ValueError, r"shape \(3,\).*batch shape \(2,\)"):
        ce(backend, target=(0, 1, 2))
    with raises_exactly(ValueError, r"shape \(2, 1\).*batch shape \(2,\)"):
        ce(backend, target=[[0], [1]])
    with raises_exactly(
        ValueError, r"probability target has shape \(2, 2\) but logits has shape \(2, 3\)"
    ):
        ce(backend, target=np.full((2, 2), 0.5))


@pytest.mark.parametrize(
    "target, pattern",
    [
        (np.array([True, False]), "bool"),
        (np.array(["a", "b"]), "<U1"),
        (np.array([1j, 0]), "complex128"),
        (np.array([None, None]), "object"),
    ],
)
def test_target_of_the_wrong_kind(backend, target, pattern):
    with raises_exactly(TypeError, pattern):
        ce(backend, target=target)


@pytest.mark.parametrize(
    "weight, error, pattern",
    [
        ([1.0, 2.0], ValueError, r"weight has shape \(2,\) but must be \(3,\)"),
        ([[1.0, 2.0, 3.0]], ValueError, r"weight has shape \(1, 3\)"),
        ([1.0, np.nan, 1.0], ValueError, "NaN or infinite"),
        ([1.0, np.inf, 1.0], ValueError, "NaN or infinite"),
        (np.array([1, 2, 3j]), TypeError, "weight must be real numbers"),
        (np.array(["a", "b", "c"]), TypeError, "weight must be real numbers"),
    ],
)
def test_bad_weight(backend, weight, error, pattern):
    with raises_exactly(error, pattern):
        ce(backend, weight=weight)


@pytest.mark.parametrize(
    "options, error, pattern",
    [
        (
            dict(reduction="avg"),
            ValueError,
            r"reduction must be one of \('mean', 'sum', 'none'\), got 'avg'",
        ),
        (dict(reduction=None), ValueError, "reduction must be one of"),
        (dict(label_smoothing=-0.1), ValueError, r"label_smoothing must be in \[0, 1\]"),
        (dict(label_smoothing=1.5), ValueError, r"label_smoothing must be in \[0, 1\]"),
        (dict(label_smoothing=np.nan), ValueError, r"label_smoothing must be in \[0, 1\]"),
        (dict(label_smoothing="0.1"), TypeError, "label_smoothing must be a real number"),
        (dict(z_loss=-1e-4), ValueError, "z_loss must be finite and >= 0"),
        (dict(z_loss=np.inf), ValueError, "z_loss must be finite and >= 0"),
        (dict(z_loss=np.nan), ValueError, "z_loss must be finite and >= 0"),
        (dict(z_loss=None), TypeError, "z_loss must be a real number"),
        (dict(ignore_index=1.0), TypeError, "ignore_index must be an integer"),
        (dict(ignore_index=True), TypeError, "ignore_index must be an integer, got bool"),
        (dict(grad_out=np.empty((2, 3))), ValueError, "grad_out is given but return_grad is False"),
    ],
)
def test_bad_cross_entropy_options(backend, options, error, pattern):
    with raises_exactly(error, pattern):
        ce(backend, **options)


def test_logits_need_a_class_axis(backend):
    with raises_exactly(ValueError, "at least one dimension"):
        ce(backend, logits=np.array(1.0), target=0)
    with raises_exactly(ValueError, "no classes"):
        ce(backend, logits=np.zeros((2, 0)), target=(0, 0))


def test_cross_entropy_non_real_logits(backend):
    with raises_exactly(TypeError, "complex128"):
        ce(backend, logits=X.astype(complex))


def test_errors_leave_the_inputs_alone(backend):
    x = X.copy()
    target = np.array([0, 5])
    with pytest.raises(ValueError):
        fastsoftmax.cross_entropy(x, target, return_grad=True, grad_out=x, backend=backend)
    np.testing.assert_array_equal(x, X)
