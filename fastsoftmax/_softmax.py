"""softmax, log_softmax, logsumexp and softmax_topk along one axis."""

import operator

import numpy as np

from . import _checks, _dispatch, _host
from ._layout import Operand, class_axis_last, run_rows


def _rowwise(op, x, axis, out, dtype, backend, inv_temperature):
    """Shared body of softmax and log_softmax: same-shape result along `axis`."""
    name, x = _host.route(backend, x)
    if name == "cuda":
        return _dispatch.load("cuda").device_rowwise(op, x, axis, out, dtype, inv_temperature)
    axis = _checks.normalize_axis(axis, x.ndim)
    result_dtype = _checks.result_dtype(x.dtype, dtype)
    out = _host.output(out, x.shape, result_dtype, [("x", x)], like=x)
    if x.size == 0:
        return out
    kernel_dtype = _checks.compute_dtype(result_dtype)
    module = _dispatch.load(name)
    kernel = getattr(module, op)
    xm, om = class_axis_last(x, axis), class_axis_last(out, axis)
    run_rows(
        lambda xv, ov: kernel(xv, ov, inv_temperature),
        [
            Operand(xm, kernel_dtype),
            Operand(om, kernel_dtype, output=True, width=xm.shape[-1]),
        ],
        xm.shape[:-1],
    )
    return out


def softmax(x, axis=-1, *, temperature=1.0, out=None, dtype=None, backend="auto"):
    """Softmax along one axis: ``exp(x/T - m) / sum(exp(x/T - m))``.

    Parameters
    ----------
    x : array_like
        Logits. Any shape, strides and byte order; float32 and float64 are
        computed natively, float16 and bfloat16 in float32, integers and bools
        as float64. A GPU array (``__cuda_array_interface__``) is computed on
        its device.
    axis : int, optional
        The class axis; the last one by default (as in JAX; PyTorch's
        ``cross_entropy`` uses axis 1 instead).
    temperature : float, optional
        ``T``, finite and positive. The logits are divided by it.
    out : ndarray, optional
        Where to write the result: its shape and dtype must be the result's.
        It may be `x` itself (in place) but must not partly overlap it.
    dtype : dtype, optional
        Floating dtype of the result; float16 and bfloat16 are computed in
        float32. By default the input's float dtype, or float64.
    backend : str, optional
        ``"auto"`` (default), ``"numpy"``, ``"c"``, ``"numba"``,
        ``"numba-parallel"`` or ``"cuda"``; see `backends`.

    Returns
    -------
    ndarray
        Probabilities of `x`'s shape, laid out like `x`; `out` when given.

    Raises
    ------
    TypeError
        For complex, object or string input, a non-floating `dtype`, or an `out`
        of the wrong dtype.
    ValueError
        For a bad `temperature`, an `out` of the wrong shape, read-only or partly
        overlapping `x`, or an unknown backend.
    numpy.exceptions.AxisError
        If `axis` is out of range.
    RuntimeError
        If the named backend is not available here.

    Notes
    -----
    A row holding NaN or ``+inf``, or only ``-inf``, gives a NaN row; ``-inf``
    entries of any other row give exactly 0. Huge finite logits never overflow,
    since the row maximum is subtracted before exponentiation.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax
    >>> fastsoftmax.softmax(np.array([1.0, 2.0, 3.0])).round(4)
    array([0.09  , 0.2447, 0.6652])
    >>> fastsoftmax.softmax(np.array([[0.0, 0.0], [0.0, np.log(3.0)]]), axis=1)
    array([[0.5 , 0.5 ],
           [0.25, 0.75]])
    >>> fastsoftmax.softmax(np.array([0.0, 1.0]), temperature=1e-3)
    array([0., 1.])
    """
    inv_t = _checks.inverse_temperature(temperature)
    return _rowwise("softmax", x, axis, out, dtype, backend, inv_t)


def log_softmax(x, axis=-1, *, temperature=1.0, out=None, dtype=None, backend="auto"):
    """Log-softmax along one axis: ``x/T - logsumexp(x/T)``.

    The stable way to get log-probabilities: it never takes the log of a
    probability that underflowed to zero.

    Parameters
    ----------
    x : array_like
        Logits; any shape, strides, byte order (see `softmax` for dtypes).
    axis : int, optional
        The class axis, the last one by default.
    temperature : float, optional
        Finite and positive; the logits are divided by it.
    out : ndarray, optional
        Preallocated result of the right shape and dtype; may be `x` itself.
    dtype : dtype, optional
        Floating dtype of the result.
    backend : str, optional
        Backend name or ``"auto"``.

    Returns
    -------
    ndarray
        Log-probabilities of `x`'s shape; `out` when given.

    Raises
    ------
    TypeError, ValueError, numpy.exceptions.AxisError, RuntimeError
        As for `softmax`.

    Notes
    -----
    ``-inf`` entries stay exactly ``-inf``; rows with NaN, ``+inf`` or only
    ``-inf`` are NaN.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax
    >>> fastsoftmax.log_softmax(np.array([0.0, 0.0, 0.0, 0.0]))
    array([-1.38629436, -1.38629436, -1.38629436, -1.38629436])
    >>> fastsoftmax.log_softmax(np.array([1000.0, 0.0]))
    array([    0., -1000.])
    """
    inv_t = _checks.inverse_temperature(temperature)
    return _rowwise("log_softmax", x, axis, out, dtype, backend, inv_t)


def logsumexp(x, axis=-1, *, keepdims=False, out=None, dtype=None, backend="auto"):
    """``log(sum(exp(x)))`` along one axis, in one pass over each row.

    Parameters
    ----------
    x : array_like
        Input; any shape, strides, byte order (see `softmax` for dtypes).
    axis : int, optional
        The axis reduced, the last one by default.
    keepdims : bool, optional
        Keep the reduced axis with length one.
    out : ndarray, optional
        Preallocated result of the reduced shape and the result dtype.
    dtype : dtype, optional
        Floating dtype of the result.
    backend : str, optional
        Backend name or ``"auto"``.

    Returns
    -------
    ndarray
        The reduced array; `out` when given.

    Raises
    ------
    TypeError, ValueError, numpy.exceptions.AxisError, RuntimeError
        As for `softmax`.

    Notes
    -----
    Rows of only ``-inf`` and empty rows give ``-inf``; a row with ``+inf``
    gives ``+inf``; a row with NaN gives NaN (as ``scipy.special.logsumexp``).

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax
    >>> fastsoftmax.logsumexp(np.array([[0.0, 0.0], [1e30, 1e30]]))
    array([6.93147181e-01, 1.00000000e+30])
    >>> fastsoftmax.logsumexp(np.zeros((2, 0)))
    array([-inf, -inf])
    """
    keepdims = bool(keepdims)
    name, x = _host.route(backend, x)
    if name == "cuda":
        return _dispatch.load("cuda").device_logsumexp(x, axis, keepdims, out, dtype)
    axis = _checks.normalize_axis(axis, x.ndim)
    result_dtype = _checks.result_dtype(x.dtype, dtype)
    reduced = x.shape[:axis] + x.shape[axis + 1 :]
    shape = x.shape[:axis] + (1,) + x.shape[axis + 1 :] if keepdims else reduced
    out = _host.output(out, shape, result_dtype, [("x", x)])
    per_row = out.reshape(reduced) if keepdims else out
    if per_row.size == 0:
        return out
    if x.shape[axis] == 0:
        per_row[...] = -np.inf
        return out
    kernel = _dispatch.load(name).logsumexp
    xm = class_axis_last(x, axis)
    kernel_dtype = _checks.compute_dtype(result_dtype)
    run_rows(
        kernel,
        [Operand(xm, kernel_dtype), Operand(per_row, kernel_dtype, output=True, per_row=True)],
        xm.shape[:-1],
    )
    return out


def check_k(k, n_classes):
    if isinstance(k, bool):
        raise TypeError("k must be an integer, got bool")
    try:
        k = operator.index(k)
    except TypeError:
        raise TypeError(f"k must be an integer, got {type(k).__name__}") from None
    if not 1 <= k <= n_classes:
        raise ValueError(f"k must be between 1 and the number of classes ({n_classes}), got {k}")
    return k


def softmax_topk(x, k, axis=-1, *, temperature=1.0, backend="auto"):
    """The `k` largest softmax probabilities per row and their class indices.

    One pass per row finds the log-sum-exp and the top `k` logits together; the
    full softmax is never materialised.

    Parameters
    ----------
    x : array_like
        Logits; any shape, strides, byte order (see `softmax` for dtypes).
    k : int
        How many classes to keep, ``1 <= k <= C``.
    axis : int, optional
        The class axis, the last one by default.
    temperature : float, optional
        Finite and positive; the logits are divided by it.
    backend : str, optional
        Backend name or ``"auto"``.

    Returns
    -------
    probs : ndarray
        Shape of `x` with `axis` of length `k`: probabilities in descending
        order, in the result dtype `softmax` would give.
    indices : ndarray of int64
        Matching class indices, ordered by logit; equal logits are ordered by
        index (so distinct logits whose probabilities both underflow to 0 keep
        their logit order).

    Raises
    ------
    ValueError
        If `k` is outside ``1..C``, or for a bad `temperature`.
    TypeError, numpy.exceptions.AxisError, RuntimeError
        As for `softmax`.

    Notes
    -----
    A row whose softmax is NaN (it holds NaN or ``+inf``, or only ``-inf``)
    gives NaN probabilities and the indices ``0..k-1``.

    Examples
    --------
    >>> import numpy as np
    >>> import fastsoftmax
    >>> probs, idx = fastsoftmax.softmax_topk(np.log([[0.1, 0.2, 0.3, 0.4]]), 2)
    >>> probs.round(6), idx
    (array([[0.4, 0.3]]), array([[3, 2]]))
    """
    inv_t = _checks.inverse_temperature(temperature)
    name, x = _host.route(backend, x)
    if name == "cuda":
        return _dispatch.load("cuda").device_softmax_topk(x, k, axis, inv_t)
    axis = _checks.normalize_axis(axis, x.ndim)
    k = check_k(k, x.shape[axis])
    result_dtype = _checks.result_dtype(x.dtype)
    xm = class_axis_last(x, axis)
    probs = np.empty(xm.shape[:-1] + (k,), dtype=result_dtype)
    indices = np.empty(xm.shape[:-1] + (k,), dtype=np.int64)
    kernel = _dispatch.load(name).softmax_topk
    kernel_dtype = _checks.compute_dtype(result_dtype)
    run_rows(
        lambda xv, pv, iv: kernel(xv, inv_t, pv, iv),
        [
            Operand(xm, kernel_dtype),
            Operand(probs, kernel_dtype, output=True, width=k),
            Operand(indices, np.dtype(np.int64), output=True, width=k),
        ],
        xm.shape[:-1],
    )
    return np.moveaxis(probs, -1, axis), np.moveaxis(indices, -1, axis)
