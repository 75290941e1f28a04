"""Vector-Jacobian products of softmax and log_softmax along one axis."""

import numpy as np

from . import _checks, _dispatch, _host
from ._layout import Operand, class_axis_last, run_rows


def _backward(op, grad, saved, saved_name, axis, out, backend):
    name, grad = _host.route(backend, grad, "grad")
    if name == "cuda":
        return _dispatch.load("cuda").device_backward(op, grad, saved, axis, out)
    saved = _host.as_host_array(saved, saved_name)
    _checks.check_same_shape(grad, saved, "grad", saved_name)
    axis = _checks.normalize_axis(axis, grad.ndim)
    for array in (grad, saved):
        _checks.result_dtype(array.dtype)  # names a non-real input's own dtype
    result_dtype = _checks.result_dtype(np.result_type(grad.dtype, saved.dtype))
    out = _host.output(
        out, grad.shape, result_dtype, [("grad", grad), (saved_name, saved)], like=grad
    )
    if grad.size == 0:
        return out
    kernel = getattr(_dispatch.load(name), op)
    kernel_dtype = _checks.compute_dtype(result_dtype)
    gm, sm, om = (class_axis_last(a, axis) for a in (grad, saved, out))
    run_rows(
        kernel,
        [
            Operand(gm, kernel_dtype),
            Operand(sm, kernel_dtype),
            Operand(om, kernel_dtype, output=True, width=gm.shape[-1]),
        ],
        gm.shape[:-1],
    )
    return out


def softmax_backward(grad, y, axis=-1, *, out=None, backend="auto"):
    """Gradient through softmax: ``y * (grad - sum(grad * y))`` along `axis`.

    Parameters
    ----------
    grad : array_like
        Gradient of the objective with respect to the softmax output.
    y : array_like
        The softmax output saved from the forward pass, of `grad`'s shape.
    axis : int, optional
        The class axis of the forward pass, the last one by default.
    out : ndarray, optional
        Preallocated result; it may be `grad` or `y` itself (in place).
    backend : str, optional
        Backend name or ``"auto"``.

    Returns
    -------
    ndarray
        Gradient with respect to the logits, in the dtype both inputs promote
        to (float16 is computed in float32; integers give float64).

    Raises
    ------
    ValueError
        If the shapes differ (naming both), or for a bad `out`.
    TypeError, numpy.exceptions.AxisError, RuntimeError
        As for `softmax`.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax
    >>> y = fastsoftmax.softmax(np.array([0.0, 0.0]))
    >>> fastsoftmax.softmax_backward(np.array([1.0, 0.0]), y)
    array([ 0.25, -0.25])
    """
    return _backward("softmax_backward", grad, y, "y", axis, out, backend)


def log_softmax_backward(grad, logp, axis=-1, *, out=None, backend="auto"):
    """Gradient through log_softmax: ``grad - exp(logp) * sum(grad)`` along `axis`.

    Parameters
    ----------
    grad : array_like
        Gradient of the objective with respect to the log_softmax output.
    logp : array_like
        The log_softmax output saved from the forward pass, of `grad`'s shape.
    axis : int, optional
        The class axis of the forward pass, the last one by default.
    out : ndarray, optional
        Preallocated result; it may be `grad` or `logp` itself (in place).
    backend : str, optional
        Backend name or ``"auto"``.

    Returns
    -------
    ndarray
        Gradient with respect to the logits.

    Raises
    ------
    ValueError
        If the shapes differ (naming both), or for a bad `out`.
    TypeError, numpy.exceptions.AxisError, RuntimeError
        As for `softmax`.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax
    >>> logp = fastsoftmax.log_softmax(np.array([0.0, 0.0]))
    >>> fastsoftmax.log_softmax_backward(np.array([-1.0, 0.0]), logp)
    array([-0.5,  0.5])
    """
    return _backward("log_softmax_backward", grad, logp, "logp", axis, out, backend)
