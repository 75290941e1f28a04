"""Validation shared by every backend: dtypes, axes, scalars, ``out`` arrays.

Functions here work from shapes and dtypes, so the host path and the device
path apply the very same rules. Kernels never validate.
"""

import math
import numbers
import operator

import numpy as np

FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)
FLOAT16 = np.dtype(np.float16)


def _bfloat16():
    """The ml_dtypes bfloat16 dtype when that package is already imported."""
    import sys

    ml_dtypes = sys.modules.get("ml_dtypes")
    return None if ml_dtypes is None else np.dtype(ml_dtypes.bfloat16)


def is_half(dtype):
    """True for 16-bit floats, which are computed in float32."""
    return dtype == FLOAT16 or (dtype.kind == "V" and dtype == _bfloat16())


def result_dtype(input_dtype, requested=None):
    """The dtype a result takes: `requested`, else the input's float dtype.

    Integer and bool input gives float64 (as SciPy does); complex, object,
    string and other non-real input raises TypeError naming the dtype.
    """
    if requested is None and (input_dtype is FLOAT32 or input_dtype is FLOAT64):
        return input_dtype  # the common case, without the checks below
    input_dtype = np.dtype(input_dtype)
    if requested is not None:
        try:
            requested = np.dtype(requested)
        except TypeError:
            raise TypeError(f"dtype must be a floating dtype, got {requested!r}") from None
        if not (requested.kind == "f" or is_half(requested)):
            raise TypeError(f"dtype must be a floating dtype, got {requested}")
    if input_dtype.kind == "f" or is_half(input_dtype):
        return requested if requested is not None else input_dtype.newbyteorder("=")
    if input_dtype.kind in "biu":
        return requested if requested is not None else FLOAT64
    raise TypeError(
        f"unsupported dtype {input_dtype}: expected real floating, integer or bool input"
    )


def compute_dtype(dtype):
    """The dtype a kernel runs in for results of `dtype`: float32 or float64."""
    if dtype is FLOAT32 or dtype is FLOAT64:
        return dtype
    dtype = np.dtype(dtype)
    if is_half(dtype) or dtype.itemsize <= 4:
        return FLOAT32
    return FLOAT64


def normalize_axis(axis, ndim):
    """A non-negative axis index; numpy's AxisError when out of range."""
    if type(axis) is int and -ndim <= axis < ndim:
        return axis % ndim  # the common case, without the checks below
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"axis must be an integer, got {type(axis).__name__}")
    axis = operator.index(axis)
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(axis, ndim)
    return axis % ndim


def real_scalar(value, name):
    """A Python float from a real number, else TypeError naming the argument."""
    if type(value) is float:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def inverse_temperature(temperature):
    """``1 / temperature`` after checking that it is finite and positive."""
    temperature = real_scalar(temperature, "temperature")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    return 1.0 / temperature


def check_out(out, shape, dtype, name="out"):
    """Check a caller-supplied output's type, shape, dtype and writability."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}, but the result has shape {tuple(shape)}")
    if out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype}, but the result has dtype {dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")


def same_memory(a, b):
    """True when two arrays are the very same view of memory (in-place use)."""
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
        and a.dtype == b.dtype
    )


def check_no_partial_overlap(out, inputs, name="out"):
    """ValueError when `out` shares memory with an input without being it."""
    for label, array in inputs:
        if not isinstance(array, np.ndarray) or not np.may_share_memory(out, array):
            continue
        if same_memory(out, array):
            continue
        try:
            overlaps = np.shares_memory(out, array, max_work=10_000)
        except np.exceptions.TooHardError:
            overlaps = True
        if overlaps:
            raise ValueError(
                f"{name} partly overlaps {label}; pass {label} itself for an in-place "
                "result, or a separate array"
            )


def check_same_shape(a, b, name_a, name_b):
    if a.shape != b.shape:
        raise ValueError(f"{name_a} has shape {a.shape} but {name_b} has shape {b.shape}")
