"""The ``numpy`` backend: vectorised NumPy, always available.

It follows the kernel protocol of ``fastsoftmax._backends`` with whole-array NumPy
expressions, applied to blocks of rows so that temporaries stay small (and in
cache) whatever the input's size. Slower than the compiled backends, but it
needs nothing beyond NumPy.
"""

import numpy as np

# Elements per block of rows: temporaries are a few times this, never the input's size.
BLOCK_ELEMENTS = 1 << 15


def availability():
    return True, "", np.__version__


def _row_blocks(x):
    """Slices covering the rows of `x` in blocks of about BLOCK_ELEMENTS elements."""
    n_rows, n_cols = x.shape
    step = max(1, BLOCK_ELEMENTS // max(n_cols, 1))
    return [slice(start, start + step) for start in range(0, n_rows, step)]


def _shifted(x, inv_temperature):
    """``(x - rowmax) * inv_temperature`` and the row maxima.

    A row with NaN, +inf or only -inf has no finite maximum; shifting it by
    anything gives NaN, which is the contract's answer for such rows. Away
    from 1 the temperature's product is taken in float64: in float32 the
    rounded inverse temperature and the extra rounding would cost up to
    1.2e-5 on log-probabilities near -100, beyond the contract's 1e-5.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(x, axis=1, keepdims=True)
        if inv_temperature == 1.0:
            return x - m, m
        z = np.subtract(x, m, dtype=np.float64)
        z *= inv_temperature
    return z, m


def softmax(x, out, inv_temperature):
    for rows in _row_blocks(x):
        _softmax_block(x[rows], out[rows], inv_temperature)


def _softmax_block(x, out, inv_temperature):
    z, _ = _shifted(x, inv_temperature)
    with np.errstate(invalid="ignore", over="ignore"):
        np.exp(z, out=z)
        np.divide(z, np.sum(z, axis=1, keepdims=True), out=out)


def log_softmax(x, out, inv_temperature):
    for rows in _row_blocks(x):
        _log_softmax_block(x[rows], out[rows], inv_temperature)


def _log_softmax_block(x, out, inv_temperature):
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
    for rows in _row_blocks(x):
        out[rows] = _logsumexp_rows(x[rows])


def softmax_backward(grad, y, out):
    for rows in _row_blocks(grad):
        g, p = grad[rows], y[rows]
        dot = np.sum(g * p, axis=1, keepdims=True)
        np.multiply(p, g - dot, out=out[rows])


def log_softmax_backward(grad, logp, out):
    for rows in _row_blocks(grad):
        g = grad[rows]
        total = np.sum(g, axis=1, keepdims=True)
        with np.errstate(over="ignore"):
            p = np.exp(logp[rows])
        np.subtract(g, p * total, out=out[rows])


def cross_entropy(
    logits, target, weight, loss_out, grad_out, ignore_index, label_smoothing, z_loss, grad_scale
):
    for rows in _row_blocks(logits):
        _cross_entropy_block(
            logits[rows],
            target[rows],
            weight,
            loss_out[rows],
            None if grad_out is None else grad_out[rows],
            ignore_index,
            label_smoothing,
            z_loss,
            grad_scale,
        )


def _cross_entropy_block(
    logits, target, weight, loss_out, grad_out, ignore_index, label_smoothing, z_loss, grad_scale
):
    # Block-sized temporaries are reused in place so that no more than three
    # are alive at once: the shifted logits (then -log p), the exponentials
    # (then p, then the gradient) and, for probability targets, w * t.
    n_classes = logits.shape[1]
    dtype = logits.dtype
    eps = label_smoothing
    w = np.ones(n_classes, dtype) if weight is None else weight
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        lse = _logsumexp_rows(logits)
        z, _ = _shifted(logits, 1.0)
        e = np.exp(z)
        s = np.sum(e, axis=1, keepdims=True)
        # -log p for every class from the shifted logits: lse - logits would
        # lose the loss to cancellation when the logits are large.
        nll_all = np.subtract(np.log(s), z, out=z)
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
            # w * ((1 - eps) t + eps / C), the smoothed and weighted targets
            wt = np.multiply(target, 1 - eps)
            if eps:
                wt += eps / n_classes
            wt *= w
            loss = np.einsum("ij,ij->i", wt, nll_all)
        if z_loss:
            loss = loss + z_loss * lse * lse
        loss_out[...] = np.where(kept, loss, 0)
        if grad_out is None:
            return
        p = np.divide(e, s, out=e)
        # The gradient is (per-row coefficient) * p minus a per-class term:
        # d/dz of sum_j w_j t_j (lse - z_j) + z_loss lse^2.
        z_term = (2 * z_loss) * lse if z_loss else 0
        if target.ndim == 1:
            coeff = (1 - eps) * w_y + (eps / n_classes) * w.sum() + z_term
            g = np.multiply(p, coeff[:, None], out=p)
            if eps:
                g -= (eps / n_classes) * w
            g[rows, t] -= (1 - eps) * w_y
        else:
            coeff = wt.sum(axis=1) + z_term
            g = np.multiply(p, coeff[:, None], out=p)
            g -= wt
        g *= grad_scale
        g[~kept] = 0
        grad_out[...] = g


def softmax_topk(x, inv_temperature, probs_out, index_out):
    for rows in _row_blocks(x):
        _softmax_topk_block(x[rows], inv_temperature, probs_out[rows], index_out[rows])


def _softmax_topk_block(x, inv_temperature, probs_out, index_out):
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
