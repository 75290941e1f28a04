"""The one test oracle: plain float64 NumPy, written for clarity, not speed.

Every backend is compared against these functions. They take the class axis
last and work row by row in float64, independent of the package's own code.
"""

import numpy as np


def _rows(x):
    x = np.asarray(x, dtype=np.float64)
    # An explicit row count: reshape cannot infer -1 when the class axis is empty.
    n_rows = int(np.prod(x.shape[:-1]))
    return x.reshape(n_rows, x.shape[-1]), x.shape


def logsumexp(x):
    """log(sum(exp(x))) over the last axis; -inf for empty or all -inf rows."""
    rows, shape = _rows(x)
    result = np.empty(len(rows))
    for i, row in enumerate(rows):
        if row.size == 0 or np.all(row == -np.inf):
            result[i] = -np.inf
        elif np.isnan(row).any():
            result[i] = np.nan
        elif np.isposinf(row).any():
            result[i] = np.inf
        else:
            m = row.max()
            result[i] = m + np.log(np.sum(np.exp(row - m)))
    return result.reshape(shape[:-1])


def _usable(row):
    """Rows with a finite maximum and no NaN have a defined softmax."""
    return row.size > 0 and not np.isnan(row).any() and np.isfinite(row.max())


def log_softmax(x, temperature=1.0):
    rows, shape = _rows(x)
    result = np.full(rows.shape, np.nan)
    for i, row in enumerate(rows):
        if _usable(row):
            z = (row - row.max()) / temperature
            result[i] = z - np.log(np.sum(np.exp(z)))
    return result.reshape(shape)


def softmax(x, temperature=1.0):
    rows, shape = _rows(x)
    result = np.full(rows.shape, np.nan)
    for i, row in enumerate(rows):
        if _usable(row):
            e = np.exp((row - row.max()) / temperature)
            result[i] = e / e.sum()
    return result.reshape(shape)


def softmax_backward(grad, y):
    grad = np.asarray(grad, np.float64)
    y = np.asarray(y, np.float64)
    return y * (grad - np.sum(grad * y, axis=-1, keepdims=True))


def log_softmax_backward(grad, logp):
    grad = np.asarray(grad, np.float64)
    logp = np.asarray(logp, np.float64)
    return grad - np.exp(logp) * np.sum(grad, axis=-1, keepdims=True)


def cross_entropy(
    logits, target, weight=None, ignore_index=-100, reduction="mean",
    label_smoothing=0.0, z_loss=0.0,
):
    """(loss, grad) by the formulas of DESIGN.md, one row at a time.

    The gradient is of the reduced loss (of the sum for reduction="none").
    """
    z, shape = _rows(logits)
    n_rows, n_classes = z.shape
    w = np.ones(n_classes) if weight is None else np.asarray(weight, np.float64)
    eps = label_smoothing
    probability_target = np.asarray(target).dtype.kind == "f"
    t = np.asarray(target, np.float64 if probability_target else np.int64)
    t = t.reshape(n_rows, n_classes) if probability_target else t.reshape(n_rows)
    loss = np.zeros(n_rows)
    grad = np.zeros((n_rows, n_classes))
    denominator = 0.0
    for i in range(n_rows):
        if not probability_target and t[i] == ignore_index:
            continue
        lse = logsumexp(z[i])
        p = softmax(z[i])
        # -log p from the shifted logits: exact to rounding even where lse - z
        # would cancel (huge logits).
        nll = -log_softmax(z[i])
        if probability_target:
            q = (1 - eps) * t[i] + eps / n_classes
            loss[i] = np.sum(w * q * nll)
            grad[i] = np.sum(w * q) * p - w * q
            denominator += 1.0
        else:
            y = t[i]
            loss[i] = (1 - eps) * w[y] * nll[y]
            grad[i] = (1 - eps) * w[y] * p
            grad[i, y] -= (1 - eps) * w[y]
            if eps:
                loss[i] += eps / n_classes * np.sum(w * nll)
                grad[i] += eps / n_classes * (w.sum() * p - w)
            denominator += w[y]
        loss[i] += z_loss * lse**2
        grad[i] += 2 * z_loss * lse * p
    grad = grad.reshape(shape)
    if reduction == "none":
        return loss.reshape(shape[:-1]), grad
    if reduction == "sum":
        return loss.sum(), grad
    with np.errstate(invalid="ignore", divide="ignore"):
        return loss.sum() / denominator, grad / denominator


def softmax_topk(x, k, temperature=1.0):
    """Top-k probabilities and indices, ordered by logit, ties to the lower index.

    Ordering by logit keeps the probabilities descending and stays well defined
    where distinct logits give equal (say, underflowed) probabilities.
    """
    p, shape = _rows(softmax(x, temperature))
    logits, _ = _rows(x)
    probs = np.empty((len(p), k))
    index = np.empty((len(p), k), dtype=np.int64)
    for i, (row, z) in enumerate(zip(p, logits)):
        if np.isnan(row).any():
            probs[i], index[i] = np.nan, np.arange(k)
            continue
        order = sorted(range(len(row)), key=lambda j: (-z[j], j))[:k]
        probs[i], index[i] = row[order], order
    return probs.reshape(shape[:-1] + (k,)), index.reshape(shape[:-1] + (k,))
