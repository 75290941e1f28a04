"""The oracle itself: ``reference`` against SciPy and against closed forms.

Every backend is judged by ``reference``, so it must be right on its own terms.
"""

import math

import numpy as np
import pytest
import scipy.special

import reference

RNG = np.random.default_rng(0)


def test_finite_rows_agree_with_scipy():
    x = RNG.normal(scale=10, size=(7, 33))
    np.testing.assert_allclose(reference.softmax(x), scipy.special.softmax(x, axis=-1), rtol=1e-14)
    np.testing.assert_allclose(
        reference.log_softmax(x), scipy.special.log_softmax(x, axis=-1), rtol=1e-14
    )
    np.testing.assert_allclose(
        reference.logsumexp(x), scipy.special.logsumexp(x, axis=-1), rtol=1e-15
    )


def test_temperature_divides_the_logits():
    x = RNG.normal(size=(3, 5))
    np.testing.assert_allclose(reference.softmax(x, 0.25), scipy.special.softmax(x / 0.25, axis=-1))
    np.testing.assert_allclose(
        reference.log_softmax(x, 4.0), scipy.special.log_softmax(x / 4.0, axis=-1)
    )


def test_numerics_table():
    inf, nan = np.inf, np.nan
    x = np.array(
        [
            [0.0, -inf, math.log(3.0)],  # some -inf
            [-inf, -inf, -inf],  # all -inf
            [0.0, inf, -inf],  # +inf
            [inf, nan, 0.0],  # NaN wins over +inf
        ]
    )
    p = reference.softmax(x)
    np.testing.assert_allclose(p[0], [0.25, 0.0, 0.75])
    assert p[0, 1] == 0.0
    assert np.isnan(p[1:]).all()
    logp = reference.log_softmax(x)
    assert logp[0, 1] == -inf
    np.testing.assert_allclose(logp[0, [0, 2]], np.log([0.25, 0.75]))
    assert np.isnan(logp[1:]).all()
    lse = reference.logsumexp(x)
    np.testing.assert_allclose(lse[0], math.log(4.0))
    assert lse[1] == -inf and lse[2] == inf and np.isnan(lse[3])


def test_empty_class_axis():
    assert reference.softmax(np.zeros((2, 0))).shape == (2, 0)
    np.testing.assert_array_equal(reference.logsumexp(np.zeros((2, 3, 0))), np.full((2, 3), -np.inf))


def test_huge_logits():
    np.testing.assert_array_equal(reference.softmax([1e300, -1e300, 1e300]), [0.5, 0.0, 0.5])
    np.testing.assert_array_equal(reference.logsumexp([[1e300, 1e300]]), [1e300])


def test_backward_formulas_against_the_jacobian():
    x = RNG.normal(size=6)
    y = reference.softmax(x)
    jacobian = np.diag(y) - np.outer(y, y)
    grad = RNG.normal(size=6)
    np.testing.assert_allclose(reference.softmax_backward(grad, y), jacobian.T @ grad, atol=1e-15)
    log_jacobian = np.eye(6) - y[None, :]
    np.testing.assert_allclose(
        reference.log_softmax_backward(grad, np.log(y)), log_jacobian.T @ grad, atol=1e-15
    )


def test_cross_entropy_closed_forms():
    # Uniform logits: every class has probability 1/C, loss ln C.
    loss, grad = reference.cross_entropy(np.zeros((2, 4)), np.array([1, 3]))
    assert loss == pytest.approx(math.log(4))
    np.testing.assert_allclose(grad, (np.full((2, 4), 0.25) - np.eye(4)[[1, 3]]) / 2)
    # Two classes: loss = softplus(z_other - z_target).
    loss, _ = reference.cross_entropy(np.array([[1.0, 3.0]]), np.array([0]), reduction="sum")
    assert loss == pytest.approx(math.log1p(math.exp(2.0)))
    # Weights: the mean divides by the kept rows' target weights.
    z = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0]])
    loss, _ = reference.cross_entropy(z, np.array([0, 1, -100]), weight=np.array([1.0, 3.0]))
    assert loss == pytest.approx((1 * math.log(2) + 3 * math.log(2)) / 4)
    # Label smoothing 1: the target no longer matters.
    z = RNG.normal(size=(1, 5))
    a, _ = reference.cross_entropy(z, np.array([0]), label_smoothing=1.0)
    b, _ = reference.cross_entropy(z, np.array([4]), label_smoothing=1.0)
    assert a == pytest.approx(b)
    assert a == pytest.approx(np.mean(scipy.special.logsumexp(z) - z))
    # z_loss adds z_loss * lse**2.
    c, _ = reference.cross_entropy(z, np.array([2]), z_loss=0.5)
    d, _ = reference.cross_entropy(z, np.array([2]))
    assert c - d == pytest.approx(0.5 * scipy.special.logsumexp(z) ** 2)


def test_cross_entropy_gradient_is_the_derivative_of_the_loss():
    z = RNG.normal(size=(3, 4))
    options = dict(
        weight=np.array([0.5, 1.0, 2.0, 1.5]), label_smoothing=0.2, z_loss=0.1, ignore_index=1
    )
    target = np.array([0, 1, 3])
    _, grad = reference.cross_entropy(z, target, **options)
    h = 1e-6
    numeric = np.zeros_like(z)
    for index in np.ndindex(z.shape):
        step = np.zeros_like(z)
        step[index] = h
        up, _ = reference.cross_entropy(z + step, target, **options)
        down, _ = reference.cross_entropy(z - step, target, **options)
        numeric[index] = (up - down) / (2 * h)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)
    assert (grad[1] == 0).all()


def test_topk_orders_by_logit_with_ties_to_the_lower_index():
    probs, index = reference.softmax_topk(np.array([[1.0, 3.0, 3.0, 2.0, 3.0]]), 4)
    np.testing.assert_array_equal(index, [[1, 2, 4, 3]])
    assert probs[0, 0] == probs[0, 1] == probs[0, 2] > probs[0, 3]
    probs, index = reference.softmax_topk(np.array([[0.0, np.nan, 1.0]]), 2)
    np.testing.assert_array_equal(index, [[0, 1]])
    assert np.isnan(probs).all()
