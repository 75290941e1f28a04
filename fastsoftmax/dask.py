"""softmax and its relatives on Dask arrays chunked any way along rows and classes.

Import this module explicitly (``import fastsoftmax.dask``); ``import
fastsoftmax`` never loads Dask. Each function takes a Dask array (any other
array is wrapped with its class axis in one chunk), checks what it can from
shapes, dtypes and options at once, and returns lazy Dask arrays. Errors that
need the data, such as a class index out of range, are raised by ``compute()``
with the message of the local function.

The plan follows the chunks of the class axis, which is never rechunked
(chunks of size zero, which hold nothing, are merged away first):

* **Class axis in one chunk** (row-chunked): every block of rows goes through
  the local function (``fastsoftmax.softmax`` ...) with the given `backend`.
* **Class axis split across chunks** (vocabulary-parallel): a first pass reduces
  every chunk to a small state per row: the online-softmax pair (max, sum of
  exp), and what the operation needs besides (the target logit, top-k
  candidates), from one local ``softmax_topk`` call per chunk. A Dask
  reduction with a combine step merges the states of a row's chunks as a
  tree, with the same NaN and infinity rules as the local kernels. logsumexp,
  softmax_topk and the cross-entropy loss come straight from the merged
  states. softmax, log_softmax and the cross-entropy gradient take a second
  pass per chunk: the local function on the chunk, moved onto the row's scale
  by one factor (or term) per row.

Unlike the local functions these take no ``out`` or ``grad_out``: store results
with ``dask.array.store`` or ``dask.array.to_zarr``. Reduced cross-entropy
losses are 0-d Dask arrays. Every task calls the local kernels, which may use
threads of their own (``fastsoftmax.set_num_threads``); with a scheduler that
already runs one task per core, a serial backend avoids oversubscription.
See ``docs/dask.md`` for scoring a dataset larger than memory.
"""

from functools import partial

import dask.array as da
import numpy as np

import fastsoftmax

from . import _checks, _dask_blocks, _dask_cross_entropy, _dask_states
from . import _dask_graph as graph
from ._cross_entropy import check_options, check_weight
from ._softmax import check_k

__all__ = ["cross_entropy", "log_softmax", "logsumexp", "softmax", "softmax_topk"]


def _rowwise(op, x, axis, temperature, dtype, backend):
    """Shared body of softmax and log_softmax."""
    inv_t = _checks.inverse_temperature(temperature)
    graph.check_backend(backend)
    x = graph.as_dask(x, "x", axis)
    axis = _checks.normalize_axis(axis, x.ndim)
    result_dtype = _checks.result_dtype(x.dtype, dtype)
    token = f"fastsoftmax-{op}"
    if not graph.is_split(x, axis):
        local = partial(
            getattr(fastsoftmax, op),
            axis=axis,
            temperature=temperature,
            dtype=result_dtype,
            backend=backend,
        )
        return x.map_blocks(
            local, dtype=result_dtype, meta=graph.meta(x.ndim, result_dtype), token=token
        )
    xt = graph.class_last(x, axis)
    kernel_dtype = _checks.compute_dtype(result_dtype)
    per_chunk, merged = graph.merged_states(
        partial(
            _dask_states.softmax_state,
            temperature=temperature,
            kernel_dtype=kernel_dtype,
            backend=backend,
        ),
        _dask_states.SOFTMAX_STATE,
        xt,
        inv_temperature=inv_t,
    )
    out = graph.second_pass(
        partial(
            _dask_blocks.rowwise_from_state,
            log=op == "log_softmax",
            temperature=temperature,
            kernel_dtype=kernel_dtype,
            result_dtype=result_dtype,
            backend=backend,
        ),
        xt,
        per_chunk,
        merged,
        dtype=result_dtype,
        token=token,
    )
    return graph.class_back(out, axis)


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
        For a bad `temperature` or backend name.
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
    graph.check_backend(backend)
    x = graph.as_dask(x, "x", axis)
    axis = _checks.normalize_axis(axis, x.ndim)
    result_dtype = _checks.result_dtype(x.dtype, dtype)
    if not graph.is_split(x, axis):
        local = partial(
            fastsoftmax.logsumexp, axis=axis, keepdims=keepdims, dtype=result_dtype, backend=backend
        )
        index = tuple(range(x.ndim))
        out_index = index if keepdims else index[:axis] + index[axis + 1 :]
        return da.blockwise(
            local,
            out_index,
            x,
            index,
            adjust_chunks={axis: 1} if keepdims else None,
            concatenate=True,
            dtype=result_dtype,
            meta=graph.meta(len(out_index), result_dtype),
            token="fastsoftmax-logsumexp",
        )
    kernel_dtype = _checks.compute_dtype(result_dtype)
    _, merged = graph.merged_states(
        partial(
            _dask_states.softmax_state, temperature=1.0, kernel_dtype=kernel_dtype, backend=backend
        ),
        _dask_states.SOFTMAX_STATE,
        graph.class_last(x, axis),
    )
    lse = graph.from_states(
        partial(_dask_blocks.logsumexp_from_state, result_dtype=result_dtype),
        merged,
        result_dtype,
        x_ndim=x.ndim,
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
        If `k` is outside ``1..C``, for a bad `temperature`, or when the class
        axis has chunks of unknown size.
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
    graph.check_backend(backend)
    x = graph.as_dask(x, "x", axis)
    axis = _checks.normalize_axis(axis, x.ndim)
    graph.check_known_chunks(x, "x", [axis])
    k = check_k(k, x.shape[axis])
    result_dtype = _checks.result_dtype(x.dtype)
    xt = graph.class_last(x, axis)
    if not graph.is_split(x, axis):
        probs, indices = da.apply_gufunc(
            partial(_dask_blocks.softmax_topk_rows, k=k, temperature=temperature, backend=backend),
            "(c)->(k),(k)",
            xt,
            output_dtypes=(result_dtype, np.int64),
            output_sizes={"k": k},
        )
        return graph.class_back(probs, axis), graph.class_back(indices, axis)
    kernel_dtype = _checks.compute_dtype(result_dtype)
    _, merged = graph.merged_states(
        partial(
            _dask_states.topk_state,
            k=k,
            temperature=temperature,
            kernel_dtype=kernel_dtype,
            backend=backend,
        ),
        _dask_states.topk_state_dtype(k),
        xt,
        graph.class_ids(xt),
        graph.Indices(xt.ndim).classes,
        inv_temperature=inv_t,
    )
    probs = graph.from_states(
        partial(
            _dask_blocks.topk_probs_from_state, inv_temperature=inv_t, result_dtype=result_dtype
        ),
        merged,
        result_dtype,
        x_ndim=xt.ndim,
        new_classes=k,
        token="fastsoftmax-topk-probs",
    )
    indices = graph.from_states(
        _dask_blocks.topk_indices_from_state,
        merged,
        np.dtype(np.int64),
        x_ndim=xt.ndim,
        new_classes=k,
        token="fastsoftmax-topk-indices",
    )
    return graph.class_back(probs, axis), graph.class_back(indices, axis)


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
        At once for shape mismatches, chunks of unknown size, bad options or
        weights; from
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
    reduction, eps, z_loss, ignore_index = check_options(
        reduction, label_smoothing, z_loss, ignore_index
    )
    return_grad = bool(return_grad)
    graph.check_backend(backend)
    if np.ndim(logits) == 0:
        raise ValueError("logits must have at least one dimension (the class axis)")
    logits = graph.as_dask(logits, "logits", -1)
    graph.check_known_chunks(logits, "logits", range(logits.ndim))
    n_classes = logits.shape[-1]
    if n_classes == 0:
        raise ValueError("logits have no classes (the last axis has length 0)")
    result_dtype = _checks.result_dtype(logits.dtype)
    target, class_targets = _dask_cross_entropy.aligned_target(target, logits, ignore_index)
    weight = None if weight is None else check_weight(weight, n_classes)
    options = _dask_blocks.CrossEntropyOptions(
        n_classes=n_classes,
        ignore_index=ignore_index,
        label_smoothing=eps,
        z_loss=z_loss,
        class_targets=class_targets,
        kernel_dtype=_checks.compute_dtype(result_dtype),
        result_dtype=result_dtype,
    )
    loss, grad = _dask_cross_entropy.build(
        logits, target, weight, options, reduction, return_grad, backend
    )
    return (loss, grad) if return_grad else loss
