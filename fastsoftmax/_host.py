"""Plumbing shared by the public functions: input coercion, outputs, routing.

The public modules describe *what* each operation needs; this module turns a
caller's arguments into checked host arrays, picks the backend and sends device
arrays to the CUDA path.
"""

import numpy as np

from . import _checks, _dispatch


def is_device_array(obj):
    """True for GPU arrays (Numba, CuPy, PyTorch CUDA) but not NumPy arrays."""
    if isinstance(obj, np.ndarray):
        return False
    # Numba's device arrays, the CUDA simulator's included, carry __cuda_ndarray__;
    # the simulator's have no __cuda_array_interface__.
    return hasattr(obj, "__cuda_array_interface__") or bool(
        getattr(type(obj), "__cuda_ndarray__", False)
    )


def as_host_array(obj, name):
    """`obj` as a NumPy array (no copy for arrays), refusing masked arrays."""
    if isinstance(obj, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array; fill or compress it first")
    if is_device_array(obj):
        raise TypeError(
            f"{name} lives on a GPU but the other arguments do not; pass all arrays "
            "on the same device"
        )
    return np.asarray(obj)


def route(backend, x, name="x"):
    """Pick the backend for a call whose main array is `x`.

    Returns ``(backend_name, x)``; `x` becomes a NumPy array unless it lives on
    a GPU, and ``backend_name`` is ``"cuda"`` for every GPU array.
    """
    if is_device_array(x):
        chosen = _dispatch.choose(backend, 0, on_device=True)
        if chosen != "cuda":
            raise TypeError(
                f"{name} lives on a GPU, which needs backend 'cuda' or 'auto', not "
                f"{chosen!r}; copy it to the host first to use a CPU backend"
            )
    else:
        x = as_host_array(x, name)
        chosen = _dispatch.choose(backend, x.size)
    if chosen == "cuda":
        _dispatch.load("cuda")  # raises when CUDA is unavailable
    return chosen, x


def output(out, shape, dtype, inputs, name="out", like=None):
    """A checked caller `out`, or a new array (laid out like `like` when given)."""
    if out is None:
        if like is not None and like.shape == tuple(shape):
            return np.empty_like(like, dtype=dtype)
        return np.empty(shape, dtype=dtype)
    _checks.check_out(out, shape, dtype, name=name)
    _checks.check_no_partial_overlap(out, inputs, name=name)
    return out
