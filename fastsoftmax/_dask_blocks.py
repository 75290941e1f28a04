"""What each Dask task of ``fastsoftmax.dask`` computes, on plain NumPy blocks.

Two families: wrappers that call the local kernels on a block whose class axis
is whole (the row-chunked plan), and what the class-chunked plan computes from
the merged states of ``_dask_states``: per-row results, and the second pass,
which moves a chunk's local softmax onto its row's scale, or computes its
log_softmax from the row's maximum and sum. Nothing here imports
Dask, so workers only need NumPy and this package.
"""

import math
from dataclasses import dataclass

import numpy as np

import fastsoftmax

from . import _dask_states as states


@dataclass(frozen=True)
class CrossEntropyOptions:
    """The validated scalar options of one cross_entropy call."""

    n_classes: int
    ignore_index: int
    label_smoothing: float
    z_loss: float
    class_targets: bool
    kernel_dtype: np.dtype
    result_dtype: np.dtype


# --- class targets -------------------------------------------------------------


def checked_class_targets(target, *, n_classes, ignore_index, block_info=None):
    """`target` as int64, or the local function's ValueError naming the bad row.

    The row is named by its index in the whole target array, found from the
    block's location.
    """
    target = target.astype(np.int64, copy=False)
    bad = ((target < 0) | (target >= n_classes)) & (target != ignore_index)
    if bad.any():
        local = np.unravel_index(int(np.argmax(bad.ravel())), target.shape)
        value = int(target[local])
        starts = [start for start, _ in block_info[0]["array-location"]] if target.ndim else []
        row = tuple(int(i + s) for i, s in zip(local, starts, strict=True))
        where = f"target[{', '.join(map(str, row))}]" if row else "target"
        raise ValueError(
            f"{where} = {value} is outside [0, {n_classes}) and is not "
            f"ignore_index ({ignore_index})"
        )
    return target


def target_weights(target, weight, *, ignore_index):
    """``w[y]`` per row (1 without weights), 0 for ignored rows, as float64."""
    kept = target != ignore_index
    if weight is None:
        return kept.astype(np.float64)
    return np.where(kept, weight[np.where(kept, target, 0)], 0.0)


def finish_loss(total, denominator, *, reduction, result_dtype):
    """The reduced loss as a scalar of the result dtype (a mean over nothing is NaN)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        value = total / denominator if reduction == "mean" else total
    return result_dtype.type(value)


def gradient_scale(denominator):
    """What the gradient of a mean is multiplied by, as the local function does."""
    denominator = float(denominator)  # a 0-d block inside a task
    return np.float64(1.0 / denominator if denominator else math.inf)


# --- the row-chunked plan: local kernels on whole rows -----------------------------


def softmax_topk_rows(x, *, k, temperature, backend):
    """Local softmax_topk of a block whose class axis (last) is whole."""
    return fastsoftmax.softmax_topk(x, k, temperature=temperature, backend=backend)


def cross_entropy_rows(
    logits, target, *extra, options, has_weight, has_scale, return_grad, backend
):
    """Per-row losses (and the gradient of their sum times the scale) of whole rows.

    `extra` holds the class weights when `has_weight`, then the gradient's
    factor (a 0-d array) when `has_scale`.
    """
    extra = list(extra)
    weight = extra.pop(0) if has_weight else None
    scale = extra.pop(0) if has_scale else None
    result = fastsoftmax.cross_entropy(
        logits,
        target,
        weight=weight,
        ignore_index=options.ignore_index,
        reduction="none",
        label_smoothing=options.label_smoothing,
        z_loss=options.z_loss,
        return_grad=return_grad,
        backend=backend,
    )
    if not return_grad:
        return result
    loss, grad = result
    if scale is not None:
        with np.errstate(invalid="ignore", over="ignore"):
            np.multiply(grad, float(scale), out=grad, casting="unsafe")
        if options.class_targets:  # an infinite scale (no kept weight) must leave them 0
            grad[target == options.ignore_index] = 0
    return loss, grad


# --- the class-chunked plan: second pass from merged states -------------------------


def _chunk_to_row(chunk_state, state, inv_temperature):
    """Per row, ``log(sum_chunk / sum_row)`` on the rows' common scale, and the rows to empty.

    A chunk's local softmax times ``exp`` of the first is the row's softmax.
    It is NaN for rows without a finite maximum (NaN, +inf or only -inf
    anywhere): their results are NaN. The second marks the other rows whose
    chunk holds only ``-inf``, where the local result is NaN but the row's is 0.
    """
    row_max, chunk_max = state["max"], chunk_state["max"]
    defined = np.isfinite(row_max)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_ratio = (
            np.log(chunk_state["sum"])
            + (chunk_max - row_max) * inv_temperature
            - np.log(state["sum"])
        )
    return np.where(defined, log_ratio, np.nan), defined & (chunk_max == -np.inf)


def _row_softmax(x, chunk_state, state, temperature, backend):
    """The row-wide softmax over one chunk, from the local kernel, in x's dtype."""
    log_ratio, empty = _chunk_to_row(chunk_state, state, 1.0 / temperature)
    p = fastsoftmax.softmax(x, temperature=temperature, backend=backend)
    p *= np.exp(log_ratio).astype(x.dtype)[..., None]
    p[empty] = 0
    return p


# Elements per slab of `_row_log_softmax`: its float64 temporaries stay at a
# few MiB whatever the chunk's size.
SLAB_ELEMENTS = 1 << 18


def _row_log_softmax(x, state, inv_temperature, result_dtype):
    """The row-wide log_softmax over one chunk, straight from its rows' merged state.

    ``(x - m) * t - log(s)`` is taken in float64 and rounded once into the
    result. (The chunk's local log_softmax plus the log of its share of the
    row's sum rounded three times in float32 and missed the contract's 1e-5
    near -100, at any temperature.) Halving before the difference keeps huge
    logits of opposite signs finite, as the kernels do; a row without a
    finite maximum, or whose sum is NaN, comes out NaN.
    """
    row_max = state["max"]
    with np.errstate(divide="ignore", invalid="ignore"):
        half_max = np.where(np.isfinite(row_max), row_max * 0.5, np.nan).reshape(-1, 1)
        log_sum = np.log(state["sum"]).reshape(-1, 1)
    n_classes = x.shape[-1]
    out = np.empty(x.shape, result_dtype)
    # The row count from the state, not -1: a chunk may have no classes.
    shape = (len(half_max), n_classes)
    x_rows, out_rows = x.reshape(shape), out.reshape(shape)
    step = max(1, SLAB_ELEMENTS // max(n_classes, 1))
    twice_t = 2.0 * inv_temperature
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, len(x_rows), step):
            rows = slice(start, start + step)
            z = np.multiply(x_rows[rows], 0.5, dtype=np.float64)
            z -= half_max[rows]
            z *= twice_t
            z -= log_sum[rows]
            out_rows[rows] = z
    return out


def rowwise_from_state(
    x, chunk_state, state, *, log, temperature, kernel_dtype, result_dtype, backend
):
    """softmax (or log_softmax) of one chunk, given its own and its rows' merged states."""
    x = x.astype(kernel_dtype, copy=False)
    if log:
        return _row_log_softmax(x, state, 1.0 / temperature, result_dtype)
    return _row_softmax(x, chunk_state[..., 0], state, temperature, backend).astype(
        result_dtype, copy=False
    )


def logsumexp_from_state(state, *, result_dtype):
    """The log-sum-exp per row."""
    return states.logsumexp_of(state).astype(result_dtype)


def topk_probs_from_state(state, *, inv_temperature, result_dtype):
    """The probabilities of the merged top-k candidates; NaN for NaN-softmax rows."""
    maxima = state["max"][..., None]
    with np.errstate(invalid="ignore", over="ignore"):
        probs = np.exp((state["top_logits"] - maxima) * inv_temperature) / state["sum"][..., None]
    probs[~np.isfinite(state["max"])] = np.nan
    return probs.astype(result_dtype)


def topk_indices_from_state(state):
    """The classes of the merged top-k candidates; ``0..k-1`` for NaN-softmax rows."""
    indices = state["top_indices"].copy()
    indices[~np.isfinite(state["max"])] = np.arange(indices.shape[-1])
    return indices


def cross_entropy_loss_from_state(state, target, row_weight, *, options, dtype):
    """Per-row loss of `dtype` from the merged states; 0 for ignored rows.

    ``lse - z_j`` is taken as ``log(sum) + (max - z_j)``, which keeps the loss
    when the logits are huge and lse - z_j would cancel. Rows without a finite
    maximum (NaN, +inf or only -inf) give NaN, as the local function does.
    """
    finite = np.isfinite(state["max"])
    log_sum = np.where(finite, states.log_sum(state), np.nan)
    eps = options.label_smoothing
    with np.errstate(invalid="ignore", over="ignore"):
        # sum_j q_j (lse - z_j) = q_total log(sum) + sum_j q_j (max - z_j)
        spread = state["q_total"] * log_sum + state["q_gap"]
        if options.class_targets:
            kept = target != options.ignore_index
            nll_target = log_sum + (state["max"] - state["target_logit"])
            loss = (1 - eps) * row_weight * nll_target
            if eps:
                loss += spread
        else:
            kept = True
            loss = spread
        if options.z_loss:
            lse = state["max"] + log_sum
            loss += options.z_loss * lse * lse
        return np.where(kept, loss, 0.0).astype(dtype)


def cross_entropy_grad_from_state(
    logits,
    classes,
    target,
    weight,
    row_weight,
    scale,
    chunk_state,
    state,
    *,
    options,
    weight_total,
    backend,
):
    """The gradient of the reduced loss for one chunk, from the merged states.

    `weight` is the chunk's class weights or None, `row_weight` the rows'
    ``w[y]`` (0 when ignored), `scale` the factor of a mean (1 otherwise, a
    0-d array when it depends on the targets), `chunk_state` and `state` the
    chunk's own and the rows' merged states, and `weight_total` the sum of
    all class weights.
    """
    dtype = options.kernel_dtype
    z = logits.astype(dtype, copy=False)
    if not z.shape[-1]:
        return np.empty(z.shape, dtype=options.result_dtype)
    eps = options.label_smoothing
    smooth = eps / options.n_classes
    # NaN rows where the row has no finite maximum, as the local kernels give.
    p = _row_softmax(z, chunk_state[..., 0], state, 1.0, backend)
    with np.errstate(invalid="ignore", over="ignore"):
        if options.class_targets:
            kept = target != options.ignore_index
            coeff = (1 - eps) * row_weight + smooth * weight_total
            grad = coeff.astype(dtype)[..., None] * p
            if eps:
                grad -= dtype.type(smooth) if weight is None else (smooth * weight).astype(dtype)
            column = target - classes[0]
            inside = kept & (column >= 0) & (column < z.shape[-1])
            rows = np.nonzero(inside)
            grad[rows + (column[inside],)] -= ((1 - eps) * row_weight[inside]).astype(dtype)
        else:
            q = (1 - eps) * target.astype(dtype, copy=False) + dtype.type(smooth)
            if weight is not None:
                q *= weight.astype(dtype)
            grad = state["q_total"].astype(dtype)[..., None] * p - q
        if options.z_loss:
            lse = states.logsumexp_of(state)
            grad += (2 * options.z_loss * lse).astype(dtype)[..., None] * p
        grad *= dtype.type(float(scale))
        if options.class_targets:
            grad[~kept] = 0
    return grad.astype(options.result_dtype, copy=False)
