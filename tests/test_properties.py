"""Hypothesis properties on every backend: rows sum to 1, shift invariance,
log_softmax = log(softmax) where finite, consistency with logsumexp, and
gradients against central finite differences. Every property also checks that
the input was left unchanged."""

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import strategies as st

import fastsoftmax
from strategies import assert_same_to_rounding, logits, max_side, property_test, temperatures

DTYPES = [np.float32, np.float64]


def float_tolerance(dtype, float32, float64):
    return float64 if np.dtype(dtype) == np.float64 else float32


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_sum_to_one(backend, dtype):
    @property_test(backend, logits(backend, dtype, bound=200.0, max_dims=3), temperatures())
    def check(x, temperature):
        before = x.copy()
        p = fastsoftmax.softmax(x, temperature=temperature, backend=backend)
        assert (p >= 0).all() and (p <= 1).all()
        total = p.astype(np.float64).sum(axis=-1)
        # Each p is within 1e-6 + 1.2e-7 |ln p| relative, and sum(p |ln p|) <= ln C.
        log_c = np.log(x.shape[-1])
        tolerance = float_tolerance(dtype, 2e-6 + 1.2e-7 * log_c, 2e-13)
        np.testing.assert_allclose(total, 1.0, rtol=0, atol=tolerance)
        np.testing.assert_array_equal(x, before)

    check()


def exactly_shiftable(backend, dtype):
    """Logits on a 1/64 grid in [-50, 50] and an integer shift in [-1000, 1000]:
    x + shift is exact in float32 and float64, so the rows are truly shifted."""
    grid = st.integers(-50 * 64, 50 * 64).map(lambda n: n / 64)
    shapes = st.tuples(st.integers(1, max_side(backend, 5)), st.integers(1, max_side(backend, 40)))
    return hnp.arrays(np.dtype(dtype), shapes, elements=grid), st.integers(-1000, 1000)


@pytest.mark.parametrize("dtype", DTYPES)
def test_shift_invariance(backend, dtype):
    x_strategy, shift_strategy = exactly_shiftable(backend, dtype)

    @property_test(backend, x_strategy, shift_strategy, temperatures())
    def check(x, shift, temperature):
        shifted = x + dtype(shift)
        assert (shifted - dtype(shift) == x).all()
        # (x + c) - (m + c) is exactly x - m here: the shifted rows must give
        # the unshifted rows' answer, to the contract's rounding.
        for op, kind in ((fastsoftmax.softmax, "probability"), (fastsoftmax.log_softmax, "log")):
            a = op(x, temperature=temperature, backend=backend)
            b = op(shifted, temperature=temperature, backend=backend)
            assert_same_to_rounding(b, a, kind)
        lse = fastsoftmax.logsumexp(x, backend=backend).astype(np.float64)
        lse_shifted = fastsoftmax.logsumexp(shifted, backend=backend).astype(np.float64)
        tolerance = float_tolerance(dtype, 1e-5 + 1e-6 * abs(shift), 1e-13 * (1 + abs(shift)))
        np.testing.assert_allclose(lse_shifted - shift, lse, rtol=0, atol=tolerance)

    check()


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_is_log_of_softmax_where_finite(backend, dtype):
    @property_test(backend, logits(backend, dtype, bound=100.0, max_dims=2), temperatures())
    def check(x, temperature):
        p = fastsoftmax.softmax(x, temperature=temperature, backend=backend).astype(np.float64)
        logp = fastsoftmax.log_softmax(x, temperature=temperature, backend=backend).astype(
            np.float64
        )
        usable = p > float_tolerance(dtype, 1e-30, 1e-300)
        got = np.log(p[usable])
        want = logp[usable]
        # log(p) carries p's relative error; log_softmax its own absolute one.
        tolerance = float_tolerance(dtype, 2e-5 + 2e-6 * np.abs(want), 3e-13 * (1 + np.abs(want)))
        assert (np.abs(got - want) <= tolerance).all(), np.max(np.abs(got - want) - tolerance)
        # Where p underflowed to 0, log_softmax is still finite and very negative.
        assert np.isfinite(logp).all()
        assert (logp[~usable] < float_tolerance(dtype, -60, -680)).all()

    check()


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_agrees_with_log_softmax(backend, dtype):
    @property_test(backend, logits(backend, dtype, bound=100.0, max_dims=2))
    def check(x):
        lse = fastsoftmax.logsumexp(x, backend=backend).astype(np.float64)
        logp = fastsoftmax.log_softmax(x, backend=backend).astype(np.float64)
        x64 = x.astype(np.float64)
        m = x64.max(axis=-1)
        slack = float_tolerance(dtype, 1e-5, 1e-13) * (1 + np.abs(m))
        assert (lse >= m - slack).all()
        assert (lse <= m + np.log(x.shape[-1]) + slack).all()
        size = 1 + np.abs(x64) + np.abs(lse)[..., None]
        tolerance = float_tolerance(dtype, 2e-5 * size, 3e-13 * size)
        assert (np.abs(logp - (x64 - lse[..., None])) <= tolerance).all()

    check()


def directional_derivative(f, x, direction, h):
    return (f(x + h * direction) - f(x - h * direction)) / (2 * h)


def small_problems(backend):
    shapes = st.tuples(st.integers(1, max_side(backend, 4)), st.integers(1, max_side(backend, 12)))
    values = st.floats(-8.0, 8.0, allow_nan=False)
    return st.tuples(
        hnp.arrays(np.float64, shapes, elements=values),
        st.integers(0, 2**32 - 1),
    )


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_backward_matches_finite_differences(backend, op):
    forward = getattr(fastsoftmax, op)
    backward = getattr(fastsoftmax, op + "_backward")

    @property_test(backend, small_problems(backend))
    def check(problem):
        x, seed = problem
        rng = np.random.default_rng(seed)
        grad = rng.normal(size=x.shape)
        direction = rng.normal(size=x.shape)
        saved = forward(x, backend=backend)
        vjp = backward(grad, saved, backend=backend)

        def objective(z):
            return np.sum(grad * forward(z, backend=backend), axis=-1)

        numeric = directional_derivative(objective, x, direction, 1e-5)
        analytic = np.sum(vjp * direction, axis=-1)
        size = np.sum(np.abs(grad) * np.abs(direction), axis=-1) + 1
        np.testing.assert_allclose(analytic, numeric, rtol=0, atol=1e-8 * size.max())

    check()


def test_cross_entropy_gradient_matches_finite_differences(backend):
    options = st.fixed_dictionaries(
        {
            "reduction": st.sampled_from(["mean", "sum", "none"]),
            "label_smoothing": st.sampled_from([0.0, 0.1, 1.0]),
            "z_loss": st.sampled_from([0.0, 0.01]),
            "weighted": st.booleans(),
            "probability_target": st.booleans(),
        }
    )

    @property_test(backend, small_problems(backend), options)
    def check(problem, options):
        x, seed = problem
        rng = np.random.default_rng(seed)
        n, c = x.shape
        weighted = options.pop("weighted")
        if options.pop("probability_target"):
            target = rng.dirichlet(np.ones(c), size=n)
        else:
            target = rng.integers(0, c, size=n)
            target[rng.random(n) < 0.2] = -100
        weight = rng.uniform(0.5, 2.0, size=c) if weighted else None
        _, grad = fastsoftmax.cross_entropy(
            x, target, weight=weight, return_grad=True, backend=backend, **options
        )
        direction = rng.normal(size=x.shape)

        def total_loss(z):
            loss = fastsoftmax.cross_entropy(z, target, weight=weight, backend=backend, **options)
            return np.sum(loss)

        numeric = directional_derivative(total_loss, x, direction, 1e-5)
        analytic = np.sum(grad * direction)
        if np.isnan(numeric):  # a mean over no kept rows
            assert (grad == 0).all()
            return
        size = np.sum(np.abs(direction)) * (2 if weight is None else 2 * weight.max()) + 1
        assert abs(analytic - numeric) <= 1e-7 * size, (analytic, numeric)

    check()


@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_are_never_modified(backend, dtype):
    @property_test(backend, logits(backend, dtype, bound=30.0, max_dims=3))
    def check(x):
        before = x.copy()
        fastsoftmax.softmax(x, axis=0, backend=backend)
        fastsoftmax.log_softmax(x, backend=backend)
        fastsoftmax.logsumexp(x, axis=0, backend=backend)
        fastsoftmax.softmax_topk(x, 1, backend=backend)
        y = fastsoftmax.softmax(x, backend=backend)
        y_before = y.copy()
        fastsoftmax.softmax_backward(x, y, backend=backend)
        fastsoftmax.log_softmax_backward(x, y, backend=backend)
        target = np.zeros(x.shape[:-1], dtype=np.int64)
        fastsoftmax.cross_entropy(x, target, return_grad=True, label_smoothing=0.1, backend=backend)
        np.testing.assert_array_equal(x, before)
        np.testing.assert_array_equal(y, y_before)
        np.testing.assert_array_equal(target, 0)

    check()
