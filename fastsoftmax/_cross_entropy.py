"""Fused cross-entropy: the loss and its gradient from one pass over the logits."""

import math
import operator

import numpy as np

from . import _checks, _dispatch, _host
from ._layout import Operand, run_rows

REDUCTIONS = ("mean", "sum", "none")

# Reduced losses go through a per-block scratch buffer of at most this many
# rows, so even two-class problems never allocate a per-row loss array larger
# than that; calls of no more rows write theirs to one array, summed once.
LOSS_BLOCK_ROWS = 1 << 16


def check_options(reduction, label_smoothing, z_loss, ignore_index):
    """Validate the scalar options; returns them normalised."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    eps = _checks.real_scalar(label_smoothing, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {eps}")
    z_loss = _checks.real_scalar(z_loss, "z_loss")
    if not (math.isfinite(z_loss) and z_loss >= 0):
        raise ValueError(f"z_loss must be finite and >= 0, got {z_loss}")
    if isinstance(ignore_index, bool):
        raise TypeError("ignore_index must be an integer, got bool")
    try:
        ignore_index = operator.index(ignore_index)
    except TypeError:
        raise TypeError(
            f"ignore_index must be an integer, got {type(ignore_index).__name__}"
        ) from None
    return reduction, eps, z_loss, ignore_index


def check_class_targets(target, batch_shape, n_classes, ignore_index):
    """int64 class indices, with ValueError naming the first out-of-range row."""
    if target.shape != batch_shape:
        raise ValueError(
            f"class-index target has shape {target.shape} but logits have batch shape "
            f"{batch_shape} (logits shape without the class axis)"
        )
    target = target.astype(np.int64, copy=False)
    bad = ((target < 0) | (target >= n_classes)) & (target != ignore_index)
    if bad.any():
        row = np.unravel_index(int(np.argmax(bad.ravel())), batch_shape) if batch_shape else ()
        value = int(target[row])
        where = f"target[{', '.join(map(str, row))}]" if row else "target"
        raise ValueError(
            f"{where} = {value} is outside [0, {n_classes}) and is not "
            f"ignore_index ({ignore_index})"
        )
    return target


def check_weight(weight, n_classes):
    """The class weights as float64, or ValueError/TypeError naming the problem."""
    weight = _host.as_host_array(weight, "weight")
    if weight.dtype.kind not in "iuf" and not _checks.is_half(weight.dtype):
        raise TypeError(f"weight must be real numbers, got dtype {weight.dtype}")
    if weight.shape != (n_classes,):
        raise ValueError(f"weight has shape {weight.shape} but must be ({n_classes},)")
    weight = weight.astype(np.float64)
    if not np.isfinite(weight).all():
        raise ValueError("weight holds NaN or infinite values")
    return weight


def mean_denominator(target, weight, class_targets, ignore_index):
    """What ``reduction='mean'`` divides by (PyTorch's rule), as a float."""
    if not class_targets:
        return float(np.prod(target.shape[:-1]))
    kept = target != ignore_index
    if weight is None:
        return float(np.count_nonzero(kept))
    return float(weight[target[kept]].sum())


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
    grad_out=None,
    backend="auto",
):
    """Cross-entropy of logits against targets, with its gradient in the same pass.

    The class axis is the LAST axis of `logits` (as in JAX and optax; PyTorch's
    ``torch.nn.functional.cross_entropy`` puts it at axis 1 instead). For each
    row with logits ``z``, target ``y``, ``lse = logsumexp(z)`` and
    ``eps = label_smoothing``::

        loss = (1 - eps) * w[y] * (lse - z[y])
               + eps / C * sum_j w[j] * (lse - z[j])
               + z_loss * lse**2

    with ``w`` all ones when `weight` is None. This is PyTorch's definition,
    so results equal ``torch.nn.functional.cross_entropy`` (and its autograd
    gradient) up to rounding; ``z_loss`` (PaLM's auxiliary term) is extra.

    Parameters
    ----------
    logits : array_like
        Shape ``(*batch, C)`` with ``C >= 1``.
    target : array_like
        Integer class indices of shape ``batch``, each in ``[0, C)`` or equal to
        `ignore_index`; or floating class probabilities of `logits`' shape
        (then the loss is ``sum_j w[j] * t'[j] * (lse - z[j])`` with
        ``t' = (1 - eps) * t + eps / C``, and `ignore_index` does not apply).
    weight : array_like, optional
        Finite per-class weights, shape ``(C,)``.
    ignore_index : int, optional
        Rows whose target equals it contribute zero loss and zero gradient and
        are left out of the mean. Default -100.
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"`` divides the summed loss by ``sum(w[y])`` over kept rows (the
        count of kept rows without weights; the row count for probability
        targets), so a mean over no kept rows is NaN, as in PyTorch.
    label_smoothing : float, optional
        ``eps`` in ``[0, 1]``.
    z_loss : float, optional
        Weight of the ``lse**2`` penalty, finite and ``>= 0``.
    return_grad : bool, optional
        Also return the gradient with respect to `logits`.
    grad_out : ndarray, optional
        Where to write the gradient (needs ``return_grad=True``): the logits'
        shape and result dtype. It may be `logits` itself, which saves memory but
        destroys the logits: they are overwritten by the gradient.
    backend : str, optional
        Backend name or ``"auto"``.

    Returns
    -------
    loss : scalar or ndarray
        A scalar of the result dtype for ``"mean"`` and ``"sum"``; an array of
        shape ``batch`` for ``"none"``.
    grad : ndarray
        Only with ``return_grad=True``: ``d(loss)/d(logits)``; for
        ``reduction="none"``, the gradient of the sum of the losses.

    Raises
    ------
    ValueError
        For a target out of range (naming the first bad row and its value),
        shape mismatches (naming both shapes), bad options, or a bad `grad_out`.
    TypeError
        For non-real logits, a boolean target, or a `grad_out` of the wrong dtype.
    RuntimeError
        If the named backend is not available here.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax
    >>> logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> target = np.array([0, 2])
    >>> loss, grad = fastsoftmax.cross_entropy(logits, target, return_grad=True)
    >>> round(float(loss), 6)
    0.669079
    >>> grad.round(4)
    array([[-0.1065,  0.0533,  0.0533],
           [ 0.1667,  0.1667, -0.3333]])
    """
    reduction, eps, z_loss, ignore_index = check_options(
        reduction, label_smoothing, z_loss, ignore_index
    )
    if grad_out is not None and not return_grad:
        raise ValueError("grad_out is given but return_grad is False; pass return_grad=True")
    name, logits = _host.route(backend, logits, "logits")
    if name == "cuda":
        return _dispatch.load("cuda").device_cross_entropy(
            logits, target, weight, ignore_index, reduction, eps, z_loss, return_grad, grad_out
        )
    if logits.ndim == 0:
        raise ValueError("logits must have at least one dimension (the class axis)")
    n_classes = logits.shape[-1]
    if n_classes == 0:
        raise ValueError("logits have no classes (the last axis has length 0)")
    result_dtype = _checks.result_dtype(logits.dtype)
    kernel_dtype = _checks.compute_dtype(result_dtype)
    batch_shape = logits.shape[:-1]

    target = _host.as_host_array(target, "target")
    class_targets = target.dtype.kind in "iu"
    if class_targets:
        target = check_class_targets(target, batch_shape, n_classes, ignore_index)
    elif target.dtype.kind == "f" or _checks.is_half(target.dtype):
        _checks.check_same_shape(target, logits, "probability target", "logits")
    else:
        raise TypeError(
            f"target must be integer class indices or floating probabilities, "
            f"got dtype {target.dtype}"
        )
    weight64 = None if weight is None else check_weight(weight, n_classes)

    if reduction == "mean":
        denominator = mean_denominator(target, weight64, class_targets, ignore_index)
        grad_scale = 1.0 / denominator if denominator else math.inf
    else:
        denominator, grad_scale = 1.0, 1.0

    grad = None
    if return_grad:
        grad = _host.output(
            grad_out,
            logits.shape,
            result_dtype,
            [("logits", logits), ("target", target)],
            name="grad_out",
            like=logits,
        )
    if logits.size == 0:
        loss = _empty_loss(reduction, batch_shape, result_dtype, denominator)
        return (loss, grad) if return_grad else loss

    total = np.zeros((), dtype=np.float64)

    def add_block(block):
        total[...] += np.sum(block, dtype=np.float64)

    if reduction == "none" or math.prod(batch_shape) <= LOSS_BLOCK_ROWS:
        # reduced losses of no more rows than a block: in one array, summed once,
        # without a scratch buffer and its copies (tens of microseconds a call)
        loss_dtype = result_dtype if reduction == "none" else kernel_dtype
        loss_array = np.empty(batch_shape, dtype=loss_dtype)
        loss_operand = Operand(loss_array, kernel_dtype, output=True, per_row=True)
        block_rows = None
    else:
        loss_operand = Operand(None, kernel_dtype, output=True, per_row=True, consume=add_block)
        block_rows = LOSS_BLOCK_ROWS

    kernel = _dispatch.load(name).cross_entropy
    weight_k = None if weight64 is None else weight64.astype(kernel_dtype)
    target_operand = (
        Operand(target, np.dtype(np.int64), per_row=True)
        if class_targets
        else Operand(target, kernel_dtype, width=n_classes)
    )
    operands = [Operand(logits, kernel_dtype), target_operand, loss_operand]
    if grad is not None:
        operands.append(Operand(grad, kernel_dtype, output=True, width=n_classes))

    def call(lv, tv, loss_v, grad_v=None):
        kernel(lv, tv, weight_k, loss_v, grad_v, ignore_index, eps, z_loss, grad_scale)

    run_rows(call, operands, batch_shape, max_block_rows=block_rows)

    if reduction == "none":
        loss = loss_array
    else:
        if block_rows is None:
            add_block(loss_array)
        if reduction == "mean" and denominator:
            loss = result_dtype.type(float(total) / denominator)  # inf on overflow, no warning
        else:
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                value = total / denominator if reduction == "mean" else total
                loss = result_dtype.type(value)
    return (loss, grad) if return_grad else loss


def _empty_loss(reduction, batch_shape, dtype, denominator):
    """The loss of a call with no rows: empty, 0 for a sum, NaN for a mean."""
    if reduction == "none":
        return np.zeros(batch_shape, dtype=dtype)
    return dtype.type(0.0 if reduction == "sum" else math.nan)
