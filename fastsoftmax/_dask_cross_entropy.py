"""The Dask graph of ``fastsoftmax.dask.cross_entropy``.

Targets are aligned with the logits' chunks (the target is rechunked, never the
logits) and class indices are checked per block. Whole rows go through the
local ``cross_entropy``; split rows take the merged states of
``_dask_states`` for the loss and a second pass for the gradient. The mean's
denominator, ``sum(w[y])`` over kept rows, is a reduction of its own that
the mean and the gradient depend on.
"""

import math
from functools import partial

import dask.array as da
import numpy as np

from . import _checks, _dask_blocks, _dask_states, _host
from . import _dask_graph as graph


def aligned_target(target, logits, ignore_index):
    """The target as a Dask array chunked like `logits`' rows (or like `logits`).

    Returns ``(target, class_targets)``. Class indices come back as int64,
    checked block by block when the graph runs.
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
        checked = partial(
            _dask_blocks.checked_class_targets,
            n_classes=logits.shape[-1],
            ignore_index=ignore_index,
        )
        target = target.rechunk(logits.chunks[:-1]).map_blocks(
            checked,
            dtype=np.int64,
            meta=graph.meta(target.ndim, np.int64),
            token="fastsoftmax-check-target",
        )
        return target, True
    if target.dtype.kind == "f" or _checks.is_half(target.dtype):
        _checks.check_same_shape(target, logits, "probability target", "logits")
        return target.rechunk(logits.chunks), False
    raise TypeError(
        f"target must be integer class indices or floating probabilities, got dtype {target.dtype}"
    )


def build(logits, target, weight, options, reduction, return_grad, backend):
    """``(loss, grad)`` as Dask arrays (``grad`` None without `return_grad`).

    `logits` is a Dask array with known chunks, `target` the output of
    `aligned_target`, `weight` None or float64 class weights, `options` a
    ``CrossEntropyOptions``.
    """
    ix = graph.Indices(logits.ndim)
    row_weight = None
    if options.class_targets:
        whole_weight = graph.pair(
            None if weight is None else da.from_array(weight, chunks=-1), ix.spare
        )
        row_weight = da.blockwise(
            partial(_dask_blocks.target_weights, ignore_index=options.ignore_index),
            ix.rows,
            target,
            ix.rows,
            *whole_weight,
            concatenate=True,
            dtype=np.float64,
            meta=graph.meta(len(ix.rows), np.float64),
            token="fastsoftmax-target-weights",
        )
        denominator = row_weight.sum(dtype=np.float64)
    else:
        denominator = float(math.prod(logits.shape[:-1]))

    grad_scale = None  # the gradient of a sum
    if reduction == "mean" and return_grad:
        if isinstance(denominator, da.Array):
            grad_scale = denominator.map_blocks(_dask_blocks.gradient_scale, dtype=np.float64)
        else:
            grad_scale = _dask_blocks.gradient_scale(denominator)

    loss_dtype = options.result_dtype if reduction == "none" else np.dtype(np.float64)
    if graph.is_split(logits, logits.ndim - 1):
        loss_rows, grad = _split_rows(
            logits,
            target,
            weight,
            row_weight,
            grad_scale,
            options,
            loss_dtype,
            return_grad,
            backend,
        )
    else:
        loss_rows, grad = _whole_rows(
            logits, target, weight, grad_scale, options, return_grad, backend
        )
    if reduction == "none":
        return loss_rows, grad
    loss = da.blockwise(
        partial(_dask_blocks.finish_loss, reduction=reduction, result_dtype=options.result_dtype),
        (),
        loss_rows.sum(dtype=np.float64),
        (),
        *graph.pair(denominator, ()),
        dtype=options.result_dtype,
        meta=graph.meta(0, options.result_dtype),
        token="fastsoftmax-loss",
    )
    return loss, grad


def _whole_rows(logits, target, weight, grad_scale, options, return_grad, backend):
    """Per-row losses and the gradient when the class axis is one chunk: local kernels."""
    args = [logits, target]
    signature = ["(c)", "()" if options.class_targets else "(c)"]
    if weight is not None:
        args.append(da.from_array(weight, chunks=-1))
        signature.append("(c)")
    if grad_scale is not None:
        args.append(
            grad_scale
            if isinstance(grad_scale, da.Array)
            else da.from_array(np.float64(grad_scale))
        )
        signature.append("()")
    result = da.apply_gufunc(
        partial(
            _dask_blocks.cross_entropy_rows,
            options=options,
            has_weight=weight is not None,
            has_scale=grad_scale is not None,
            return_grad=return_grad,
            backend=backend,
        ),
        ",".join(signature) + ("->(),(c)" if return_grad else "->()"),
        *args,
        output_dtypes=(options.result_dtype,) * 2 if return_grad else options.result_dtype,
    )
    return result if return_grad else (result, None)


def _split_rows(
    logits, target, weight, row_weight, grad_scale, options, loss_dtype, return_grad, backend
):
    """Per-row losses and the gradient when the class axis is split: merged states."""
    ix = graph.Indices(logits.ndim)
    classes = (graph.class_ids(logits), ix.classes)
    target_arg = (target, ix.rows if options.class_targets else ix.block)
    chunk_weight = None if weight is None else da.from_array(weight, chunks=(logits.chunks[-1],))
    weight_arg = graph.pair(chunk_weight, ix.classes)
    per_chunk, merged = graph.merged_states(
        partial(_dask_states.cross_entropy_state, options=options, backend=backend),
        _dask_states.CROSS_ENTROPY_STATE,
        logits,
        *classes,
        *target_arg,
        *weight_arg,
    )
    if options.class_targets:
        row_args = (*target_arg, *graph.pair(row_weight, ix.rows))
    else:
        row_args = (None, None, None, None)
    loss_rows = graph.from_states(
        partial(_dask_blocks.cross_entropy_loss_from_state, options=options, dtype=loss_dtype),
        merged,
        loss_dtype,
        *row_args,
        x_ndim=logits.ndim,
        token="fastsoftmax-loss-rows",
    )
    if not return_grad:
        return loss_rows, None
    weight_total = float(options.n_classes if weight is None else weight.sum())
    grad = graph.second_pass(
        partial(
            _dask_blocks.cross_entropy_grad_from_state,
            options=options,
            weight_total=weight_total,
            backend=backend,
        ),
        logits,
        per_chunk,
        merged,
        *classes,
        *target_arg,
        *weight_arg,
        *graph.pair(row_weight, ix.rows),
        *graph.pair(1.0 if grad_scale is None else grad_scale, ()),
        dtype=options.result_dtype,
        token="fastsoftmax-grad",
    )
    return loss_rows, grad
