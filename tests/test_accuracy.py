"""Finite inputs on every backend against the float64 reference, within DESIGN.md's bounds."""

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import strategies as st

import fastsoftmax
import reference
from strategies import (
    assert_matches_reference,
    finite_floats,
    logits,
    max_side,
    property_test,
    temperatures,
)

DTYPES = [np.float32, np.float64]


def run_op(op, x, backend, temperature=1.0, **options):
    """One of the three forward ops, returning (result, expected, kind)."""
    if op == "softmax":
        result = fastsoftmax.softmax(x, temperature=temperature, backend=backend, **options)
        return result, reference.softmax(x, temperature), "probability"
    if op == "log_softmax":
        result = fastsoftmax.log_softmax(x, temperature=temperature, backend=backend, **options)
        return result, reference.log_softmax(x, temperature), "log"
    assert temperature == 1.0
    return fastsoftmax.logsumexp(x, backend=backend, **options), reference.logsumexp(x), "log"


FORWARD_OPS = ["softmax", "log_softmax", "logsumexp"]


@pytest.mark.parametrize("op", FORWARD_OPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [1.0, 10.0, 300.0])
def test_random_rows(backend, op, dtype, scale):
    rng = np.random.default_rng(1)
    for n_classes in (1, 2, 3, 17, 1000):
        if n_classes > max_side(backend, 1000):
            continue
        x = (rng.standard_normal((max_side(backend, 9), n_classes)) * scale).astype(dtype)
        result, expected, kind = run_op(op, x, backend)
        assert_matches_reference(result, expected, kind)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", [1e-3, 0.3, 7.0, 1e4])
def test_temperature(backend, op, dtype, temperature):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((max_side(backend, 5), max_side(backend, 31))) * 5).astype(dtype)
    result, expected, kind = run_op(op, x, backend, temperature)
    assert_matches_reference(result, expected, kind)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("temperature", [0.7, 3.0])
@pytest.mark.parametrize("n_classes", [10, 300, 3000])
def test_temperature_over_wide_gaps(backend, op, temperature, n_classes):
    # Gaps x - max of up to 100 t: where the inverse temperature is rounded
    # to float32 before use, its error alone reaches the 1e-5 bound of a
    # float32 log-probability there.
    rng = np.random.default_rng(5)
    shape = (max_side(backend, 256), max_side(backend, n_classes))
    x = (rng.standard_normal(shape) * 25).astype(np.float32)
    result, expected, kind = run_op(op, x, backend, temperature)
    assert_matches_reference(result, expected, kind)


@pytest.mark.parametrize("n_classes", [2, 40, 1000])
def test_temperature_on_gaps_that_round(backend, n_classes):
    # Rows whose gap x - max is inexact in float32 and near -70: at t = 1/0.7
    # float32 arithmetic with a float32 inverse temperature errs by 1.09e-5
    # on their log-probabilities of about -97 (bound: 1e-5). Padded with
    # -inf, which adds nothing, to reach the short, medium and long rows.
    pairs = np.array(
        [[19.79211, -46.12584], [27.930428, -40.054966],
         [39.518867, -28.802876], [35.16899, -32.052486]],
        dtype=np.float32,
    )
    x = np.full((4, max_side(backend, n_classes)), -np.inf, dtype=np.float32)
    x[:, :2] = pairs
    result, expected, kind = run_op("log_softmax", x, backend, 0.7)
    assert_matches_reference(result, expected, kind)


SHORT_ROWS_AT_A_TEMPERATURE = {
    0.7: [[20.098103, -44.299698, 19.526667, 19.16749, 18.274773],
          [22.937595, -46.019646, 21.290136, 22.724382, 22.096512]],
    1.3: [[22.137856, -106.532104, 21.983704, 21.09493, 21.731247],
          [34.770355, -93.30967, 34.493237, 33.637318, 33.18017]],
}


@pytest.mark.parametrize("temperature", sorted(SHORT_ROWS_AT_A_TEMPERATURE))
@pytest.mark.parametrize("n_classes", [5, 33, 64])
def test_temperature_on_short_rows_rounds_once(backend, temperature, n_classes):
    # Rows whose scaled gap, rounded to float32 and then shifted by a log-sum
    # near 1.3, errs by 1.25e-5 and 1.31e-5 (bound: 1e-5); the row's maximum
    # and x - max are not round numbers. Padded with -inf to 33 and 64 classes,
    # the short-row paths' other sizes.
    rows = np.array(SHORT_ROWS_AT_A_TEMPERATURE[temperature], dtype=np.float32)
    x = np.full((2, max_side(backend, n_classes)), -np.inf, dtype=np.float32)
    x[:, : min(5, x.shape[1])] = rows[:, : x.shape[1]]
    result, expected, kind = run_op("log_softmax", x, backend, temperature)
    assert_matches_reference(result, expected, kind)


def test_temperature_keeps_huge_logits_of_opposite_signs_finite(backend):
    # x - max overflows in the input's precision; the result does not.
    for dtype, huge in ((np.float32, 3e38), (np.float64, 8e307)):
        x = np.array([[-huge, huge, 0.0]], dtype=dtype)
        for op in ("log_softmax", "softmax"):
            result, expected, kind = run_op(op, x, backend, 10.0)
            assert np.isfinite(expected).all()
            assert_matches_reference(result, expected, kind)


@pytest.mark.parametrize("op", FORWARD_OPS)
def test_float32_input_computed_in_float64_when_asked(backend, op):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, max_side(backend, 50))) * 20).astype(np.float32)
    result, expected, kind = run_op(op, x, backend, dtype=np.float64)
    assert_matches_reference(result, expected, kind, dtype=np.float64)


@pytest.mark.parametrize("op", FORWARD_OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_offset_logits(backend, op, dtype):
    # Large common offsets: the shift by the row maximum must keep full accuracy.
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((2, max_side(backend, 40))) * 3).astype(dtype)
    x[0] += dtype(1e4)
    x[1] -= dtype(3e4)
    result, expected, kind = run_op(op, x, backend)
    assert_matches_reference(result, expected, kind)


@pytest.mark.parametrize("op", FORWARD_OPS)
def test_rows_of_256000_classes_meet_the_float32_bound(host_backend, op):
    # Sums over long rows must be accumulated carefully (float64 or blocked):
    # float32 running sums drift past the bound at this length. Terms of about
    # 0.1 (inexact in binary) defeat even 16 float32 lanes of running sums.
    rng = np.random.default_rng(5)
    tenths = np.full(256_000, np.log(0.1))
    tenths[0] = 0.0
    x = np.stack(
        [
            tenths,
            rng.uniform(-1.0, 0.0, 256_000),
            rng.standard_normal(256_000) * 8,
        ]
    ).astype(np.float32)
    result, expected, kind = run_op(op, x, host_backend)
    assert_matches_reference(result, expected, kind)


WIDTHS_AROUND_VECTORS = [*range(1, 42), 63, 64, 65, 100, 127, 128, 129, 200, 255, 256, 257, 1031]


@pytest.mark.parametrize("op", FORWARD_OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_dominant_logit_at_every_position(host_backend, op, dtype):
    # Row i holds a logit 1e4 above the others at class i: a row maximum
    # that misses any one element (a vector tail, a lane of the fold) would
    # then overflow the exponentials. Widths straddle every vector length.
    for n_classes in WIDTHS_AROUND_VECTORS:
        x = np.random.default_rng(n_classes).uniform(-3, 3, (n_classes, n_classes))
        x[np.arange(n_classes), np.arange(n_classes)] += 1e4
        result, expected, kind = run_op(op, x.astype(dtype), host_backend)
        assert_matches_reference(result, expected, kind)


@pytest.mark.parametrize("op", FORWARD_OPS)
@pytest.mark.parametrize("n_classes", [16, 33, 48, 64, 100, 256])
def test_rows_of_equal_terms_meet_the_float32_bound(host_backend, op, n_classes):
    # One logit of 0 and the rest equal: a float32 running sum of equal
    # inexact terms rounds the same way at every step, so even rows of 48
    # classes drift past the bound unless sums are kept in parts.
    ratios = np.linspace(0.02, 0.999, 2000)
    x = np.zeros((ratios.size, n_classes))
    x[:, 1:] = np.log(ratios)[:, None]
    x = x.astype(np.float32)
    result, expected, kind = run_op(op, x, host_backend)
    assert_matches_reference(result, expected, kind)


@pytest.mark.parametrize("op", FORWARD_OPS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_property_finite_logits(backend, op, dtype):
    @property_test(backend, logits(backend, dtype, bound=1e3, max_dims=3))
    def check(x):
        result, expected, kind = run_op(op, x, backend)
        assert_matches_reference(result, expected, kind)

    check()


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_property_temperature(backend, op, dtype):
    @property_test(backend, logits(backend, dtype, bound=100.0), temperatures())
    def check(x, temperature):
        result, expected, kind = run_op(op, x, backend, temperature)
        assert_matches_reference(result, expected, kind)

    check()


def test_property_subnormal_and_tiny_logits(backend):
    # Logits that are all tiny make nearly uniform rows; subnormals must not
    # be flushed into anything but a uniform-looking answer.
    tiny = st.one_of(finite_floats(np.float32, 1e-35), st.just(np.float32(1e-45)))
    shapes = st.tuples(st.integers(1, 3), st.integers(1, max_side(backend, 20)))

    @property_test(backend, hnp.arrays(np.float32, shapes, elements=tiny))
    def check(x):
        for op in FORWARD_OPS:
            result, expected, kind = run_op(op, x, backend)
            assert_matches_reference(result, expected, kind)

    check()
