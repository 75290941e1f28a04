"""The numerics table of DESIGN.md, exactly, on every backend.

| input row         | softmax      | log_softmax   | logsumexp |
| some -inf         | exactly 0    | exactly -inf  | finite    |
| all -inf          | NaN row      | NaN row       | -inf      |
| any +inf          | NaN row      | NaN row       | +inf      |
| any NaN           | NaN row      | NaN row       | NaN       |
| empty class axis  | empty        | empty         | -inf      |

Special values are placed at the start, middle and end of rows of several
lengths, so vector bodies and scalar tails both meet them.
"""

import numpy as np
import pytest

import fastsoftmax
import reference
from strategies import (
    assert_matches_reference,
    max_side,
    property_test,
    rows_of_runs,
    special_logits,
)

DTYPES = [np.float32, np.float64]
INF, NAN = np.inf, np.nan


def row_lengths(backend):
    return sorted({max_side(backend, n) for n in (1, 2, 5, 37, 300)})


def positions(n):
    return sorted({0, n // 2, n - 1})


def finite_row(n, dtype, seed=0):
    return np.random.default_rng(seed).normal(scale=4.0, size=n).astype(dtype)


def forward(x, backend, temperature=1.0):
    return (
        fastsoftmax.softmax(x, temperature=temperature, backend=backend),
        fastsoftmax.log_softmax(x, temperature=temperature, backend=backend),
        fastsoftmax.logsumexp(x, backend=backend),
    )


def assert_all_match_reference(x, backend, temperature=1.0):
    p, logp, lse = forward(x, backend, temperature)
    assert_matches_reference(p, reference.softmax(x, temperature), "probability")
    assert_matches_reference(logp, reference.log_softmax(x, temperature), "log")
    assert_matches_reference(lse, reference.logsumexp(x), "log")
    return p, logp, lse


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", [1.0, 0.5, 0.7])
def test_some_minus_inf_gives_exact_zeros(backend, dtype, temperature):
    for n in row_lengths(backend):
        if n < 2:
            continue
        rows = []
        for where in positions(n):
            row = finite_row(n, dtype, seed=where)
            row[where] = -INF
            rows.append(row)
        every_other = finite_row(n, dtype)
        every_other[::2] = -INF  # leaves at least one finite entry
        rows.append(every_other)
        x = np.stack(rows)
        p, logp, lse = assert_all_match_reference(x, backend, temperature)
        assert (p[np.isneginf(x)] == 0).all()
        assert np.isneginf(logp[np.isneginf(x)]).all()
        assert np.isfinite(lse).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_single_finite_entry_among_minus_inf(backend, dtype):
    for n in row_lengths(backend):
        for where in positions(n):
            x = np.full((1, n), -INF, dtype=dtype)
            x[0, where] = 3.0
            p, logp, lse = assert_all_match_reference(x, backend)
            assert p[0, where] == pytest.approx(1.0, abs=2e-7)
            assert lse[0] == pytest.approx(3.0, abs=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_minus_inf_row(backend, dtype):
    for n in row_lengths(backend):
        x = np.full((2, n), -INF, dtype=dtype)
        x[1] = finite_row(n, dtype)  # a healthy neighbour stays healthy
        p, logp, lse = assert_all_match_reference(x, backend)
        assert np.isnan(p[0]).all() and np.isnan(logp[0]).all()
        assert lse[0] == -INF
        assert np.isfinite(p[1]).all() and np.isfinite(lse[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("others", ["finite", "minus_inf", "plus_inf"])
def test_plus_inf_row(backend, dtype, others):
    for n in row_lengths(backend):
        for where in positions(n):
            if others == "finite":
                row = finite_row(n, dtype)
            else:
                row = np.full(n, -INF if others == "minus_inf" else INF, dtype=dtype)
            row[where] = INF
            x = np.stack([row, finite_row(n, dtype, seed=1)])
            p, logp, lse = assert_all_match_reference(x, backend)
            assert np.isnan(p[0]).all() and np.isnan(logp[0]).all()
            assert lse[0] == INF
            assert np.isfinite(p[1]).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("others", ["finite", "minus_inf", "plus_inf", "nan"])
def test_nan_row(backend, dtype, others):
    for n in row_lengths(backend):
        for where in positions(n):
            fill = {"minus_inf": -INF, "plus_inf": INF, "nan": NAN}.get(others)
            row = finite_row(n, dtype) if fill is None else np.full(n, fill, dtype=dtype)
            row[where] = NAN
            x = np.stack([finite_row(n, dtype, seed=2), row])
            p, logp, lse = assert_all_match_reference(x, backend)
            assert np.isnan(p[1]).all() and np.isnan(logp[1]).all()
            assert np.isnan(lse[1])
            assert np.isfinite(p[0]).all() and np.isfinite(lse[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, lead", [(1500, 1024), (3000, 2048), (20000, 4096)])
@pytest.mark.parametrize("n_rows", [3, 300])
def test_nan_among_a_long_run_of_minus_inf(host_backend, dtype, n, lead, n_rows):
    # Long rows are reduced a chunk at a time; a chunk of only -inf and NaN
    # before the first finite logit has no exponential to carry the NaN.
    x = np.zeros((n_rows, n), dtype=dtype)
    x[:, :lead] = -INF
    x[1, lead // 2] = NAN
    p, logp, lse = forward(x, host_backend)
    assert np.isnan(p[1]).all() and np.isnan(logp[1]).all() and np.isnan(lse[1])
    rest = np.delete(np.arange(n_rows), 1)
    assert not np.isnan(p[rest]).any() and not np.isnan(logp[rest]).any()
    np.testing.assert_allclose(lse[rest], np.log(n - lead), rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_property_runs_of_special_values_in_long_rows(host_backend, dtype):
    @property_test(host_backend, rows_of_runs(dtype))
    def check(x):
        assert_all_match_reference(x, host_backend)

    check()


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_after_plus_inf_still_wins(backend, dtype):
    # A kernel that stops at the first +inf would report +inf, not NaN.
    n = max_side(backend, 37)
    x = np.zeros((1, n), dtype=dtype)
    x[0, 0] = INF
    x[0, -1] = NAN
    assert np.isnan(fastsoftmax.logsumexp(x, backend=backend)[0])


def test_special_rows_do_not_leak_into_neighbours(backend):
    # Many rows of every kind in one call: blocked, vectorised and threaded
    # paths must keep every row to itself.
    rng = np.random.default_rng(7)
    n_rows, n = max_side(backend, 64), max_side(backend, 19)
    x = rng.normal(scale=3.0, size=(n_rows, n))
    kinds = rng.integers(0, 5, n_rows)
    for i, kind in enumerate(kinds):
        j = rng.integers(0, n)
        if kind == 1:
            x[i, j] = -INF
        elif kind == 2:
            x[i] = -INF
        elif kind == 3:
            x[i, j] = INF
        elif kind == 4:
            x[i, j] = NAN
    for dtype in DTYPES:
        assert_all_match_reference(x.astype(dtype), backend)


@pytest.mark.parametrize("dtype", DTYPES)
def test_property_special_values(backend, dtype):
    @property_test(backend, special_logits(backend, dtype))
    def check(x):
        assert_all_match_reference(x, backend)

    check()


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_class_axis(backend, dtype):
    x = np.zeros((3, 0), dtype=dtype)
    for op in (fastsoftmax.softmax, fastsoftmax.log_softmax):
        result = op(x, backend=backend)
        assert result.shape == (3, 0) and result.dtype == dtype
    lse = fastsoftmax.logsumexp(x, backend=backend)
    assert lse.dtype == dtype
    np.testing.assert_array_equal(lse, [-INF, -INF, -INF])
    np.testing.assert_array_equal(
        fastsoftmax.logsumexp(x, keepdims=True, backend=backend), [[-INF]] * 3
    )
    # The empty axis need not be the last one.
    np.testing.assert_array_equal(
        fastsoftmax.logsumexp(np.zeros((0, 2), dtype=dtype), axis=0, backend=backend), [-INF, -INF]
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(backend, dtype):
    x = np.zeros((0, 5), dtype=dtype)
    assert fastsoftmax.softmax(x, backend=backend).shape == (0, 5)
    assert fastsoftmax.log_softmax(x, backend=backend).shape == (0, 5)
    lse = fastsoftmax.logsumexp(x, backend=backend)
    assert lse.shape == (0,) and lse.dtype == dtype


@pytest.mark.parametrize(
    "dtype, big", [(np.float32, 1e30), (np.float32, 3e38), (np.float64, 1e30), (np.float64, 1e308)]
)
def test_huge_finite_logits_never_overflow(backend, dtype, big):
    big = dtype(big)
    x = np.array([[big, -big], [big, big], [-big, -big], [big, big / 2]], dtype=dtype)
    p, logp, lse = forward(x, backend)
    np.testing.assert_array_equal(p, [[1, 0], [0.5, 0.5], [0.5, 0.5], [1, 0]])
    assert (logp[0, 0], logp[3, 0]) == (0, 0)
    np.testing.assert_allclose(logp[1:3], np.log(0.5), rtol=1e-6)
    # The nearest float to -big - big may be -inf (its exact value is not
    # representable); it must not be NaN, and the difference big/2 must be exact.
    assert logp[0, 1] < -big
    assert logp[3, 1] == -big / 2
    np.testing.assert_array_equal(lse, [big, big, -big, big])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", [1e-3, 1e3])
def test_huge_logits_with_temperature(backend, dtype, temperature):
    x = np.array([[1e30, -1e30, 1e30]], dtype=dtype)
    np.testing.assert_array_equal(
        fastsoftmax.softmax(x, temperature=temperature, backend=backend), [[0.5, 0, 0.5]]
    )
    logp = fastsoftmax.log_softmax(x, temperature=temperature, backend=backend)
    np.testing.assert_allclose(logp[0, [0, 2]], np.log(0.5), rtol=1e-6)
    # -2e30 / T, which is -inf in float32 for T = 1e-3 (beyond float32's range).
    with np.errstate(over="ignore"):
        expected = dtype(-2e30 / temperature)
    np.testing.assert_allclose(logp[0, 1], expected, rtol=1e-6)


def test_many_huge_equal_logits_sum_without_overflow(backend):
    n = max_side(backend, 1000)
    for dtype in DTYPES:
        x = np.full((1, n), 1e30, dtype=dtype)
        assert_all_match_reference(x, backend)
