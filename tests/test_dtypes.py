"""dtype rules: float32/float64 native, 16-bit floats computed in float32, integers
and bools as float64, ``dtype=`` overrides, everything else a TypeError naming the dtype."""

import numpy as np
import pytest

import fastsoftmax
import reference
from strategies import assert_matches_reference, assert_same_to_rounding, max_side

RNG = np.random.default_rng(11)

# Same-shape and reducing ops with one array argument, called uniformly.
KINDS = {"softmax": "probability", "log_softmax": "log", "logsumexp": "log"}

UNARY_OPS = {
    "softmax": lambda x, **kw: fastsoftmax.softmax(x, **kw),
    "log_softmax": lambda x, **kw: fastsoftmax.log_softmax(x, **kw),
    "logsumexp": lambda x, **kw: fastsoftmax.logsumexp(x, **kw),
}


def sample(backend, dtype, scale=3.0):
    x = RNG.normal(scale=scale, size=(max_side(backend, 4), max_side(backend, 9)))
    return x.astype(dtype)


@pytest.mark.parametrize("op", UNARY_OPS)
@pytest.mark.parametrize(
    "in_dtype, out_dtype",
    [
        ("f2", "f2"),
        ("f4", "f4"),
        ("f8", "f8"),
        (">f2", "f2"),
        (">f4", "f4"),
        (">f8", "f8"),
        ("i1", "f8"),
        ("i4", "f8"),
        (">i8", "f8"),
        ("u1", "f8"),
        ("u8", "f8"),
        ("?", "f8"),
    ],
)
def test_result_dtype(backend, op, in_dtype, out_dtype):
    x = sample(backend, np.float64, scale=1.5)
    if np.dtype(in_dtype).kind == "u":
        x = np.abs(x)
    x = (x > 0) if in_dtype == "?" else x.astype(in_dtype)
    result = UNARY_OPS[op](x, backend=backend)
    assert result.dtype == np.dtype(out_dtype)
    assert result.dtype.isnative


@pytest.mark.parametrize("op", UNARY_OPS)
@pytest.mark.parametrize("int_dtype", ["i1", "i8", "u2", "?"])
def test_integers_and_bools_are_computed_as_float64(backend, op, int_dtype):
    x = RNG.integers(
        0, 2 if int_dtype == "?" else 100, size=(max_side(backend, 3), max_side(backend, 7))
    )
    x = x.astype(int_dtype)
    result = UNARY_OPS[op](x, backend=backend)
    assert result.dtype == np.float64
    assert_same_to_rounding(result, UNARY_OPS[op](x.astype(np.float64), backend=backend), KINDS[op])


@pytest.mark.parametrize("op", UNARY_OPS)
def test_float16_is_computed_in_float32(backend, op):
    # Summing 4096 ones in float16 stalls at 2048 (2049 is not representable),
    # so a float16 computation would give 1/2048 and ln(2048).
    n = max_side(backend, 4096)
    x = np.zeros((1, n), dtype=np.float16)
    result = UNARY_OPS[op](x, backend=backend)
    assert result.dtype == np.float16
    expected = {
        "softmax": np.float16(1.0 / n),
        "log_softmax": np.float16(-np.log(n)),
        "logsumexp": np.float16(np.log(n)),
    }[op]
    assert (result == expected).all(), (result, expected)


@pytest.mark.parametrize("op", UNARY_OPS)
def test_float16_equals_the_float32_result_rounded(backend, op):
    x = sample(backend, np.float16)
    x[0, 0] = -np.inf
    result = UNARY_OPS[op](x, backend=backend)
    # The float32 result, rounded once to float16.
    assert_same_to_rounding(result, UNARY_OPS[op](x.astype(np.float32), backend=backend), KINDS[op])
    assert_matches_reference(result, getattr(reference, op)(x), KINDS[op])


@pytest.mark.parametrize("op", UNARY_OPS)
@pytest.mark.parametrize(
    "in_dtype, requested, computed_in",
    [
        ("f4", "f8", "f8"),
        ("f8", "f4", "f4"),
        ("f8", "f2", "f4"),
        ("f2", "f4", "f4"),
        ("f2", "f8", "f8"),
        ("i4", "f4", "f4"),
    ],
)
def test_dtype_argument(backend, op, in_dtype, requested, computed_in):
    x = sample(backend, in_dtype)
    result = UNARY_OPS[op](x, dtype=requested, backend=backend)
    assert result.dtype == np.dtype(requested)
    # Computed in `computed_in` from the input converted to it, then rounded.
    same = UNARY_OPS[op](x.astype(computed_in), backend=backend)
    assert same.dtype == np.dtype(computed_in)
    assert_same_to_rounding(result, same, KINDS[op])
    assert_matches_reference(result, getattr(reference, op)(x), KINDS[op])


@pytest.mark.parametrize("op", UNARY_OPS)
@pytest.mark.parametrize("bad", [np.int32, np.complex128, "U3", object, "no such dtype"])
def test_dtype_argument_must_be_floating(backend, op, bad):
    with pytest.raises(TypeError, match="dtype must be a floating dtype") as info:
        UNARY_OPS[op](np.zeros((2, 3)), dtype=bad, backend=backend)
    assert info.type is TypeError


def nonreal_inputs():
    return [
        pytest.param(np.ones((2, 3), dtype=np.complex128), "complex128", id="complex128"),
        pytest.param(np.ones((2, 3), dtype=np.complex64), "complex64", id="complex64"),
        pytest.param(np.ones((2, 3), dtype=object), "object", id="object"),
        pytest.param(np.full((2, 3), "a"), "<U1", id="str"),
        pytest.param(np.full((2, 3), b"a"), "S1", id="bytes"),
        pytest.param(np.zeros((2, 3), dtype="M8[s]"), "datetime64", id="datetime"),
    ]


def call_every_op(x, backend):
    """Call every public op with `x` as its main array argument (one by one)."""
    real = np.ones(x.shape)
    yield lambda: fastsoftmax.softmax(x, backend=backend)
    yield lambda: fastsoftmax.log_softmax(x, backend=backend)
    yield lambda: fastsoftmax.logsumexp(x, backend=backend)
    yield lambda: fastsoftmax.softmax_topk(x, 1, backend=backend)
    yield lambda: fastsoftmax.softmax_backward(x, real, backend=backend)
    yield lambda: fastsoftmax.softmax_backward(real, x, backend=backend)
    yield lambda: fastsoftmax.log_softmax_backward(x, real, backend=backend)
    yield lambda: fastsoftmax.log_softmax_backward(real, x, backend=backend)
    yield lambda: fastsoftmax.cross_entropy(x, np.zeros(x.shape[:-1], dtype=int), backend=backend)


@pytest.mark.parametrize("x, name", nonreal_inputs())
def test_non_real_input_raises_type_error_naming_the_dtype(backend, x, name):
    for call in call_every_op(x, backend):
        with pytest.raises(TypeError, match=name) as info:
            call()
        assert info.type is TypeError


def test_lists_are_accepted(backend):
    result = fastsoftmax.softmax([[0.0, np.log(3.0)]], backend=backend)
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, [[0.25, 0.75]], rtol=1e-15)
    assert fastsoftmax.logsumexp([0, 0], backend=backend) == pytest.approx(np.log(2))


@pytest.mark.parametrize(
    "grad_dtype, saved_dtype, out_dtype",
    [
        ("f4", "f4", "f4"),
        ("f8", "f8", "f8"),
        ("f4", "f8", "f8"),
        ("f2", "f2", "f2"),
        ("f2", "f4", "f4"),
        ("i8", "f4", "f8"),
    ],
)
@pytest.mark.parametrize("op", ["softmax_backward", "log_softmax_backward"])
def test_backward_result_dtype_is_the_promoted_dtype(
    backend, op, grad_dtype, saved_dtype, out_dtype
):
    shape = (max_side(backend, 3), max_side(backend, 6))
    grad = RNG.integers(-3, 4, size=shape).astype(grad_dtype)
    saved = reference.softmax(RNG.normal(size=shape))
    if op == "log_softmax_backward":
        saved = np.log(saved)
    saved = saved.astype(saved_dtype)
    result = getattr(fastsoftmax, op)(grad, saved, backend=backend)
    assert result.dtype == np.dtype(out_dtype)
    compute = np.float64 if out_dtype == "f8" else np.float32
    same = getattr(fastsoftmax, op)(grad.astype(compute), saved.astype(compute), backend=backend)
    assert_same_to_rounding(result, same, "scaled")


@pytest.mark.parametrize(
    "in_dtype, out_dtype", [("f2", "f2"), ("f4", "f4"), (">f8", "f8"), ("i2", "f8")]
)
def test_topk_probability_dtype_and_int64_indices(backend, in_dtype, out_dtype):
    x = sample(backend, in_dtype)
    probs, index = fastsoftmax.softmax_topk(x, 2, backend=backend)
    assert probs.dtype == np.dtype(out_dtype) and index.dtype == np.int64


@pytest.mark.parametrize(
    "in_dtype, out_dtype", [("f2", "f2"), ("f4", "f4"), (">f4", "f4"), ("f8", "f8"), ("i4", "f8")]
)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_dtypes(backend, in_dtype, out_dtype, reduction):
    logits = sample(backend, in_dtype)
    target = np.arange(len(logits)) % logits.shape[1]
    loss, grad = fastsoftmax.cross_entropy(
        logits, target, reduction=reduction, return_grad=True, backend=backend
    )
    assert grad.dtype == np.dtype(out_dtype)
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.dtype == np.dtype(out_dtype)
    else:
        # A NumPy scalar of the result dtype, not a 0-d array or a Python float.
        assert type(loss) is np.dtype(out_dtype).type


def test_bfloat16_is_computed_in_float32(backend):
    # Runs where ml_dtypes is installed (it is optional, like bfloat16 itself).
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    x = sample(backend, np.float32).astype(bf16)
    x32 = x.astype(np.float32)

    def close(result, computed):
        # bfloat16 keeps 8 bits: the float32 result rounded once is within 2**-9.
        assert result.dtype == bf16
        np.testing.assert_allclose(
            result.astype(np.float64), computed.astype(np.float64), rtol=2.0**-8, atol=1e-6
        )

    for call in UNARY_OPS.values():
        close(call(x, backend=backend), call(x32, backend=backend))
    probs, index = fastsoftmax.softmax_topk(x, 2, backend=backend)
    probs32, index32 = fastsoftmax.softmax_topk(x32, 2, backend=backend)
    close(probs, probs32)
    np.testing.assert_array_equal(index, index32)
    y = fastsoftmax.softmax(x, backend=backend)
    close(
        fastsoftmax.softmax_backward(x, y, backend=backend),
        fastsoftmax.softmax_backward(x32, y.astype(np.float32), backend=backend),
    )
    target = np.arange(len(x)) % x.shape[1]
    loss, grad = fastsoftmax.cross_entropy(x, target, return_grad=True, backend=backend)
    loss32, grad32 = fastsoftmax.cross_entropy(x32, target, return_grad=True, backend=backend)
    assert type(loss) is bf16.type
    close(np.asarray(loss), np.asarray(loss32))
    close(grad, grad32)
