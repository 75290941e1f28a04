"""The ``numpy`` backend: vectorised NumPy, always available.

It follows the kernel protocol of ``fastsoftmax._backends`` with whole-array NumPy
expressions over a block of rows. Slower than the compiled backends and it
allocates temporaries per call, but it needs nothing beyond NumPy.
"""

import numpy as np


def availability():
    return True, "", np.__version__


def _shifted(x, inv_temperature):
    """``(x - rowmax) * inv_temperature`` and whether each row is usable.

    A row with NaN, +inf or only -inf has no finite maximum; shifting it by
    anything gives NaN, which is the contract's answer for such rows.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(x, axis=1, keepdims=True)
        z = x - m
        if inv_temperature != 1.0:
            z *= inv_temperature
    return z, m


def softmax(x, out, inv_temperature):
    z, _ = _shifted(x, inv_temperature)
    with np.errstate(invalid="ignore", over="ignore"):
        np.exp(z, out=z)
        np.divide(z, np.sum(z, axis=1, keepdims=True), out=out)


def log_softmax(x, out, inv_temperature):
    z, _ = _shifted(x, inv_temperature)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        lse = np.log(np.sum(np.exp(z), axis=1, keepdims=True))
        np.subtract(z, lse, out=out)


def _logsumexp_rows(x):
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        m = np.max(x, axis=1)
        # Rows whose maximum is infinite keep it: -inf for all -inf, +inf for +inf.
        shift = np.where(np.isfinite(m), m, 0).astype(x.dtype)
        s = np.sum(np.exp(x - shift[:, None]), axis=1)
        lse = shift + np.log(s)
        return np.where(np.isinf(m) & ~np.isnan(lse), m, lse)


def logsumexp(x, out):
    out[...] = _logsumexp_rows(x)


def softmax_backward(grad, y, out):
    dot = np.sum(grad * y, axis=1, keepdims=True)
    np.multiply(y, grad - dot, out=out)


def log_softmax_backward(grad, logp, out):
    total = np.sum(grad, axis=1, keepdims=True)
    with np.errstate(over="ignore"):
        p = np.exp(logp)
    np.subtract(grad, p * total, out=out)


def cross_entropy(
    logits, target, weight, loss_out, grad_out, ignore_index, label_smoothing, z_loss, grad_scale
):
    n_classes = logits.shape[1]
    dtype = logits.dtype
    eps = label_smoothing
    w = np.ones(n_classes, dtype) if weight is None else weight
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        lse = _logsumexp_rows(logits)
        nll_all = lse[:, None] - logits  # -log p for every class
        if target.ndim == 1:
            kept = target != ignore_index
            t = np.where(kept, target, 0)
            rows = np.arange(len(t))
            w_y = w[t]
            loss = (1 - eps) * w_y * nll_all[rows, t]
            if eps:  # skipped at eps = 0 so a -inf logit elsewhere cannot give 0 * inf
                loss += (eps / n_classes) * (nll_all @ w)
        else:
            kept = np.ones(len(logits), dtype=bool)
            t_smooth = (1 - eps) * target + eps / n_classes
            loss = np.sum(w * t_smooth * nll_all, axis=1)
        if z_loss:
            loss = loss + z_loss * lse * lse
        loss_out[...] = np.where(kept, loss, 0)
        if grad_out is None:
            return
        p = np.exp(logits - lse[:, None])
        if target.ndim == 1:
            # d/dz of (1-eps) w_y (lse - z_y) + eps/C sum_j w_j (lse - z_j)
            coeff = (1 - eps) * w_y + (eps / n_classes) * w.sum()
            g = coeff[:, None] * p - (eps / n_classes) * w
            g[rows, t] -= (1 - eps) * w_y
        else:
            wt = w * t_smooth
            g = wt.sum(axis=1, keepdims=True) * p - wt
        if z_loss:
            g += (2 * z_loss) * lse[:, None] * p
        g *= grad_scale
        g[~kept] = 0
        grad_out[...] = g


def softmax_topk(x, inv_temperature, probs_out, index_out):
    k = probs_out.shape[1]
    # A stable sort of the negated logits orders by value, ties to the lower index.
    with np.errstate(invalid="ignore"):
        order = np.argsort(-x, axis=1, kind="stable")[:, :k]
    z, m = _shifted(x, inv_temperature)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(z)
        s = np.sum(e, axis=1, keepdims=True)
        probs = np.take_along_axis(e, order, axis=1) / s
    bad = np.isnan(s[:, 0])
    order[bad] = np.arange(k)
    probs[bad] = np.nan
    probs_out[...] = probs
    index_out[...] = order
