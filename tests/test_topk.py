"""softmax_topk on every backend: order by logit, ties to the lower index, NaN rows,
probabilities equal to the softmax's, and any k from 1 to C."""

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import strategies as st

import fastsoftmax
import reference
from strategies import (
    assert_matches_reference,
    assert_same_values,
    logits,
    max_side,
    property_test,
    special_logits,
)

DTYPES = [np.float32, np.float64]


def check(x, k, backend, temperature=1.0):
    probs, index = fastsoftmax.softmax_topk(x, k, temperature=temperature, backend=backend)
    expected_probs, expected_index = reference.softmax_topk(x, k, temperature)
    assert index.dtype == np.int64
    assert_same_values(index, expected_index)
    assert_matches_reference(probs, expected_probs, "probability")
    return probs, index


@pytest.mark.parametrize("dtype", DTYPES)
def test_random_rows_every_k(backend, dtype):
    rng = np.random.default_rng(31)
    for n in sorted({max_side(backend, c) for c in (1, 2, 7, 33, 300)}):
        x = (rng.normal(scale=3, size=(max_side(backend, 5), n))).astype(dtype)
        for k in sorted({1, 2, n // 2, n - 1, n} & set(range(1, n + 1))):
            check(x, k, backend)


@pytest.mark.parametrize("dtype", DTYPES)
def test_many_short_rows(backend, dtype):
    # Several blocks of rows and a partial last one, some rows special, some
    # strided: compiled backends rank short rows a block at a time.
    rng = np.random.default_rng(37)
    for n in sorted({max_side(backend, c) for c in (5, 10, 32)}):
        wide = rng.normal(scale=3, size=(max_side(backend, 203), n + 3)).astype(dtype)
        wide[::17, 1] = np.nan
        wide[5::23, 0] = np.inf
        wide[7::29] = -np.inf
        wide[3::31, : n // 2] = wide[3::31, n // 2 : 2 * (n // 2)]  # ties
        for x in (np.ascontiguousarray(wide[:, :n]), wide[:, :n]):
            for k in sorted({1, 3, n} & set(range(1, n + 1))):
                check(x, k, backend)


@pytest.mark.parametrize("temperature", [1e-2, 0.5, 3.0])
def test_temperature(backend, temperature):
    x = np.random.default_rng(32).normal(size=(3, max_side(backend, 12)))
    check(x, 3, backend, temperature)


def test_ties_go_to_the_lower_index(backend):
    x = np.array([[1.0, 3.0, 3.0, 2.0, 3.0], [5.0, 5.0, 5.0, 5.0, 5.0], [0.0, 2.0, 1.0, 2.0, 0.0]])
    probs, index = fastsoftmax.softmax_topk(x, 4, backend=backend)
    np.testing.assert_array_equal(index, [[1, 2, 4, 3], [0, 1, 2, 3], [1, 3, 2, 0]])
    assert probs[0, 0] == probs[0, 1] == probs[0, 2]
    np.testing.assert_allclose(probs[1], 0.2, rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_ties_in_long_rows(backend, dtype):
    # Equal logits scattered through a row longer than any vector width.
    n = max_side(backend, 200)
    x = np.zeros((2, n), dtype=dtype)
    x[0, [n - 1, n // 2, 3 % n, 0]] = 1.0
    x[1, ::7] = 2.0
    for k in sorted({1, min(4, n), min(40, n)}):
        check(x, k, backend)


def test_probabilities_descend_and_equal_the_softmax(backend):
    x = np.random.default_rng(33).normal(
        scale=4, size=(max_side(backend, 6), max_side(backend, 25))
    )
    probs, index = fastsoftmax.softmax_topk(x, max_side(backend, 10), backend=backend)
    assert (np.diff(probs, axis=1) <= 0).all()
    full = reference.softmax(x)
    assert_matches_reference(probs, np.take_along_axis(full, index, axis=1), "probability")


def test_underflowed_probabilities_keep_the_logit_order(backend):
    # Distinct logits whose probabilities are all 0 in float32 are still ordered by logit.
    x = np.array([[0.0, -300.0, -200.0, -250.0, -1e30]], dtype=np.float32)
    probs, index = fastsoftmax.softmax_topk(x, 5, backend=backend)
    np.testing.assert_array_equal(index, [[0, 2, 3, 1, 4]])
    np.testing.assert_array_equal(probs, [[1, 0, 0, 0, 0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_minus_inf_entries_come_last_in_index_order(backend, dtype):
    x = np.array([[-np.inf, 0.0, -np.inf, 1.0, -np.inf]], dtype=dtype)
    probs, index = fastsoftmax.softmax_topk(x, 5, backend=backend)
    np.testing.assert_array_equal(index, [[3, 1, 0, 2, 4]])
    assert (probs[0, 2:] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "row",
    [
        [0.0, np.nan, 1.0, 2.0],
        [np.nan, np.nan, np.nan, np.nan],
        [0.0, np.inf, 1.0, 2.0],
        [np.inf, np.inf, 0.0, 0.0],
        [-np.inf, -np.inf, -np.inf, -np.inf],
        [3.0, 2.0, 1.0, np.nan],
    ],
)
def test_nan_softmax_rows_give_nan_and_the_first_k_indices(backend, dtype, row):
    x = np.array([[5.0, 1.0, 3.0, 2.0], row], dtype=dtype)
    for k in (1, 3, 4):
        probs, index = fastsoftmax.softmax_topk(x, k, backend=backend)
        assert np.isnan(probs[1]).all()
        np.testing.assert_array_equal(index[1], np.arange(k))
        # The healthy neighbour is unaffected.
        np.testing.assert_array_equal(index[0], [0, 2, 3, 1][:k])
        assert np.isfinite(probs[0]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_among_a_long_run_of_minus_inf(host_backend, dtype):
    # Long rows are reduced a chunk at a time; a chunk of only -inf and NaN
    # before the first finite logit has no exponential to carry the NaN.
    x = np.zeros((3, 2500), dtype=dtype)
    x[:, :1250] = -np.inf
    x[1, 625] = np.nan
    probs, index = fastsoftmax.softmax_topk(x, 3, backend=host_backend)
    assert np.isnan(probs[1]).all()
    np.testing.assert_array_equal(index[1], np.arange(3))
    np.testing.assert_allclose(probs[[0, 2]], 1 / 1250, rtol=1e-6)


def test_empty_batch(backend):
    probs, index = fastsoftmax.softmax_topk(np.zeros((0, 5)), 2, backend=backend)
    assert probs.shape == index.shape == (0, 2)
    assert index.dtype == np.int64


@pytest.mark.parametrize("dtype", DTYPES)
def test_property_finite_rows(backend, dtype):
    @property_test(backend, logits(backend, dtype, bound=60.0, max_dims=2), st.data())
    def check_rows(x, data):
        k = data.draw(st.integers(1, x.shape[-1]), label="k")
        check(x, k, backend)

    check_rows()


@pytest.mark.parametrize("dtype", DTYPES)
def test_property_special_rows(backend, dtype):
    @property_test(backend, special_logits(backend, dtype), st.data())
    def check_rows(x, data):
        k = data.draw(st.integers(1, x.shape[-1]), label="k")
        check(x, k, backend)

    check_rows()


def test_property_rows_with_many_ties(backend):
    values = st.sampled_from([0.0, 1.0, 2.0, -np.inf])
    shapes = st.tuples(st.integers(1, max_side(backend, 4)), st.integers(1, max_side(backend, 40)))

    @property_test(backend, hnp.arrays(np.float64, shapes, elements=values), st.data())
    def check_rows(x, data):
        k = data.draw(st.integers(1, x.shape[-1]), label="k")
        check(x, k, backend)

    check_rows()
