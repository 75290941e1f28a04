"""cross_entropy on every backend: against the reference for every option, and
against formulas that need no reference at all (these carry the weight where
PyTorch is not installed).

Loss and gradient are sums of terms that may cancel, so they are compared
with an error bound relative to the size of the terms
(``strategies.assert_cross_entropy_close``): ``1e-5`` of it in float32 (the
log-probability bound) and ``1e-13`` in float64.
"""

import math

import numpy as np
import pytest
import scipy.special

import fastsoftmax
import reference
from strategies import (
    assert_close_scaled,
    assert_cross_entropy_close,
    assert_same_to_rounding,
    logit_row_sizes,
    max_side,
)

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


def rtol_for(dtype):
    return 1e-13 if np.dtype(dtype) == np.float64 else 1e-5


def make_problem(backend, dtype, seed=0, rows=9, classes=7, scale=3.0):
    rng = np.random.default_rng(seed)
    n, c = max_side(backend, rows), max_side(backend, classes)
    logits = (rng.normal(scale=scale, size=(n, c))).astype(dtype)
    target = rng.integers(0, c, size=n)
    weight = rng.uniform(0.2, 2.0, size=c)
    probabilities = reference.softmax(rng.normal(size=(n, c)))
    return logits, target, weight, probabilities


def loss_scale(logits, weight):
    """Per-row size of the loss terms (see strategies.assert_cross_entropy_close)."""
    spread, _ = logit_row_sizes(logits)
    w = 1.0 if weight is None else np.max(np.abs(weight))
    return w * (1.0 + spread + math.log(np.shape(logits)[-1]))


def check_against_reference(logits, target, backend, reduction="mean", **options):
    """Loss and gradient (and the loss-only call) against the reference."""
    loss, grad = fastsoftmax.cross_entropy(
        logits, target, reduction=reduction, return_grad=True, backend=backend, **options
    )
    loss_only = fastsoftmax.cross_entropy(
        logits, target, reduction=reduction, backend=backend, **options
    )
    expected_loss, expected_grad = reference.cross_entropy(
        logits, target, reduction=reduction, **options
    )
    assert_cross_entropy_close(
        loss, grad, expected_loss, expected_grad, logits, target, reduction, **options
    )
    assert_cross_entropy_close(
        loss_only, None, expected_loss, None, logits, target, reduction, **options
    )
    return loss, grad


OPTION_SETS = [
    {},
    {"weight": "w"},
    {"label_smoothing": 0.1},
    {"label_smoothing": 1.0},
    {"weight": "w", "label_smoothing": 0.25},
    {"z_loss": 1e-3},
    {"weight": "w", "label_smoothing": 0.05, "z_loss": 0.5},
    {"ignore_index": "some"},
    {"ignore_index": 2, "weight": "w", "label_smoothing": 0.1, "z_loss": 1e-2},
]


def with_options(options, target, weight):
    """Resolve placeholders: "w" is the problem's weights, "some" ignores rows 1 and 4."""
    options = dict(options)
    target = target.copy()
    if options.get("weight") == "w":
        options["weight"] = weight
    if options.get("ignore_index") == "some":
        options["ignore_index"] = -100
        target[1::3] = -100
    return options, target


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: "-".join(o) or "plain")
def test_class_targets_against_reference(backend, reduction, dtype, options):
    logits, target, weight, _ = make_problem(backend, dtype)
    options, target = with_options(options, target, weight)
    check_against_reference(logits, target, backend, reduction, **options)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "options",
    [o for o in OPTION_SETS if "ignore_index" not in o],
    ids=lambda o: "-".join(o) or "plain",
)
def test_probability_targets_against_reference(backend, reduction, dtype, options):
    logits, _, weight, probabilities = make_problem(backend, dtype, seed=1)
    options, _ = with_options(options, np.zeros(1, dtype=int), weight)
    check_against_reference(logits, probabilities.astype(dtype), backend, reduction, **options)


@pytest.mark.parametrize("target_dtype", [np.float16, np.float32, np.float64])
def test_probability_targets_of_any_float_dtype(backend, target_dtype):
    logits, _, _, probabilities = make_problem(backend, np.float32, seed=2)
    target = probabilities.astype(target_dtype)
    # Unnormalised "probabilities" are taken as given, as PyTorch does.
    target[0] *= 3
    check_against_reference(logits, target, backend, "sum")


@pytest.mark.parametrize("target_dtype", [np.int8, np.int32, np.uint8, np.int64])
def test_class_targets_of_any_integer_dtype(backend, target_dtype):
    logits, target, _, _ = make_problem(backend, np.float64, seed=3)
    a = fastsoftmax.cross_entropy(
        logits, target.astype(target_dtype), reduction="none", backend=backend
    )
    b = fastsoftmax.cross_entropy(logits, target, reduction="none", backend=backend)
    assert_same_to_rounding(a, b, "scaled")
    c = fastsoftmax.cross_entropy(logits, target.tolist(), reduction="none", backend=backend)
    assert_same_to_rounding(c, b, "scaled")


def test_long_rows(host_backend):
    logits, target, weight, _ = make_problem(
        host_backend, np.float32, seed=4, rows=3, classes=256_000, scale=2.0
    )
    check_against_reference(
        logits, target, host_backend, "mean", weight=weight, label_smoothing=0.1
    )


# --- formulas that need no reference ------------------------------------------


def ce(logits, target, backend, **kw):
    return fastsoftmax.cross_entropy(logits, target, return_grad=True, backend=backend, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
def test_uniform_logits(backend, dtype):
    n, c = max_side(backend, 4), max_side(backend, 5)
    target = np.arange(n) % c
    loss, grad = ce(np.full((n, c), 2.5, dtype=dtype), target, backend)
    assert loss == pytest.approx(math.log(c), rel=rtol_for(dtype))
    expected = (np.full((n, c), 1.0 / c) - np.eye(c)[target]) / n
    np.testing.assert_allclose(grad, expected, rtol=rtol_for(dtype), atol=rtol_for(dtype) / n)


def test_two_classes_is_softplus(backend):
    d = np.array([-30.0, -2.0, 0.0, 0.5, 3.0, 40.0])
    logits = np.stack([np.zeros_like(d), d], axis=1)
    loss, grad = ce(logits, np.zeros(len(d), dtype=int), backend, reduction="none")
    # Absolute 1e-15 for the smallest loss: log(1 + 1e-13) carries the
    # rounding of 1 + 1e-13, as every log-probability near 0 does.
    np.testing.assert_allclose(loss, np.logaddexp(0, d), rtol=1e-13, atol=1e-15)
    sigmoid = scipy.special.expit(d)
    np.testing.assert_allclose(grad, np.stack([-sigmoid, sigmoid], axis=1), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_one_hot_probabilities_equal_class_targets(backend, dtype, weighted):
    logits, target, weight, _ = make_problem(backend, dtype, seed=5)
    weight = weight if weighted else None
    one_hot = np.eye(logits.shape[1], dtype=dtype)[target]
    # PyTorch's mean over probability targets divides by the row count, not
    # by the summed target weights, so with weights only "none" and "sum" agree.
    reductions = ["none", "sum"] if weighted else REDUCTIONS
    for reduction in reductions:
        for eps in (0.0, 0.3):
            a = ce(logits, target, backend, weight=weight, reduction=reduction, label_smoothing=eps)
            b = ce(
                logits, one_hot, backend, weight=weight, reduction=reduction, label_smoothing=eps
            )
            scale = loss_scale(logits, weight)
            assert_close_scaled(a[0], b[0], scale.sum(), dtype, rtol_for(dtype))
            assert_close_scaled(
                a[1], b[1], 2.0 if weight is None else 2 * weight.max(), dtype, rtol_for(dtype)
            )


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("probability_target", [False, True])
def test_label_smoothing_mixes_linearly(backend, weighted, probability_target):
    logits, target, weight, probabilities = make_problem(backend, np.float64, seed=6)
    weight = weight if weighted else None
    target = probabilities if probability_target else target
    ends = [
        ce(logits, target, backend, weight=weight, reduction="none", label_smoothing=e)
        for e in (0.0, 1.0)
    ]
    for eps in (0.1, 0.5, 0.9):
        loss, grad = ce(
            logits, target, backend, weight=weight, reduction="none", label_smoothing=eps
        )
        np.testing.assert_allclose(loss, (1 - eps) * ends[0][0] + eps * ends[1][0], rtol=1e-12)
        np.testing.assert_allclose(
            grad, (1 - eps) * ends[0][1] + eps * ends[1][1], rtol=1e-12, atol=1e-14
        )


def test_full_smoothing_ignores_the_target(backend):
    logits, _, weight, _ = make_problem(backend, np.float64, seed=7, rows=1)
    c = logits.shape[1]
    losses = [
        ce(logits, np.array([t]), backend, weight=weight, label_smoothing=1.0, reduction="none")[0][
            0
        ]
        for t in range(c)
    ]
    lse = scipy.special.logsumexp(logits[0])
    np.testing.assert_allclose(losses, np.sum(weight * (lse - logits[0])) / c, rtol=1e-13)


@pytest.mark.parametrize("probability_target", [False, True])
def test_z_loss_adds_z_times_lse_squared(backend, probability_target):
    logits, target, weight, probabilities = make_problem(backend, np.float64, seed=8)
    target = probabilities if probability_target else target
    base_loss, base_grad = ce(logits, target, backend, weight=weight, reduction="none")
    loss, grad = ce(logits, target, backend, weight=weight, reduction="none", z_loss=0.25)
    lse = scipy.special.logsumexp(logits, axis=1)
    np.testing.assert_allclose(loss - base_loss, 0.25 * lse**2, rtol=1e-12, atol=1e-14)
    p = scipy.special.softmax(logits, axis=1)
    np.testing.assert_allclose(grad - base_grad, 0.5 * lse[:, None] * p, rtol=1e-12, atol=1e-15)


def test_weights_scale_each_row_by_its_target_weight(backend):
    logits, target, weight, _ = make_problem(backend, np.float64, seed=9)
    plain, plain_grad = ce(logits, target, backend, reduction="none")
    weighted, weighted_grad = ce(logits, target, backend, weight=weight, reduction="none")
    np.testing.assert_allclose(weighted, weight[target] * plain, rtol=1e-13)
    np.testing.assert_allclose(
        weighted_grad, weight[target][:, None] * plain_grad, rtol=1e-13, atol=1e-16
    )
    mean, mean_grad = ce(logits, target, backend, weight=weight)
    assert mean == pytest.approx(weighted.sum() / weight[target].sum(), rel=1e-13)
    np.testing.assert_allclose(
        mean_grad, weighted_grad / weight[target].sum(), rtol=1e-13, atol=1e-16
    )


@pytest.mark.parametrize("probability_target", [False, True])
def test_reductions_relate(backend, probability_target):
    logits, target, weight, probabilities = make_problem(backend, np.float64, seed=10)
    target = probabilities if probability_target else target
    options = dict(weight=weight, label_smoothing=0.2, z_loss=0.01)
    none, none_grad = ce(logits, target, backend, reduction="none", **options)
    total, sum_grad = ce(logits, target, backend, reduction="sum", **options)
    mean, mean_grad = ce(logits, target, backend, reduction="mean", **options)
    assert total == pytest.approx(none.sum(), rel=1e-13)
    np.testing.assert_allclose(sum_grad, none_grad, rtol=1e-15)
    denom = len(logits) if probability_target else weight[target].sum()
    assert mean == pytest.approx(total / denom, rel=1e-13)
    np.testing.assert_allclose(mean_grad, sum_grad / denom, rtol=1e-13, atol=1e-17)


@pytest.mark.parametrize("ignore_index", [-100, -1, 1])
def test_ignored_rows(backend, ignore_index):
    logits, target, weight, _ = make_problem(backend, np.float64, seed=11, rows=8)
    target[::3] = ignore_index
    kept = target != ignore_index
    options = dict(weight=weight, label_smoothing=0.1, z_loss=0.1, ignore_index=ignore_index)
    loss, grad = ce(logits, target, backend, reduction="none", **options)
    assert (loss[~kept] == 0).all() and (grad[~kept] == 0).all()
    mean, mean_grad = ce(logits, target, backend, **options)
    sub_options = dict(options, ignore_index=-100)
    sub_mean, sub_grad = ce(logits[kept], target[kept], backend, **sub_options)
    assert mean == pytest.approx(sub_mean, rel=1e-13)
    np.testing.assert_allclose(mean_grad[kept], sub_grad, rtol=1e-13, atol=1e-17)


def test_ignored_rows_with_nan_logits_stay_zero(backend):
    logits = np.array([[np.nan, 0.0, 1.0], [0.0, 1.0, 2.0], [np.inf, 0.0, 0.0]])
    loss, grad = ce(logits, np.array([-100, 2, -100]), backend, reduction="none")
    assert loss[0] == 0 and loss[2] == 0
    assert (grad[[0, 2]] == 0).all()
    assert np.isfinite(loss[1]) and np.isfinite(grad[1]).all()


def test_nan_logits_give_a_nan_row(backend):
    logits = np.array([[np.nan, 0.0, 1.0], [0.0, 1.0, 2.0]])
    loss, grad = ce(logits, np.array([1, 2]), backend, reduction="none")
    assert np.isnan(loss[0]) and np.isnan(grad[0]).all()
    check_against_reference(logits[1:], np.array([2]), backend, "none")
    np.testing.assert_allclose(
        grad[1],
        reference.cross_entropy(logits[1:], np.array([2]), reduction="none")[1][0],
        rtol=1e-13,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_among_a_long_run_of_minus_inf(host_backend, dtype):
    # Long rows are reduced a chunk at a time; a chunk of only -inf and NaN
    # before the first finite logit has no exponential to carry the NaN.
    logits = np.zeros((4, 3000), dtype=dtype)
    logits[:, :2048] = -np.inf
    logits[1, 1000] = np.nan
    loss, grad = ce(logits, np.full(4, 2500), host_backend, reduction="none")
    assert np.isnan(loss[1]) and np.isnan(grad[1]).all()
    kept = [0, 2, 3]
    np.testing.assert_allclose(loss[kept], np.log(952.0), rtol=1e-6)
    assert np.isfinite(grad[kept]).all()


@pytest.mark.parametrize("options", [{}, {"z_loss": 0.5}, {"label_smoothing": 0.1, "z_loss": 1e-3}])
def test_rows_without_a_finite_maximum_give_a_nan_row(backend, options):
    # +inf away from the target, NaN, all -inf: no softmax, so NaN loss and
    # gradient, with z_loss too (where lse - z[y] = inf and z_loss * lse**2
    # once made the +inf row's loss +inf).
    logits = np.array([[-0.5, np.inf, -0.8], [np.nan, 0.0, 1.0], [-np.inf] * 3, [0.0, 1.0, 2.0]])
    target = np.array([2, 2, 0, 1])
    for probabilities in (False, True):
        t = reference.softmax(np.eye(3)[target] * 2.0) if probabilities else target
        loss, grad = ce(logits, t, backend, reduction="none", **options)
        assert np.isnan(loss[:3]).all() and np.isnan(grad[:3]).all()
        assert np.isfinite(loss[3]) and np.isfinite(grad[3]).all()


@pytest.mark.parametrize("reduction, expected", [("mean", math.nan), ("sum", 0.0)])
def test_every_row_ignored(backend, reduction, expected):
    logits, _, weight, _ = make_problem(backend, np.float64, seed=12, rows=3)
    target = np.full(3, -100)
    for w in (None, weight):
        loss, grad = ce(logits, target, backend, weight=w, reduction=reduction)
        if math.isnan(expected):
            assert np.isnan(loss)
        else:
            assert loss == expected
        assert (grad == 0).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch(backend, reduction):
    loss, grad = ce(np.zeros((0, 4)), np.zeros(0, dtype=int), backend, reduction=reduction)
    assert grad.shape == (0, 4)
    if reduction == "none":
        assert loss.shape == (0,)
    elif reduction == "sum":
        assert loss == 0
    else:
        assert np.isnan(loss)


def test_gradient_rows_sum_to_zero_without_z_loss(backend):
    logits, target, weight, _ = make_problem(backend, np.float64, seed=13)
    _, grad = ce(logits, target, backend, weight=weight, label_smoothing=0.3, reduction="sum")
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-14)


def test_shift_invariance(backend):
    logits, target, weight, _ = make_problem(backend, np.float64, seed=14)
    logits = np.round(logits * 8) / 8  # shifts by 1024 stay exact
    a = ce(logits, target, backend, weight=weight, label_smoothing=0.1, reduction="none")
    b = ce(logits + 1024.0, target, backend, weight=weight, label_smoothing=0.1, reduction="none")
    np.testing.assert_allclose(b[0], a[0], rtol=1e-12)
    np.testing.assert_allclose(b[1], a[1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits(backend, dtype):
    logits = np.array([[1e30, -1e30], [1e30, -1e30], [-1e30, -1e30]], dtype=dtype)
    loss, grad = ce(logits, np.array([0, 1, 0]), backend, reduction="none")
    np.testing.assert_allclose(loss, [0.0, 2e30, math.log(2)], rtol=1e-6)
    np.testing.assert_allclose(grad, [[0, 0], [1, -1], [-0.5, 0.5]], rtol=1e-6)


def test_minus_inf_logits(backend):
    # -inf elsewhere: finite loss, zero gradient there (no smoothing term 0 * inf).
    logits = np.array([[0.0, -np.inf, 2.0], [-np.inf, 1.0, 1.0]])
    loss, grad = ce(logits, np.array([0, 2]), backend, reduction="none")
    check_against_reference(logits, np.array([0, 2]), backend, "none")
    assert np.isfinite(loss).all()
    assert grad[0, 1] == 0 and grad[1, 0] == 0
    # With smoothing the -inf class enters the loss: +inf, as in PyTorch.
    loss, _ = ce(logits, np.array([0, 2]), backend, reduction="none", label_smoothing=0.1)
    assert (loss == np.inf).all()
    # The target itself at -inf: infinite loss.
    loss, _ = ce(logits, np.array([1, 1]), backend, reduction="none")
    assert loss[0] == np.inf and np.isfinite(loss[1])


def test_weight_dtypes(backend):
    logits, target, _, _ = make_problem(backend, np.float64, seed=15, classes=3)
    expected = ce(logits, target, backend, weight=np.array([1.0, 2.0, 3.0]))
    for weight in ([1, 2, 3], np.array([1, 2, 3], np.int8), np.array([1, 2, 3], np.float16)):
        got = ce(logits, target, backend, weight=weight)
        assert got[0] == pytest.approx(expected[0], rel=1e-15)
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-15)


def test_gradient_matches_finite_differences_of_the_loss(backend):
    logits, target, weight, probabilities = make_problem(
        backend, np.float64, seed=16, rows=3, classes=4
    )
    target[1] = -100
    for t in (target, probabilities):
        options = dict(weight=weight, label_smoothing=0.15, z_loss=0.05)
        _, grad = ce(logits, t, backend, **options)
        h = 1e-6
        numeric = np.empty_like(logits)
        for index in np.ndindex(logits.shape):
            step = np.zeros_like(logits)
            step[index] = h
            up = fastsoftmax.cross_entropy(logits + step, t, backend=backend, **options)
            down = fastsoftmax.cross_entropy(logits - step, t, backend=backend, **options)
            numeric[index] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, numeric, atol=1e-8)
