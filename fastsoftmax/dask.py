"""softmax and its relatives on Dask arrays chunked any way along rows and classes.

Import this module explicitly (``import fastsoftmax.dask``); ``import
fastsoftmax`` never loads Dask. Each function takes a Dask array (any other
array is wrapped with its class axis in one chunk), checks what it can from
shapes, dtypes and options at once, and returns lazy Dask arrays. Errors that
need the data, such as a class index out of range, are raised by ``compute()``
with the message of the local function.

The plan follows the chunks of the class axis, which is never rechunked:

* **Class axis in one chunk** (row-chunked): every block of rows goes through
  the local function (``fastsoftmax.softmax`` ...) with the given `backend`.
* **Class axis split across chunks** (vocabulary-parallel): a first pass reduces
  every chunk to a small state per row: the online-softmax pair (max, sum of
  exp), and what the operation needs besides (the target logit, top-k
  candidates). A Dask reduction with a combine step merges the states of a
  row's chunks as a tree, with the same NaN and infinity rules as the local
  kernels. softmax, log_softmax and the cross-entropy gradient then take a
  second, elementwise pass per chunk; logsumexp, softmax_topk and the
  cross-entropy loss come straight from the merged states. These passes run
  in NumPy; the local kernels still pick each chunk's top-k candidates.

Unlike the local functions these take no ``out`` or ``grad_out``: store results
with ``dask.array.store`` or ``dask.array.to_zarr``. Reduced cross-entropy
losses are 0-d Dask arrays. Every task calls the local kernels, which may use
threads of their own (``fastsoftmax.set_num_threads``); with a scheduler that
already runs one task per core, a serial backend avoids oversubscription.
See ``docs/dask.md`` for scoring a dataset larger than memory.
"""

import math
from functools import partial

import dask.array as da
import numpy as np

import fastsoftmax

from . import _checks, _dask_blocks, _dask_states, _dispatch, _host
from ._cross_entropy import check_options, check_weight
from ._softmax import _check_k

__all__ = ["cross_entropy", "log_softmax", "logsumexp", "softmax", "softmax_topk"]


# --- graph helpers ----------------------------------------------------------------


def _as_dask(x, name, class_axis):
    """`x` itself if it is a Dask array, else wrapped with `class_axis` in one chunk."""
    if isinstance(x, da.Array):
        return x
    array = _host.as_host_array(x, name)
    axis = _checks.normalize_axis(class_axis, array.ndim)
    return da.from_array(array, chunks=tuple(-1 if i == axis else "auto" for i in range(array.ndim)))


def _check_known_chunks(x, name, axes):
    for axis in axes:
        if any(math.isnan(c) for c in x.chunks[axis]):
            raise ValueError(
                f"{name} has unknown chunk sizes along axis {axis}; call "
                f"{name}.compute_chunk_sizes() first"
            )


def _check_backend(backend):
    """The backend's name as the local functions check it (they run it in the tasks)."""
    _dispatch.choose(backend, 0)


def _meta(ndim, dtype):
    return np.empty((0,) * ndim, dtype=dtype)


def _class_last(x, axis):
    return x if axis == x.ndim - 1 else da.moveaxis(x, axis, -1)


def _class_back(x, axis):
    return x if axis == x.ndim - 1 else da.moveaxis(x, -1, axis)


def _split(x, axis):
    """True when the class axis spans more than one chunk."""
    return x.numblocks[axis] > 1


class _Indices:
    """Blockwise index labels of an array whose class axis is last."""

    def __init__(self, ndim):
        self.block = tuple(range(ndim))
        self.rows = self.block[:-1]
        self.classes = (ndim - 1,)
        self.spare = (ndim,)  # a label contracted away, e.g. the whole weight vector


def _merged_states(state_of_chunk, dtype, x, *aligned, inv_temperature=1.0):
    """Per-row states of `x` (class axis last and split), merged over its class chunks.

    ``state_of_chunk(x_block, *aligned_blocks)`` returns a block's states with
    the class axis kept at length 1; `aligned` are blockwise ``(array, index)``
    pairs. Returns a Dask array of the batch shape with structured dtype `dtype`.
    """
    ix = _Indices(x.ndim)
    per_chunk = da.blockwise(
        state_of_chunk,
        ix.block,
        x,
        ix.block,
        *aligned,
        adjust_chunks={ix.classes[0]: 1},
        dtype=dtype,
        meta=_meta(x.ndim, dtype),
        token="fastsoftmax-chunk-states",
    )
    merge = partial(_dask_states.merge, inv_temperature=inv_temperature)
    return da.reduction(
        per_chunk,
        _dask_states.keep,
        merge,
        combine=merge,
        axis=x.ndim - 1,
        dtype=dtype,
        meta=_meta(x.ndim - 1, dtype),
        name="fastsoftmax-merge-states",
    )


def _class_ids(x):
    """The class index of every column of `x` (class axis last), chunked like it."""
    return da.arange(x.shape[-1], chunks=(x.chunks[-1],))


# --- public functions -------------------------------------------------------------


def _rowwise(op, x, axis, temperature, dtype, backend):
    """Shared body of softmax and log_softmax."""
    inv_t = _checks.inverse_temperature(temperature)
    _check_backend(backend)
    x = _as_dask(x, "x", axis)
    axis = _checks.normalize_axis(axis, x.ndim)
    result_dtype = _checks.result_dtype(x.dtype, dtype)
    if not _split(x, axis):
        local = partial(
            getattr(fastsoftmax, op), axis=axis, temperature=temperature, dtype=result_dtype, backend=backend
        )
        return x.map_blocks(local, dtype=result_dtype, meta=_meta(x.ndim, result_dtype), token=f"fastsoftmax-{op}")
    _check_known_chunks(x, "x", [axis])
    xt = _class_last(x, axis)
    kernel_dtype = _checks.compute_dtype(result_dtype)
    state = _merged_states(
        partial(_dask_states.softmax_state, inv_temperature=inv_t, kernel_dtype=kernel_dtype),
        _dask_states.SOFTMAX_STATE,
        xt,
        inv_temperature=inv_t,
    )
    ix = _Indices(xt.ndim)
    out = da.blockwise(
        partial(
            _dask_blocks.rowwise_from_state,
            log=op == "log_softmax",
            inv_temperature=inv_t,
            kernel_dtype=kernel_dtype,
            result_dtype=result_dtype,
        ),
        ix.block,
        xt,
        ix.block,
        state,
        ix.rows,
        dtype=result_dtype,
        meta=_meta(xt.ndim, result_dtype),
        token=f"fastsoftmax-{op}",
    )
    return _class_back(out, axis)


def softmax(x, axis=-1, *, temperature=1.0, dtype=None, backend="auto"):
    """Lazy softmax along one axis: ``exp(x/T - m) / sum(exp(x/T - m))``.

    Parameters
    ----------
    x : dask.array.Array or array_like
        Logits, chunked any way. Another array is wrapped with its class axis in
        one chunk. dtypes as for `fastsoftmax.softmax`.
    axis : int, optional
        The class axis, the last one by default.
    temperature : float, optional
        ``T``, finite and positive.
    dtype : dtype, optional
        Floating dtype of the result; by default the input's float dtype, or
        float64.
    backend : str, optional
        The backend the local kernels use in each task (``"auto"`` by default).

    Returns
    -------
    dask.array.Array
        Probabilities of `x`'s shape and chunks.

    Raises
    ------
    TypeError
        For complex, object or string input or a non-floating `dtype`.
    ValueError
        For a bad `temperature` or backend name, or unknown chunk sizes along
        a split class axis.
    numpy.exceptions.AxisError
        If `axis` is out of range.
    RuntimeError
        If the named backend is not available here.

    Notes
    -----
    With the class axis split across chunks, every chunk is read twice: once
    for the rows' (max, sum) and once for the probabilities. Rows with NaN or
    ``+inf``, or only ``-inf``, anywhere in the row are NaN; ``-inf`` entries of
    other rows are exactly 0.

    Examples
    --------
    >>> import dask.array as da
    >>> import fastsoftmax.dask as fsd
    >>> x = da.from_array([[1.0, 2.0, 3.0, 4.0]], chunks=(1, 2))
    >>> fsd.softmax(x).compute().round(4)
    array([[0.0321, 0.0871, 0.2369, 0.6439]])
    """
    return _rowwise("softmax", x, axis, temperature, dtype, backend)


def log_softmax(x, axis=-1, *, temperature=1.0, dtype=None, backend="auto"):
    """Lazy log-softmax along one axis: ``x/T - logsumexp(x/T)``.

    Parameters
    ----------
    x : dask.array.Array or array_like
        Logits, chunked any way.
    axis : int, optional
        The class axis, the last one by default.
    temperature : float, optional
        Finite and positive.
    dtype : dtype, optional
        Floating dtype of the result.
    backend : str, optional
        The backend of the local kernels in each task.

    Returns
    -------
    dask.array.Array
        Log-probabilities of `x`'s shape and chunks.

    Raises
    ------
    TypeError, ValueError, numpy.exceptions.AxisError, RuntimeError
        As for `softmax`.

    Examples
    --------
    >>> import dask.array as da
    >>> import fastsoftmax.dask as fsd
    >>> x = da.zeros((2, 4), chunks=(1, 2))
    >>> fsd.log_softmax(x).compute()
    array([[-1.38629436, -1.38629436, -1.38629436, -1.38629436],
           [-1.38629436, -1.38629436, -1.38629436, -1.38629436]])
    """
    return _rowwise("log_softmax", x, axis, temperature, dtype, backend)


def logsumexp(x, axis=-1, *, keepdims=False, dtype=None, backend="auto"):
    """Lazy ``log(sum(exp(x)))`` along one axis.

    Parameters
    ----------
    x : dask.array.Array or array_like
        Input, chunked any way.
    axis : int, optional
        The axis reduced, the last one by default.
    keepdims : bool, optional
        Keep the reduced axis with length one.
    dtype : dtype, optional
        Floating dtype of the result.
    backend : str, optional
        The backend of the local kernels in each task.

    Returns
    -------
    dask.array.Array
        The reduced array, chunked like `x` along the other axes.

    Raises
    ------
    TypeError, ValueError, numpy.exceptions.AxisError, RuntimeError
        As for `softmax`.

    Notes
    -----
    A split axis is read once: each chunk gives its rows' (max, sum of exp),
    merged by a tree reduction. Rows of only ``-inf`` give ``-inf``, rows with
    ``+inf`` give ``+inf`` and rows with NaN give NaN, whichever chunks hold them.

    Examples
    --------
    >>> import dask.array as da
    >>> import fastsoftmax.dask as fsd
    >>> x = da.from_array([[1e30, 1e30, -float("inf"), 0.0]], chunks=(1, 2))
    >>> fsd.logsumexp(x).compute()
    array([1.e+30])
    """
    keepdims = bool(keepdims)
    _check_backend(backend)
    x = _as_dask(x, "x", axis)
    axis = _checks.normalize_axis(axis, x.ndim)
    result_dtype = _checks.result_dtype(x.dtype, dtype)
    ix = _Indices(x.ndim)
    if not _split(x, axis):
        local = partial(fastsoftmax.logsumexp, axis=axis, keepdims=keepdims, dtype=result_dtype, backend=backend)
        out_index = ix.block if keepdims else ix.block[:axis] + ix.block[axis + 1 :]
        return da.blockwise(
            local,
            out_index,
            x,
            ix.block,
            adjust_chunks={axis: 1} if keepdims else None,
            concatenate=True,
            dtype=result_dtype,
            meta=_meta(len(out_index), result_dtype),
            token="fastsoftmax-logsumexp",
        )
    _check_known_chunks(x, "x", [axis])
    kernel_dtype = _checks.compute_dtype(result_dtype)
    state = _merged_states(
        partial(_dask_states.softmax_state, inv_temperature=1.0, kernel_dtype=kernel_dtype),
        _dask_states.SOFTMAX_STATE,
        _class_last(x, axis),
    )
    lse = state.map_blocks(
        partial(_dask_blocks.logsumexp_from_state, result_dtype=result_dtype),
        dtype=result_dtype,
        meta=_meta(state.ndim, result_dtype),
        token="fastsoftmax-logsumexp",
    )
    return da.expand_dims(lse, axis) if keepdims else lse


def softmax_topk(x, k, axis=-1, *, temperature=1.0, backend="auto"):
    """Lazy top-`k` softmax probabilities per row and their class indices.

    Parameters
    ----------
    x : dask.array.Array or array_like
        Logits, chunked any way.
    k : int
        How many classes to keep, ``1 <= k <= C``.
    axis : int, optional
        The class axis, the last one by default.
    temperature : float, optional
        Finite and positive.
    backend : str, optional
        The backend of the local kernels in each task.

    Returns
    -------
    probs : dask.array.Array
        `x`'s shape with `axis` of length `k` (one chunk): probabilities in
        descending order, in the dtype `softmax` would give.
    indices : dask.array.Array of int64
        Matching class indices, ordered by logit, equal logits by lower index.

    Raises
    ------
    ValueError
        If `k` is outside ``1..C``, or for a bad `temperature`.
    TypeError, numpy.exceptions.AxisError, RuntimeError
        As for `softmax`.

    Notes
    -----
    A split class axis is read once: each chunk offers its own top `k`
    (indices offset by the chunk's start) next to its rows' (max, sum), and the
    reduction keeps the best `k` by logit, ties to the lower index. Rows whose
    softmax is NaN give NaN probabilities and the indices ``0..k-1``.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> import fastsoftmax.dask as fsd
    >>> x = da.from_array(np.log([[0.1, 0.2, 0.3, 0.4]]), chunks=(1, 2))
    >>> probs, idx = fsd.softmax_topk(x, 2)
    >>> probs.compute().round(6), idx.compute()
    (array([[0.4, 0.3]]), array([[3, 2]]))
    """
    inv_t = _checks.inverse_temperature(temperature)
    _check_backend(backend)
    x = _as_dask(x, "x", axis)
    axis = _checks.normalize_axis(axis, x.ndim)
    _check_known_chunks(x, "x", [axis])
    k = _check_k(k, x.shape[axis])
    result_dtype = _checks.result_dtype(x.dtype)
    xt = _class_last(x, axis)
    if not _split(x, axis):
        probs, indices = da.apply_gufunc(
            partial(_dask_blocks.softmax_topk_rows, k=k, temperature=temperature, backend=backend),
            "(c)->(k),(k)",
            xt,
            output_dtypes=(result_dtype, np.int64),
            output_sizes={"k": k},
        )
        return _class_back(probs, axis), _class_back(indices, axis)
    kernel_dtype = _checks.compute_dtype(result_dtype)
    ix = _Indices(xt.ndim)
    state = _merged_states(
        partial(
            _dask_states.topk_state, k=k, inv_temperature=inv_t, kernel_dtype=kernel_dtype, backend=backend
        ),
        _dask_states.topk_state_dtype(k),
        xt,
        _class_ids(xt),
        ix.classes,
        inv_temperature=inv_t,
    )

    def from_state(function, dtype):
        return da.blockwise(
            function,
            ix.block,
            state,
            ix.rows,
            new_axes={ix.classes[0]: k},
            dtype=dtype,
            meta=_meta(xt.ndim, dtype),
            token="fastsoftmax-topk",
        )

    probs = from_state(
        partial(_dask_blocks.topk_probs_from_state, inv_temperature=inv_t, result_dtype=result_dtype),
        result_dtype,
    )
    indices = from_state(_dask_blocks.topk_indices_from_state, np.dtype(np.int64))
    return _class_back(probs, axis), _class_back(indices, axis)


def cross_entropy(
    logits,
    target,
    *,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    return_grad=False,
    backend="auto",
):
    """Lazy cross-entropy of logits against targets, with its gradient on request.

    The class axis is the LAST axis of `logits`. The definition, options and
    results are those of `fastsoftmax.cross_entropy` (PyTorch's, plus
    ``z_loss * lse**2``).

    Parameters
    ----------
    logits : dask.array.Array or array_like
        Shape ``(*batch, C)`` with ``C >= 1``, chunked any way.
    target : dask.array.Array or array_like
        Integer class indices of shape ``batch``, or floating probabilities of
        `logits`' shape. It is rechunked to the chunks of `logits` (the target
        is the smaller array; the logits are never rechunked).
    weight : array_like, optional
        Finite per-class weights, shape ``(C,)``; a small host array.
    ignore_index : int, optional
        Class-index rows equal to it contribute nothing. Default -100.
    reduction : {"mean", "sum", "none"}, optional
        As for `fastsoftmax.cross_entropy`.
    label_smoothing : float, optional
        ``eps`` in ``[0, 1]``.
    z_loss : float, optional
        Weight of the ``lse**2`` penalty, finite and ``>= 0``.
    return_grad : bool, optional
        Also return the gradient with respect to `logits`.
    backend : str, optional
        The backend of the local kernels in each task.

    Returns
    -------
    loss : dask.array.Array
        0-d for ``"mean"`` and ``"sum"`` (computing it gives a NumPy scalar of
        the result dtype); shape ``batch`` for ``"none"``.
    grad : dask.array.Array
        Only with ``return_grad=True``: ``d(loss)/d(logits)``, chunked like
        `logits` (for ``"none"``, the gradient of the summed losses).

    Raises
    ------
    ValueError
        At once for shape mismatches, bad options or weights; from
        ``compute()`` for a class index outside ``[0, C)`` that is not
        `ignore_index`, naming its row in the whole target and its value.
    TypeError
        For non-real logits, a boolean target or bad option types.
    RuntimeError
        If the named backend is not available here.

    Notes
    -----
    With the class axis split, one pass over each chunk gives its rows' (max,
    sum of exp), the target logit from the chunk that holds the target class,
    and the smoothing (or probability-target) sums; the loss follows from
    their merge. The gradient needs a second pass, per chunk, with the rows'
    merged log-sum-exp and, for ``"mean"``, the global denominator.

    Examples
    --------
    >>> import dask.array as da
    >>> import fastsoftmax.dask as fsd
    >>> logits = da.from_array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], chunks=(1, 2))
    >>> target = da.from_array([0, 2], chunks=1)
    >>> loss, grad = fsd.cross_entropy(logits, target, return_grad=True)
    >>> round(float(loss.compute()), 6)
    0.669079
    >>> grad.compute().round(4)
    array([[-0.1065,  0.0533,  0.0533],
           [ 0.1667,  0.1667, -0.3333]])
    """
    reduction, eps, z_loss, ignore_index = check_options(reduction, label_smoothing, z_loss, ignore_index)
    return_grad = bool(return_grad)
    _check_backend(backend)
    if not isinstance(logits, da.Array) and np.ndim(logits) == 0 or getattr(logits, "ndim", 1) == 0:
        raise ValueError("logits must have at least one dimension (the class axis)")
    logits = _as_dask(logits, "logits", -1)
    _check_known_chunks(logits, "logits", range(logits.ndim))
    n_classes = logits.shape[-1]
    if n_classes == 0:
        raise ValueError("logits have no classes (the last axis has length 0)")
    result_dtype = _checks.result_dtype(logits.dtype)
    batch_shape = logits.shape[:-1]
    target, class_targets = _aligned_target(target, logits, ignore_index)
    weight64 = None if weight is None else check_weight(weight, n_classes)
    options = _dask_blocks.CrossEntropyOptions(
        n_classes=n_classes,
        ignore_index=ignore_index,
        label_smoothing=eps,
        z_loss=z_loss,
        class_targets=class_targets,
        kernel_dtype=_checks.compute_dtype(result_dtype),
        result_dtype=result_dtype,
    )
    ix = _Indices(logits.ndim)

    row_weight = None
    if class_targets:
        whole_weight = (None, None) if weight64 is None else (da.from_array(weight64, chunks=-1), ix.spare)
        row_weight = da.blockwise(
            partial(_dask_blocks.target_weights, ignore_index=ignore_index),
            ix.rows,
            target,
            ix.rows,
            *whole_weight,
            concatenate=True,
            dtype=np.float64,
            meta=_meta(len(ix.rows), np.float64),
            token="fastsoftmax-target-weights",
        )
        denominator = row_weight.sum(dtype=np.float64)
    else:
        denominator = float(math.prod(batch_shape))
    if reduction != "mean":
        grad_scale = 1.0
    elif class_targets:
        grad_scale = denominator.map_blocks(_dask_blocks.gradient_scale, dtype=np.float64)
    else:
        grad_scale = _dask_blocks.gradient_scale(denominator)

    if _split(logits, logits.ndim - 1):
        loss_rows, grad = _cross_entropy_split(
            logits, target, weight64, row_weight, grad_scale, options, reduction, return_grad
        )
    else:
        loss_rows, grad = _cross_entropy_rows(logits, target, weight64, grad_scale, options, return_grad, backend)

    if reduction == "none":
        loss = loss_rows
    else:
        loss = da.blockwise(
            partial(_dask_blocks.finish_loss, reduction=reduction, result_dtype=result_dtype),
            (),
            loss_rows.sum(dtype=np.float64),
            (),
            *((denominator, ()) if isinstance(denominator, da.Array) else (denominator, None)),
            dtype=result_dtype,
            meta=np.empty((), dtype=result_dtype),
            token="fastsoftmax-loss",
        )
    return (loss, grad) if return_grad else loss


def _aligned_target(target, logits, ignore_index):
    """The target as a Dask array chunked like `logits`' rows (or like `logits`).

    Returns ``(target, class_targets)``; class indices are checked per block at
    compute time.
    """
    batch_shape = logits.shape[:-1]
    if not isinstance(target, da.Array):
        target = da.from_array(_host.as_host_array(target, "target"), chunks=-1)
    if target.dtype.kind in "iu":
        if target.shape != batch_shape:
            raise ValueError(
                f"class-index target has shape {target.shape} but logits have batch shape "
                f"{batch_shape} (logits shape without the class axis)"
            )
        target = target.rechunk(logits.chunks[:-1])
        checked = partial(
            _dask_blocks.checked_class_targets, n_classes=logits.shape[-1], ignore_index=ignore_index
        )
        target = target.map_blocks(
            checked, dtype=np.int64, meta=_meta(target.ndim, np.int64), token="fastsoftmax-check-target"
        )
        return target, True
    if target.dtype.kind == "f" or _checks.is_half(target.dtype):
        _checks.check_same_shape(target, logits, "probability target", "logits")
        return target.rechunk(logits.chunks), False
    raise TypeError(
        f"target must be integer class indices or floating probabilities, got dtype {target.dtype}"
    )


def _cross_entropy_rows(logits, target, weight64, grad_scale, options, return_grad, backend):
    """Per-row losses and the gradient when the class axis is one chunk: local kernels."""
    args = [logits, target]
    signature = ["(c)", "()" if options.class_targets else "(c)"]
    if weight64 is not None:
        args.append(da.from_array(weight64, chunks=-1))
        signature.append("(c)")
    has_scale = return_grad and not (isinstance(grad_scale, float) and grad_scale == 1.0)
    if has_scale:
        args.append(grad_scale if isinstance(grad_scale, da.Array) else da.from_array(np.float64(grad_scale)))
        signature.append("()")
    outputs = "(),(c)" if return_grad else "()"
    result = da.apply_gufunc(
        partial(
            _dask_blocks.cross_entropy_rows,
            options=options,
            has_weight=weight64 is not None,
            has_scale=has_scale,
            return_grad=return_grad,
            backend=backend,
        ),
        f"{','.join(signature)}->{outputs}",
        *args,
        output_dtypes=(options.result_dtype,) * 2 if return_grad else options.result_dtype,
    )
    return result if return_grad else (result, None)


def _cross_entropy_split(logits, target, weight64, row_weight, grad_scale, options, reduction, return_grad):
    """Per-row losses and the gradient when the class axis is split: merged states."""
    ix = _Indices(logits.ndim)
    classes = (_class_ids(logits), ix.classes)
    target_arg = (target, ix.rows if options.class_targets else ix.block)
    weight_arg = (None, None) if weight64 is None else (da.from_array(weight64, chunks=(logits.chunks[-1],)), ix.classes)
    state = _merged_states(
        partial(_dask_states.cross_entropy_state, options=options),
        _dask_states.CROSS_ENTROPY_STATE,
        logits,
        *classes,
        *target_arg,
        *weight_arg,
    )
    row_weight_arg = (None, None) if row_weight is None else (row_weight, ix.rows)
    loss_dtype = options.result_dtype if reduction == "none" else np.dtype(np.float64)
    loss_rows = da.blockwise(
        partial(_dask_blocks.cross_entropy_loss_from_state, options=options, dtype=loss_dtype),
        ix.rows,
        state,
        ix.rows,
        *(target_arg if options.class_targets else (None, None)),
        *row_weight_arg,
        dtype=loss_dtype,
        meta=_meta(len(ix.rows), loss_dtype),
        token="fastsoftmax-loss-rows",
    )
    if not return_grad:
        return loss_rows, None
    weight_total = float(options.n_classes if weight64 is None else weight64.sum())
    grad = da.blockwise(
        partial(_dask_blocks.cross_entropy_grad_from_state, options=options, weight_total=weight_total),
        ix.block,
        logits,
        ix.block,
        *classes,
        *target_arg,
        *weight_arg,
        *row_weight_arg,
        state,
        ix.rows,
        *((grad_scale, ()) if isinstance(grad_scale, da.Array) else (grad_scale, None)),
        dtype=options.result_dtype,
        meta=_meta(logits.ndim, options.result_dtype),
        token="fastsoftmax-grad",
    )
    return loss_rows, grad
