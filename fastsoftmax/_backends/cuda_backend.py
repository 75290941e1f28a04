"""The ``cuda`` backend: Numba CUDA kernels for arrays that live on an NVIDIA GPU.

The public functions send a call here when its main array exposes
``__cuda_array_interface__`` (Numba device arrays, CuPy arrays, PyTorch CUDA
tensors) or when ``backend="cuda"`` is named for host arrays. Device arrays
never visit the host: results are new Numba device arrays (laid out like the
input) or are written into a device ``out``; only scalars (a reduced loss, a
validation flag) cross over. Host arrays are copied to the device, computed
there and copied back into NumPy arrays.

Other array arguments (``y``, ``target``, ``weight``...) may live on the host
even when the main array is on the device: they are copied over once.

Layouts: any axis and any strides work without copying an operand. The class
axis is moved last as a view; leading dimensions are merged where their strides
agree; layouts that still have more than two leading dimensions run as one
launch per index of the extra outer dimensions (slower, never a copy).

Everything is validated here with the helpers of the host path, so the errors
and their messages are the same; out-of-range class targets are found on the
device. Under ``NUMBA_ENABLE_CUDASIM=1`` the same code runs in Numba's CUDA
simulator, with shared-memory reductions in place of warp shuffles.
"""

import importlib.metadata
import math

import numpy as np

from .. import _checks, _host
from .._cross_entropy import check_weight
from .._softmax import check_k

try:
    from numba import cuda

    from ._cuda import (
        arrays,
        backward,
        cross_entropy,
        forward,
        plan,
        runtime,
        settings,
        sums,
        targets,
        topk,
    )
except ImportError as _error:  # numba-cuda missing: availability() says so
    cuda = None
    _IMPORT_ERROR = str(_error)


def availability():
    """``(available, reason, version)``: numba-cuda with a GPU, or the CUDA simulator."""
    if cuda is None:
        return False, f"numba-cuda is not importable ({_IMPORT_ERROR})", None
    try:
        version = importlib.metadata.version("numba-cuda")
    except importlib.metadata.PackageNotFoundError:
        version = None
    if runtime.SIMULATOR:
        return True, "", f"{version} (CUDA simulator)"
    try:
        available = cuda.is_available()
    except Exception as exc:  # a broken driver raises instead of answering
        return False, f"the CUDA driver failed: {exc}", version
    if not available:
        return False, "no CUDA GPU or driver found (numba.cuda.is_available() is False)", version
    return True, "", version


# ---------------------------------------------------------------------------
# Arguments: device views, outputs, results


def _operand(obj, name, dtype=None):
    """A device view of `obj`; a host array is copied over (as `dtype` if given)."""
    if arrays.is_device_array(obj):
        return arrays.view_of(obj)
    host = _host.as_host_array(obj, name)
    return arrays.upload(host, dtype)


def _device_output(out, shape, dtype, inputs, name="out", like=None):
    """``(view, result)``: a checked device `out`, or a new device array."""
    if out is None:
        view = arrays.empty(shape, dtype, like=like)
        return view, view.kernel_arg()
    if not arrays.is_device_array(out):
        raise TypeError(
            f"{name} must be a GPU array (Numba, CuPy or PyTorch CUDA) like the input, "
            f"got {type(out).__name__}"
        )
    view = arrays.view_of(out)
    _checks.check_out(view.address, shape, dtype, name=name)
    _checks.check_no_partial_overlap(view.address, [(n, v.address) for n, v in inputs], name=name)
    return view, out


def _compute_type(result_dtype):
    """The NumPy scalar type kernels compute in for results of `result_dtype`."""
    return _checks.compute_dtype(result_dtype).type


def _rows(shape):
    return math.prod(shape)


# ---------------------------------------------------------------------------
# softmax, log_softmax, logsumexp


def _rowwise_into(op, xm, om, result_dtype, inv_temperature):
    """Run softmax or log_softmax over views with the class axis last."""
    ftype = _compute_type(result_dtype)
    row_plan = plan.row_plan(xm.shape[-1], np.dtype(ftype).itemsize)
    kernel = forward.rowwise(op == "log_softmax", ftype, row_plan)
    for x, out in arrays.row_launches([xm, om], xm.shape[:-1]):
        n_rows = x.shape[0] * x.shape[1]
        runtime.launch(
            kernel, row_plan.blocks(n_rows), row_plan.block, row_plan.shared_bytes,
            x, out, ftype(inv_temperature), float(inv_temperature),
        )


def device_rowwise(op, x, axis, out, dtype, inv_temperature):
    """softmax or log_softmax on the device; see `fastsoftmax.softmax`."""
    if not arrays.is_device_array(x):
        axis = _checks.normalize_axis(axis, x.ndim)
        result_dtype = _checks.result_dtype(x.dtype, dtype)
        out = _host.output(out, x.shape, result_dtype, [("x", x)], like=x)
        if x.size:
            xm = np.moveaxis(x, axis, -1)
            xv = arrays.upload(xm, _checks.compute_dtype(result_dtype))
            result = arrays.empty(xv.shape, result_dtype)
            _rowwise_into(op, xv, result, result_dtype, inv_temperature)
            arrays.download(result, np.moveaxis(out, axis, -1))
        return out
    xv = arrays.view_of(x)
    axis = _checks.normalize_axis(axis, xv.ndim)
    result_dtype = _checks.result_dtype(xv.dtype, dtype)
    outv, result = _device_output(out, xv.shape, result_dtype, [("x", xv)], like=xv)
    if xv.size:
        _rowwise_into(op, xv.moveaxis(axis, -1), outv.moveaxis(axis, -1), result_dtype, inv_temperature)
    return result


def _logsumexp_into(xm, per_row, result_dtype):
    """Run logsumexp over `xm` (class axis last) into the per-row view."""
    if per_row.size == 0:
        return
    if xm.shape[-1] == 0:
        for (values,) in arrays.row_launches([per_row], per_row.shape):
            sums.fill(values, -np.inf)
        return
    ftype = _compute_type(result_dtype)
    row_plan = plan.row_plan(xm.shape[-1], np.dtype(ftype).itemsize)
    kernel = forward.logsumexp(ftype, row_plan)
    for x, out in arrays.row_launches([xm, per_row], xm.shape[:-1]):
        runtime.launch(
            kernel, row_plan.blocks(x.shape[0] * x.shape[1]), row_plan.block,
            row_plan.shared_bytes, x, out,
        )


def device_logsumexp(x, axis, keepdims, out, dtype):
    """logsumexp on the device; see `fastsoftmax.logsumexp`."""
    on_device = arrays.is_device_array(x)
    xv = arrays.view_of(x) if on_device else x
    axis = _checks.normalize_axis(axis, xv.ndim)
    result_dtype = _checks.result_dtype(xv.dtype, dtype)
    reduced = xv.shape[:axis] + xv.shape[axis + 1 :]
    shape = xv.shape[:axis] + (1,) + xv.shape[axis + 1 :] if keepdims else reduced
    # The per-row view of a keepdims result; Ellipsis keeps it a view.
    drop_axis = (slice(None),) * axis + (0, Ellipsis) if keepdims else (Ellipsis,)
    if not on_device:
        out = _host.output(out, shape, result_dtype, [("x", x)])
        per_row = out[drop_axis]
        if per_row.size:
            xv = arrays.upload(np.moveaxis(x, axis, -1), _checks.compute_dtype(result_dtype))
            result = arrays.empty(reduced, result_dtype)
            _logsumexp_into(xv, result, result_dtype)
            arrays.download(result, per_row)
        return out
    outv, result = _device_output(out, shape, result_dtype, [("x", xv)])
    per_row = outv.with_address(outv.address[drop_axis])
    _logsumexp_into(xv.moveaxis(axis, -1), per_row, result_dtype)
    return result


# ---------------------------------------------------------------------------
# softmax_backward, log_softmax_backward


def _backward_into(op, gm, sm, om, result_dtype):
    ftype = _compute_type(result_dtype)
    row_plan = plan.row_plan(gm.shape[-1], np.dtype(ftype).itemsize, cached_arrays=2)
    kernel = backward.vjp(op == "log_softmax_backward", ftype, row_plan)
    for grad, saved, out in arrays.row_launches([gm, sm, om], gm.shape[:-1]):
        n_rows = grad.shape[0] * grad.shape[1]
        runtime.launch(
            kernel, row_plan.blocks(n_rows), row_plan.block, row_plan.shared_bytes,
            grad, saved, out,
        )


def device_backward(op, grad, saved, axis, out):
    """softmax_backward or log_softmax_backward on the device."""
    saved_name = "y" if op == "softmax_backward" else "logp"
    on_device = arrays.is_device_array(grad)
    if not on_device:
        if arrays.is_device_array(saved):
            saved_like = arrays.view_of(saved)
        else:
            saved = saved_like = _host.as_host_array(saved, saved_name)
        _checks.check_same_shape(grad, saved_like, "grad", saved_name)
        axis = _checks.normalize_axis(axis, grad.ndim)
        for array in (grad, saved_like):
            _checks.result_dtype(array.dtype)  # names a non-real input's own dtype
        result_dtype = _checks.result_dtype(np.result_type(grad.dtype, saved_like.dtype))
        inputs = [("grad", grad)] + ([(saved_name, saved)] if isinstance(saved, np.ndarray) else [])
        out = _host.output(out, grad.shape, result_dtype, inputs, like=grad)
        if grad.size:
            kernel_dtype = _checks.compute_dtype(result_dtype)
            gv = arrays.upload(np.moveaxis(grad, axis, -1), kernel_dtype)
            sv = _operand(saved, saved_name, kernel_dtype).moveaxis(axis, -1)
            result = arrays.empty(gv.shape, result_dtype)
            _backward_into(op, gv, sv, result, result_dtype)
            arrays.download(result, np.moveaxis(out, axis, -1))
        return out
    gv = arrays.view_of(grad)
    sv = _operand(saved, saved_name)
    _checks.check_same_shape(gv, sv, "grad", saved_name)
    axis = _checks.normalize_axis(axis, gv.ndim)
    for view in (gv, sv):
        _checks.result_dtype(view.dtype)  # names a non-real input's own dtype
    result_dtype = _checks.result_dtype(np.result_type(gv.dtype, sv.dtype))
    outv, result = _device_output(
        out, gv.shape, result_dtype, [("grad", gv), (saved_name, sv)], like=gv
    )
    if gv.size:
        gm, sm, om = (v.moveaxis(axis, -1) for v in (gv, sv, outv))
        _backward_into(op, gm, sm, om, result_dtype)
    return result


# ---------------------------------------------------------------------------
# cross_entropy


def _check_device_weight(weight, n_classes):
    """Device `weight`: the host path's checks and messages; returns its float sum."""
    if weight.dtype.kind not in "iuf" and not _checks.is_half(weight.dtype):
        raise TypeError(f"weight must be real numbers, got dtype {weight.dtype}")
    if weight.shape != (n_classes,):
        raise ValueError(f"weight has shape {weight.shape} but must be ({n_classes},)")
    # A sum is finite exactly when every term is (short of float64 overflow).
    weight_sum = sums.total(weight.kernel_arg())
    if not math.isfinite(weight_sum):
        raise ValueError("weight holds NaN or infinite values")
    return weight_sum


# Slots of the small float64 scratch array of one cross_entropy call; it
# crosses to the host once, at the end.
_FIRST_BAD, _DIVISOR, _LOSS_SUM = 0, 1, 2


def _check_class_targets(target, weight, n_classes, ignore_index, scratch, row_weight):
    """Launch the device range check of class `target` (and the per-row weights).

    The first bad flat row lands in ``scratch[_FIRST_BAD]`` (the row count when
    none); ``row_weight`` (or None) gets ``w[y]`` per row, 0 where ignored.
    """
    batch_shape = target.shape
    block = settings.SUM_BLOCK
    kernel = targets.class_target_check(block, weight is not None, row_weight is not None)
    weight_arg = weight.kernel_arg() if weight is not None else scratch
    row_weight = scratch if row_weight is None else row_weight
    first_bad = scratch[_FIRST_BAD : _FIRST_BAD + 1]
    sums.fill(first_bad.reshape(1, 1), _rows(batch_shape))
    offset = 0
    for (target_arg,) in arrays.row_launches([target], batch_shape):
        count = target_arg.shape[0] * target_arg.shape[1]
        runtime.launch(
            kernel, -(-count // block), block, 0,
            target_arg, weight_arg, row_weight, first_bad, n_classes, ignore_index, offset,
        )
        offset += count


def _raise_for_bad_target(first_bad, target, n_classes, ignore_index):
    """The host path's ValueError naming the first bad row and its value, if any."""
    batch_shape = target.shape
    if first_bad >= _rows(batch_shape):
        return
    row = tuple(int(i) for i in np.unravel_index(int(first_bad), batch_shape)) if batch_shape else ()
    where = f"target[{', '.join(map(str, row))}]" if row else "target"
    raise ValueError(
        f"{where} = {int(target.read(row))} is outside [0, {n_classes}) and is not "
        f"ignore_index ({ignore_index})"
    )


def _empty_loss(reduction, batch_shape, result_dtype, on_device):
    if reduction == "none":
        if on_device:
            return arrays.empty(batch_shape, result_dtype).kernel_arg()
        return np.zeros(batch_shape, dtype=result_dtype)
    return result_dtype.type(0.0 if reduction == "sum" else math.nan)


def device_cross_entropy(
    logits, target, weight, ignore_index, reduction, label_smoothing, z_loss, return_grad, grad_out
):
    """Fused cross-entropy on the device; see `fastsoftmax.cross_entropy`.

    The scalar options were checked by the caller. For ``"mean"`` and ``"sum"`` the
    loss is a host NumPy scalar (a deterministic device sum of the per-row
    losses); for ``"none"`` it is a device array (a NumPy array for host
    logits). The kernel keeps one float64 per row for the reduction. The
    range check of class targets runs on the device; its verdict comes back
    with the loss, in the one wait of the call, except when the caller's
    ``grad_out`` would be written: then it is read before the kernel runs.
    """
    eps = label_smoothing
    on_device = arrays.is_device_array(logits)
    lv = arrays.view_of(logits) if on_device else logits
    if lv.ndim == 0:
        raise ValueError("logits must have at least one dimension (the class axis)")
    n_classes = lv.shape[-1]
    if n_classes == 0:
        raise ValueError("logits have no classes (the last axis has length 0)")
    result_dtype = _checks.result_dtype(lv.dtype)
    kernel_dtype = _checks.compute_dtype(result_dtype)
    ftype = kernel_dtype.type
    batch_shape = lv.shape[:-1]

    target_on_device = arrays.is_device_array(target)
    if not target_on_device:
        target = _host.as_host_array(target, "target")
    target_shape = arrays.view_of(target).shape if target_on_device else target.shape
    target_dtype = arrays.view_of(target).dtype if target_on_device else target.dtype
    class_targets = target_dtype.kind in "iu"
    if class_targets:
        if target_shape != batch_shape:
            raise ValueError(
                f"class-index target has shape {target_shape} but logits have batch shape "
                f"{batch_shape} (logits shape without the class axis)"
            )
    elif target_dtype.kind == "f" or _checks.is_half(target_dtype):
        if target_shape != lv.shape:
            raise ValueError(
                f"probability target has shape {target_shape} but logits has shape {lv.shape}"
            )
    else:
        raise TypeError(
            f"target must be integer class indices or floating probabilities, "
            f"got dtype {target_dtype}"
        )

    if weight is None:
        weight_view, weight_sum = None, float(n_classes)
    elif arrays.is_device_array(weight):
        weight_view = arrays.view_of(weight)
        weight_sum = _check_device_weight(weight_view, n_classes)
    else:
        weight64 = check_weight(weight, n_classes)
        weight_view, weight_sum = arrays.upload(weight64, kernel_dtype), float(weight64.sum())

    grad = gradv = None
    if return_grad:
        if on_device:
            inputs = [("logits", lv)]
            if target_on_device:
                inputs.append(("target", arrays.view_of(target)))
            gradv, grad = _device_output(grad_out, lv.shape, result_dtype, inputs, "grad_out", lv)
        else:
            grad = _host.output(
                grad_out, lv.shape, result_dtype,
                [("logits", logits)] + ([] if target_on_device else [("target", target)]),
                name="grad_out", like=logits,
            )
    if _rows(lv.shape) == 0:
        loss = _empty_loss(reduction, batch_shape, result_dtype, on_device)
        return (loss, grad) if return_grad else loss

    if not on_device:
        lv = arrays.upload(logits, kernel_dtype)
        if return_grad:
            gradv = arrays.empty(lv.shape, result_dtype)
    tv = _operand(target, "target")
    scratch = cuda.device_array(3, dtype=np.float64)
    divisor = scratch[_DIVISOR : _DIVISOR + 1]
    mean_of_weights = reduction == "mean" and class_targets
    if class_targets:
        row_weight = cuda.device_array(_rows(batch_shape), np.float64) if mean_of_weights else None
        _check_class_targets(tv, weight_view, n_classes, ignore_index, scratch, row_weight)
        if on_device and grad_out is not None:
            # The caller's array must not be written before the check has passed;
            # otherwise the check is read at the end, with the loss.
            first_bad = scratch[_FIRST_BAD : _FIRST_BAD + 1].copy_to_host()[0]
            _raise_for_bad_target(first_bad, tv, n_classes, ignore_index)
    if mean_of_weights:
        sums.sum_into(row_weight, divisor)
    else:
        sums.fill(divisor.reshape(1, 1), float(_rows(batch_shape)) if reduction == "mean" else 1.0)

    if reduction == "none":
        loss_view = arrays.empty(batch_shape, result_dtype)
    else:
        loss_view = arrays.view_of(cuda.device_array(_rows(batch_shape), dtype=np.float64))
        loss_view = loss_view.with_address(loss_view.address.reshape(batch_shape))
    row_plan = plan.row_plan(n_classes, kernel_dtype.itemsize, 1 if class_targets else 2)
    has_grad = gradv is not None
    build = cross_entropy.class_target if class_targets else cross_entropy.probability_target
    kernel = build(ftype, row_plan, weight_view is not None, has_grad)
    # Arguments a kernel variant never touches get a stand-in.
    spare = scratch.reshape(1, 1, 3)
    weight_arg = weight_view.kernel_arg() if weight_view is not None else spare
    params = (eps, z_loss, weight_sum)
    views = [lv, tv, loss_view] + ([gradv] if has_grad else [])
    for args in arrays.row_launches(views, batch_shape):
        logits_arg, target_arg, loss_arg = args[:3]
        grad_arg = args[3] if has_grad else spare
        extra = (ignore_index, params) if class_targets else (params,)
        n_rows = logits_arg.shape[0] * logits_arg.shape[1]
        runtime.launch(
            kernel, row_plan.blocks(n_rows), row_plan.block, row_plan.shared_bytes,
            logits_arg, target_arg, weight_arg, loss_arg, grad_arg, divisor, *extra,
        )

    if reduction != "none":
        flat_loss = loss_view.with_address(loss_view.address.reshape(-1)).kernel_arg()
        sums.sum_into(flat_loss, scratch[_LOSS_SUM : _LOSS_SUM + 1])
    first_bad, denominator, total = scratch.copy_to_host()
    if class_targets:
        _raise_for_bad_target(first_bad, tv, n_classes, ignore_index)
    if reduction == "none":
        if on_device:
            loss = loss_view.kernel_arg()
        else:
            loss = np.empty(batch_shape, dtype=result_dtype)
            arrays.download(loss_view, loss)
    else:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            loss = result_dtype.type(total / denominator if reduction == "mean" else total)
    if has_grad and not on_device:
        arrays.download(gradv, grad)
    return (loss, grad) if return_grad else loss


# ---------------------------------------------------------------------------
# softmax_topk


def device_softmax_topk(x, k, axis, inv_temperature):
    """softmax_topk on the device: ``(probs, indices)``, indices int64."""
    on_device = arrays.is_device_array(x)
    xv = arrays.view_of(x) if on_device else x
    axis = _checks.normalize_axis(axis, xv.ndim)
    k = check_k(k, xv.shape[axis])
    result_dtype = _checks.result_dtype(xv.dtype)
    ftype = _compute_type(result_dtype)
    shape = xv.shape[:axis] + (k,) + xv.shape[axis + 1 :]
    if not on_device:
        xv = arrays.upload(x, ftype)
    probs = arrays.empty(shape, result_dtype)
    indices = arrays.empty(shape, np.int64)
    views = [v.moveaxis(axis, -1) for v in (xv, probs, indices)]
    if xv.size:
        topk_plan = plan.topk_plan(xv.shape[axis])
        kernel = topk.softmax_topk(ftype, topk_plan, settings.TOPK_LOCAL)
        for x_arg, probs_arg, indices_arg in arrays.row_launches(views, views[0].shape[:-1]):
            n_rows = x_arg.shape[0] * x_arg.shape[1]
            runtime.launch(
                kernel, n_rows, topk_plan.block, topk_plan.shared_bytes,
                x_arg, probs_arg, indices_arg, ftype(inv_temperature),
            )
    if on_device:
        return probs.kernel_arg(), indices.kernel_arg()
    host = np.empty(shape, dtype=result_dtype), np.empty(shape, dtype=np.int64)
    arrays.download(probs, host[0])
    arrays.download(indices, host[1])
    return host
