"""Helpers shared by the tests: per-backend size limits, hypothesis strategies and
the accuracy checks that compare a backend's result with ``reference``.

The accuracy bounds are those of DESIGN.md:

- float32 probabilities ``p`` within relative error ``1e-6 + 1.2e-7 * |ln p|``
  for ``p > 1e-30`` (two ulps of the exponent's argument plus rounding of the
  sum); at or below ``1e-30`` the contract gives no relative bound, so there
  the check is absolute (``1e-30``).
- float32 log-probabilities within ``1e-5`` absolute where ``|ref| < 100``;
  beyond that the absolute bound would be below one ulp, so there the check is
  relative (``1e-6``, about eight ulps).
- float64 within ``1e-13`` relative. Probabilities at or below ``1e-150`` are
  checked absolutely (``1e-150``): there the exponent's argument exceeds 345
  and its own rounding alone approaches ``1e-13``. Log-probabilities and
  log-sum-exps near zero (``|ref| < 1``) are checked absolutely (``1e-13``),
  since they are differences of O(1) quantities whose relative error is
  meaningless there.

float16 results are computed in float32 and then rounded to float16, so their
bound adds half a float16 ulp (relative ``2**-11``, absolute ``2**-25`` for
subnormals) to the float32 one.
"""

import math
import warnings

import hypothesis
import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import strategies as st

FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)
FLOAT16 = np.dtype(np.float16)

# The CUDA simulator runs every CUDA thread as a Python thread: each call
# costs tenths of a second, so properties run few, small examples there.
SIMULATED_BACKENDS = ("cuda",)
SIMULATED_MAX_EXAMPLES = 4
SIMULATED_MAX_SIDE = 4


def is_simulated(backend):
    """True for backends whose calls are slow enough to need tiny inputs."""
    return backend in SIMULATED_BACKENDS


def max_side(backend, side):
    """The largest array side a test may use on `backend`."""
    return min(side, SIMULATED_MAX_SIDE) if is_simulated(backend) else side


def property_test(backend, *strategies, **named):
    """Decorate an inner check as a hypothesis property sized for `backend`.

    Use inside a test that takes the ``backend`` fixture, then call the result::

        @property_test(backend, logits(backend))
        def check(x): ...
        check()
    """
    limits = {}
    if is_simulated(backend):
        current = hypothesis.settings.default.max_examples
        limits["max_examples"] = min(current, SIMULATED_MAX_EXAMPLES)

    def decorate(check):
        return hypothesis.settings(**limits)(hypothesis.given(*strategies, **named)(check))

    return decorate


def compute_dtype(dtype):
    """The dtype a result of `dtype` is computed in (float16 in float32)."""
    return FLOAT64 if np.dtype(dtype) == FLOAT64 else FLOAT32


# --- strategies --------------------------------------------------------------


def finite_floats(dtype, bound):
    """Finite floats of `dtype` in [-bound, bound], subnormals included."""
    dtype = np.dtype(dtype)
    bound = float(dtype.type(bound))  # hypothesis wants bounds exact in the width
    return st.floats(-bound, bound, width=8 * dtype.itemsize, allow_nan=False, allow_infinity=False)


def logits(backend, dtype=np.float64, bound=50.0, max_dims=2, max_classes=40, min_classes=1):
    """Finite logit arrays (class axis last) sized for `backend`."""
    shapes = hnp.array_shapes(
        min_dims=1, max_dims=max_dims, min_side=1, max_side=max_side(backend, 6)
    ).flatmap(
        lambda lead: st.integers(min_classes, max_side(backend, max_classes)).map(
            lambda c: lead[:-1] + (c,)
        )
    )
    return hnp.arrays(np.dtype(dtype), shapes, elements=finite_floats(dtype, bound))


def special_logits(backend, dtype=np.float64, max_classes=12):
    """Logit arrays mixing finite values, ``-inf``, ``+inf`` and NaN."""
    dtype = np.dtype(dtype)
    value = st.one_of(
        finite_floats(dtype, 30.0),
        st.sampled_from([-np.inf, np.inf, np.nan, 0.0]),
        st.just(-np.inf),
    )
    shapes = st.tuples(
        st.integers(1, max_side(backend, 5)), st.integers(1, max_side(backend, max_classes))
    )
    return hnp.arrays(dtype, shapes, elements=value)


@st.composite
def rows_of_runs(draw, dtype=np.float64, max_rows=3, max_classes=5000):
    """Long rows of finite values starting with up to 8 runs (each up to 1500
    long) of one kind: finite, ``-inf``, ``+inf`` or NaN, so that whole chunks
    of a row may hold special values only (kernels reduce long rows a chunk at
    a time)."""
    dtype = np.dtype(dtype)
    n_rows = draw(st.integers(1, max_rows))
    n = draw(st.integers(1025, max_classes))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n_rows, n)) * 4).astype(dtype)
    kinds = [None, -np.inf, -np.inf, np.inf, np.nan]  # -inf twice: long runs of it are the rarest
    run = st.tuples(st.sampled_from(kinds), st.integers(1, 1500))
    for r in range(n_rows):
        start = 0
        for fill, length in draw(st.lists(run, min_size=1, max_size=8)):
            if fill is not None:  # None: the finite values already there
                x[r, start : start + length] = fill
            start += length
    return x


def temperatures():
    return st.one_of(st.just(1.0), st.floats(0.05, 20.0))


# --- reference comparisons ---------------------------------------------------


def _tolerance_f32_probability(ref):
    large = ref > 1e-30
    log_p = np.abs(np.log(np.where(large, ref, 1.0)))
    return np.where(large, (1e-6 + 1.2e-7 * log_p) * ref, 1e-30)


def _tolerance_f64_probability(ref):
    return np.where(ref > 1e-150, 1e-13 * ref, 1e-150)


def _tolerance_f32_log(ref):
    return np.where(np.abs(ref) < 100, 1e-5, 1e-6 * np.abs(ref))


def _tolerance_f64_log(ref):
    return 1e-13 * np.maximum(np.abs(ref), 1.0)


def _half_rounding(ref):
    return np.abs(ref) * 2.0**-11 + 2.0**-25


_TOLERANCES = {
    ("probability", FLOAT32): _tolerance_f32_probability,
    ("probability", FLOAT64): _tolerance_f64_probability,
    ("log", FLOAT32): _tolerance_f32_log,
    ("log", FLOAT64): _tolerance_f64_log,
}


def assert_matches_reference(actual, expected, kind, dtype=None):
    """Check `actual` against the float64 `expected` within the contract's bound.

    `kind` is ``"probability"`` (softmax, top-k probabilities) or ``"log"``
    (log_softmax, logsumexp). `dtype` is the result dtype (default: that of
    `actual`). Special values must match exactly: NaN where `expected` is NaN,
    the same infinity where it is infinite, and exact zeros where it is zero.
    """
    actual = np.asarray(actual)
    dtype = np.dtype(dtype if dtype is not None else actual.dtype)
    assert actual.dtype == dtype, (actual.dtype, dtype)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    got = actual.astype(np.float64)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg="NaN positions differ")
    inf = np.isinf(expected)
    np.testing.assert_array_equal(got[inf], expected[inf], err_msg="infinities differ")
    if kind == "probability":
        zero = expected == 0
        np.testing.assert_array_equal(got[zero], 0.0, err_msg="exact zeros differ")
    finite = ~nan & ~inf
    ref = expected[finite]
    tolerance = _TOLERANCES[kind, compute_dtype(dtype)](
        np.abs(ref) if kind == "probability" else ref
    )
    if dtype == FLOAT16:
        tolerance = tolerance + _half_rounding(ref)
    error = np.abs(got[finite] - ref)
    bad = error > tolerance
    if bad.any():
        worst = int(np.argmax(error - tolerance))
        raise AssertionError(
            f"{int(bad.sum())} of {ref.size} {kind} values outside the {dtype} bound; "
            f"worst: got {got[finite][worst]!r}, expected {ref[worst]!r}, "
            f"error {error[worst]:.3g} > tolerance {tolerance[worst]:.3g}"
        )


def assert_close_scaled(actual, expected, scale, dtype, rtol=None):
    """``|actual - expected| <= rtol * (|expected| + scale)`` elementwise.

    For results formed by cancellation (gradients, losses) whose natural error
    is relative to the size of the terms, `scale`, not of the result. Default
    `rtol` is 2e-6 for float32 results and 1e-13 for float64; float16 adds its
    rounding, and every dtype the smallest normal number of the compute dtype
    (below it the grid is absolute). NaN must match NaN, infinities exactly.
    """
    actual = np.asarray(actual)
    dtype = np.dtype(dtype)
    assert actual.dtype == dtype, (actual.dtype, dtype)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if rtol is None:
        rtol = 1e-13 if compute_dtype(dtype) == FLOAT64 else 2e-6
    got = actual.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected), err_msg="NaN positions differ")
    inf = np.isinf(expected)
    np.testing.assert_array_equal(got[inf], expected[inf], err_msg="infinities differ")
    finite = np.isfinite(expected)
    scale = np.broadcast_to(np.asarray(scale, dtype=np.float64), expected.shape)[finite]
    ref = expected[finite]
    # Below the smallest normal number the grid is absolute; results there
    # (subnormal, possibly flushed to zero) are checked absolutely.
    tolerance = rtol * (np.abs(ref) + scale) + np.finfo(compute_dtype(dtype)).tiny
    if dtype == FLOAT16:
        tolerance = tolerance + _half_rounding(ref)
    error = np.abs(got[finite] - ref)
    bad = error > tolerance
    if bad.any():
        worst = int(np.argmax(error - tolerance))
        raise AssertionError(
            f"{int(bad.sum())} of {ref.size} values outside rtol={rtol:g}; worst: got "
            f"{got[finite][worst]!r}, expected {ref[worst]!r}, error {error[worst]:.3g} "
            f"> tolerance {tolerance[worst]:.3g}"
        )


def assert_same_to_rounding(actual, expected, kind, dtype=None):
    """Two results of one computation agree up to the contract's rounding.

    Kernels may take a vector or a scalar path depending on where their arrays
    lie in memory (a runtime overlap check between input and output), which
    changes the order of a sum; so repeated calls can differ in the last bits.
    `kind` is ``"probability"`` or ``"log"`` (the accuracy bound around
    `expected`) or ``"scaled"`` (relative to the largest value of `expected`,
    for gradients and losses).
    """
    dtype = np.dtype(dtype if dtype is not None else np.asarray(actual).dtype)
    expected = np.asarray(expected, dtype=np.float64)
    if kind == "scaled":
        finite = np.isfinite(expected)
        size = np.abs(expected[finite]).max() if finite.any() else 0.0
        assert_close_scaled(actual, expected, size, dtype)
    else:
        assert_matches_reference(actual, expected, kind, dtype)


def assert_same_values(a, b):
    """Bitwise-equal results (NaN equal to NaN), same dtype and shape."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
    np.testing.assert_array_equal(a, b)


# --- cross_entropy -------------------------------------------------------------


def logit_row_sizes(logits):
    """Per row: the spread of the finite logits and their largest magnitude."""
    z = np.asarray(logits, np.float64)
    finite = np.where(np.isfinite(z), z, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # rows without finite values
        spread = np.nan_to_num(np.nanmax(finite, axis=-1) - np.nanmin(finite, axis=-1))
        magnitude = np.nan_to_num(np.nanmax(np.abs(finite), axis=-1))
    return spread, magnitude


def assert_cross_entropy_close(
    loss, grad, expected_loss, expected_grad, logits, target, reduction, **options
):
    """cross_entropy's loss and gradient against float64 values, within error
    bounds relative to the size of their terms.

    A row's loss is made of log-probabilities, whose size is the spread of the
    row's logits plus ln C (not the logits' size: the loss must not lose
    accuracy when all logits share a large offset), times the target weight
    (and the target's mass for probability targets), plus ``z_loss * lse**2``.
    A gradient row is ``p * (sum of weights) - (weights at the targets)`` plus
    ``2 * z_loss * lse * p``. The bound is ``1e-5`` of that size in float32 (the
    log-probability bound) and ``1e-13`` in float64.
    """
    dtype = np.asarray(grad if grad is not None else loss).dtype
    rtol = 1e-13 if compute_dtype(dtype) == FLOAT64 else 1e-5
    weight = options.get("weight")
    z_loss = options.get("z_loss", 0.0)
    target = np.asarray(target)
    probability_target = target.dtype.kind == "f"
    w_max = 1.0 if weight is None else float(np.max(np.abs(weight)))
    mass = (
        float(np.abs(target.astype(np.float64)).sum(axis=-1).max(initial=0.0))
        if probability_target
        else 1.0
    )
    spread, magnitude = logit_row_sizes(logits)
    log_c = math.log(max(np.shape(logits)[-1], 1))
    lse_size = 1.0 + magnitude + log_c
    row_loss = w_max * mass * (1.0 + spread + log_c) + z_loss * lse_size**2
    row_grad = w_max * mass + 2 * z_loss * lse_size
    if reduction == "mean":
        if probability_target:
            denominator = float(np.prod(target.shape[:-1]))
        else:
            kept = target != options.get("ignore_index", -100)
            denominator = float(
                kept.sum() if weight is None else np.asarray(weight, np.float64)[target[kept]].sum()
            )
        denominator = denominator or 1.0
        loss_size, grad_size = row_loss.sum() / denominator, row_grad / denominator
    elif reduction == "sum":
        loss_size, grad_size = row_loss.sum(), row_grad
    else:
        loss_size, grad_size = row_loss, row_grad
    assert_close_scaled(loss, expected_loss, loss_size, dtype, rtol)
    if grad is not None:
        assert_close_scaled(grad, expected_grad, np.asarray(grad_size)[..., None], dtype, rtol)
