"""Per-row summaries of one class chunk, and the rule that merges them.

When the class axis of a Dask array is split across chunks, every chunk is
reduced to one small *state* per row, a NumPy structured array, and a Dask
reduction merges the states of a row's chunks. Nothing here imports Dask:
these functions run inside tasks, on plain NumPy blocks whose class axis is
last. The fields of a state:

``max``, ``sum``
    The online-softmax pair: the row's largest logit ``m`` and
    ``sum(exp((x - m) / T))``. A chunk of only ``-inf`` has ``m = -inf`` and
    sum 0. Merging rescales each sum to the larger maximum.
``target_logit``
    cross_entropy with class targets: the logit of the row's target, taken
    from the one chunk that holds that class (the others hold 0), so merging
    adds.
``q_total``, ``q_gap``
    cross_entropy: for the loss terms ``q_j * (lse - z_j)`` (label smoothing,
    probability targets), ``sum_j q_j`` and ``sum_j q_j * (shift - z_j)``,
    where ``shift`` is the state's ``max`` when finite, else 0. Gaps measured
    from the maximum are small and non-negative, so the merged sums lose
    nothing to cancellation; ``-inf`` logits give infinite gaps, exactly as
    the local kernels' ``lse - z_j`` does.
``top_logits``, ``top_indices``
    softmax_topk: the ``k`` best (logit, class) candidates ordered by logit,
    equal logits by lower class. Short chunks pad with ``(-inf, INDEX_PAD)``,
    which sorts after every real candidate.
"""

import numpy as np

import fastsoftmax

INDEX_PAD = np.iinfo(np.int64).max

_SOFTMAX_FIELDS = [("max", np.float64), ("sum", np.float64)]
SOFTMAX_STATE = np.dtype(_SOFTMAX_FIELDS)
CROSS_ENTROPY_STATE = np.dtype(
    _SOFTMAX_FIELDS + [("target_logit", np.float64), ("q_total", np.float64), ("q_gap", np.float64)]
)


def topk_state_dtype(k):
    """The state of `softmax_topk`: the softmax pair and ``k`` candidates."""
    return np.dtype(
        _SOFTMAX_FIELDS + [("top_logits", np.float64, (k,)), ("top_indices", np.int64, (k,))]
    )


def shift_of(maxima):
    """The value gaps are measured from: the maximum when finite, else 0."""
    return np.where(np.isfinite(maxima), maxima, 0.0)


def _new_state(batch_shape, dtype):
    """A state of `dtype` that holds no class yet (the merge's identity)."""
    state = np.zeros(batch_shape, dtype=dtype)
    state["max"] = -np.inf
    if "top_logits" in dtype.names:
        state["top_logits"] = -np.inf
        state["top_indices"] = INDEX_PAD
    return state


def _fill_from_local_top(state, x, k, temperature, backend):
    """Fill ``max``, ``sum`` and any ``top_logits`` from one local call; return the order.

    The local ``softmax_topk`` kernel reads the chunk `x` (class axis last,
    width >= 1) once; its top probability is ``exp(0) / sum``, which gives the
    sum. Rows whose chunk softmax is NaN (only ``-inf``, or NaN or ``+inf``
    present) take their maximum from NumPy and sum 0. Their candidates come
    back as ``0..k-1``: the right order for a chunk of only ``-inf``, and any
    other such row is NaN as a whole. The order is the candidates' positions
    in `x`.
    """
    probs, order = fastsoftmax.softmax_topk(x, k, temperature=temperature, backend=backend)
    logits = np.take_along_axis(x, order, axis=-1)
    top = probs[..., 0].astype(np.float64)
    unusable = np.isnan(top)
    maxima = logits[..., 0].astype(np.float64)
    maxima[unusable] = np.max(x[unusable], axis=-1)
    with np.errstate(divide="ignore"):
        state["sum"] = np.where(unusable, 0.0, 1.0 / top)
    state["max"] = maxima
    if "top_logits" in state.dtype.names:
        state["top_logits"][..., :k] = logits
    return order


def softmax_state(x, *, temperature, kernel_dtype, backend):
    """The (max, sum) state of one chunk, class axis kept with length 1."""
    x = x.astype(kernel_dtype, copy=False)
    state = _new_state(x.shape[:-1], SOFTMAX_STATE)
    if x.shape[-1]:
        _fill_from_local_top(state, x, 1, temperature, backend)
    return state[..., np.newaxis]


def topk_state(x, classes, *, k, temperature, kernel_dtype, backend):
    """The state of one chunk for softmax_topk; `classes` are the chunk's class ids."""
    x = x.astype(kernel_dtype, copy=False)
    state = _new_state(x.shape[:-1], topk_state_dtype(k))
    width = x.shape[-1]
    if width:
        k_here = min(k, width)
        order = _fill_from_local_top(state, x, k_here, temperature, backend)
        state["top_indices"][..., :k_here] = order + classes[0]
    return state[..., np.newaxis]


def cross_entropy_state(logits, classes, target, weight, *, options, backend):
    """The state of one chunk for cross_entropy.

    `classes` are the chunk's class ids, `target` the rows' class indices (or
    the chunk's target probabilities) and `weight` the chunk's class weights
    or None; `options` is a ``CrossEntropyOptions``.
    """
    z = logits.astype(options.kernel_dtype, copy=False)
    state = _new_state(z.shape[:-1], CROSS_ENTROPY_STATE)
    width = z.shape[-1]
    if not width:
        return state[..., np.newaxis]
    _fill_from_local_top(state, z, 1, 1.0, backend)
    eps = options.label_smoothing
    if options.class_targets:
        column = target - classes[0]
        inside = (column >= 0) & (column < width)
        rows = np.nonzero(inside)
        state["target_logit"][rows] = z[rows + (column[inside],)]
        if not eps:  # no smoothing term at all, so a -inf logit cannot give 0 * inf
            return state[..., np.newaxis]
        q = (
            np.full(width, eps / options.n_classes)
            if weight is None
            else weight * (eps / options.n_classes)
        )
        q = q.astype(z.dtype)
    else:
        q = (1 - eps) * target.astype(z.dtype, copy=False) + z.dtype.type(eps / options.n_classes)
        if weight is not None:
            q *= weight.astype(z.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        gaps = shift_of(state["max"]).astype(z.dtype)[..., None] - z
        gaps *= q
        state["q_total"] = np.sum(np.broadcast_to(q, z.shape), axis=-1)
        state["q_gap"] = np.sum(gaps, axis=-1)
    return state[..., np.newaxis]


def keep(states, axis, keepdims):
    """The reduction's per-chunk step: chunk states come already reduced."""
    return states


def merge(states, axis, keepdims, *, inv_temperature=1.0):
    """Merge states along `axis` (a one-element tuple, as Dask's reduction passes it)."""
    (axis,) = axis
    names = states.dtype.names
    maxima = states["max"]
    new_max = np.max(maxima, axis=axis, keepdims=True)  # NaN wins, then +inf
    merged = np.empty(new_max.shape, dtype=states.dtype)
    merged["max"] = new_max
    with np.errstate(invalid="ignore", over="ignore"):
        # The online-softmax rule; all -inf parts hold nothing (and would give
        # exp(-inf - -inf) = NaN when every part is -inf).
        rescaled = np.where(
            maxima == -np.inf, 0.0, states["sum"] * np.exp((maxima - new_max) * inv_temperature)
        )
        merged["sum"] = np.sum(rescaled, axis=axis, keepdims=True)
        if "target_logit" in names:
            merged["target_logit"] = np.sum(states["target_logit"], axis=axis, keepdims=True)
        if "q_gap" in names:
            moved = states["q_gap"] + states["q_total"] * (shift_of(new_max) - shift_of(maxima))
            merged["q_gap"] = np.sum(moved, axis=axis, keepdims=True)
            merged["q_total"] = np.sum(states["q_total"], axis=axis, keepdims=True)
    if "top_logits" in names:
        merged["top_logits"], merged["top_indices"] = _merge_top(states, axis)
    return merged if keepdims else merged.squeeze(axis)


def _merge_top(states, axis):
    """The best k of all candidates along `axis`, by logit, ties to the lower class."""
    k = states.dtype["top_logits"].shape[0]
    logits = np.moveaxis(states["top_logits"], axis, -2)
    indices = np.moveaxis(states["top_indices"], axis, -2)
    candidates = logits.shape[:-2] + (logits.shape[-2] * k,)
    logits, indices = logits.reshape(candidates), indices.reshape(candidates)
    order = np.lexsort((indices, -logits), axis=-1)[..., :k]
    best = np.take_along_axis(logits, order, axis=-1), np.take_along_axis(indices, order, axis=-1)
    return tuple(np.expand_dims(b, axis) for b in best)


def log_sum(state):
    """``lse - shift`` per row: ``log(sum)`` for a finite max, else the max itself."""
    maxima = state["max"]
    with np.errstate(divide="ignore"):
        return np.where(np.isfinite(maxima), np.log(state["sum"]), maxima)


def logsumexp_of(state):
    """The log-sum-exp per row (of the logits as they are, without temperature)."""
    return shift_of(state["max"]) + log_sum(state)
