"""cross_entropy against ``torch.nn.functional.cross_entropy`` and its autograd
gradient, on every backend, for every option both have (PyTorch is an optional
peer: this module runs where it is installed).

PyTorch puts the class axis at 1; fastsoftmax puts it last, so logits are moved
before they reach PyTorch. PyTorch computes in float64 from the same values.
"""

import numpy as np
import pytest

import fastsoftmax
from strategies import assert_cross_entropy_close, max_side

torch = pytest.importorskip("torch")
F = torch.nn.functional

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]


def torch_cross_entropy(
    logits, target, reduction="mean", weight=None, ignore_index=-100, label_smoothing=0.0
):
    """PyTorch's loss and d(sum or mean of loss)/d(logits), class axis last, in float64."""
    z = torch.tensor(np.moveaxis(np.asarray(logits, np.float64), -1, 1), requires_grad=True)
    target = np.asarray(target)
    if target.dtype.kind == "f":
        t = torch.tensor(np.moveaxis(target.astype(np.float64), -1, 1))
    else:
        t = torch.tensor(target.astype(np.int64))
    w = None if weight is None else torch.tensor(np.asarray(weight, np.float64))
    loss = F.cross_entropy(
        z,
        t,
        weight=w,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
    )
    loss.sum().backward()
    return loss.detach().numpy(), np.moveaxis(z.grad.numpy(), 1, -1)


def problem(backend, dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    shape = tuple(max_side(backend, n) for n in shape)
    logits = rng.normal(scale=3.0, size=shape).astype(dtype)
    target = rng.integers(0, shape[-1], size=shape[:-1])
    weight = rng.uniform(0.2, 2.0, size=shape[-1])
    probabilities = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    return logits, target, weight, probabilities


def compare(logits, target, backend, reduction, **options):
    loss, grad = fastsoftmax.cross_entropy(
        logits, target, reduction=reduction, return_grad=True, backend=backend, **options
    )
    expected_loss, expected_grad = torch_cross_entropy(logits, target, reduction, **options)
    assert_cross_entropy_close(
        loss, grad, expected_loss, expected_grad, logits, target, reduction, **options
    )


OPTION_SETS = [
    {},
    {"weight": True},
    {"label_smoothing": 0.1},
    {"label_smoothing": 1.0},
    {"weight": True, "label_smoothing": 0.3},
    {"ignore_index": -100},
    {"ignore_index": 1, "weight": True, "label_smoothing": 0.2},
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("shape", [(9, 7), (3, 4, 6)], ids=["2d", "3d"])
def test_class_targets(backend, dtype, reduction, options, shape):
    logits, target, weight, _ = problem(backend, dtype, shape)
    options = dict(options)
    if options.pop("weight", False):
        options["weight"] = weight
    if "ignore_index" in options:
        target.reshape(-1)[::3] = options["ignore_index"]
    compare(logits, target, backend, reduction, **options)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "options",
    [o for o in OPTION_SETS if "ignore_index" not in o],
    ids=lambda o: "-".join(o) or "plain",
)
@pytest.mark.parametrize("shape", [(9, 7), (3, 4, 6)], ids=["2d", "3d"])
def test_probability_targets(backend, dtype, reduction, options, shape):
    logits, _, weight, probabilities = problem(backend, dtype, shape, seed=1)
    options = dict(options)
    if options.pop("weight", False):
        options["weight"] = weight
    compare(logits, probabilities.astype(dtype), backend, reduction, **options)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_every_row_ignored(backend, reduction):
    logits, _, weight, _ = problem(backend, np.float64, (3, 4), seed=2)
    target = np.full(3, -100)
    loss, grad = fastsoftmax.cross_entropy(
        logits, target, weight=weight, reduction=reduction, return_grad=True, backend=backend
    )
    expected_loss, expected_grad = torch_cross_entropy(logits, target, reduction, weight=weight)
    np.testing.assert_array_equal(loss, expected_loss)  # NaN for mean, 0 for sum
    np.testing.assert_array_equal(grad, expected_grad)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_minus_inf_logits(backend, label_smoothing):
    logits = np.array([[0.0, -np.inf, 2.0], [-np.inf, 1.0, 1.0]])
    target = np.array([0, 2])
    loss, grad = fastsoftmax.cross_entropy(
        logits,
        target,
        reduction="none",
        label_smoothing=label_smoothing,
        return_grad=True,
        backend=backend,
    )
    expected_loss, expected_grad = torch_cross_entropy(
        logits, target, "none", label_smoothing=label_smoothing
    )
    np.testing.assert_array_equal(np.isinf(loss), np.isinf(expected_loss))
    finite = np.isfinite(expected_loss)
    np.testing.assert_allclose(loss[finite], expected_loss[finite], rtol=1e-13)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits(backend, dtype):
    logits = np.array([[1e30, -1e30, 0.0], [-1e30, -1e30, -1e30]], dtype=dtype)
    compare(logits, np.array([1, 2]), backend, "none")
