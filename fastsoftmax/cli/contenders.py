"""What ``fastsoftmax bench`` times: each op by every backend and by the peers.

A contender turns the data of one case (logits ``x`` of shape ``(rows, C)`` and
class targets) into a call with no arguments that computes one op; everything
that is not the op itself (output allocation for ``out=``, copies to a GPU,
tensor wrapping) happens before, outside the timing. SciPy and PyTorch are
imported only here, and only when a benchmark runs.
"""

import importlib
from dataclasses import dataclass

import numpy as np

import fastsoftmax

OPS = ("softmax", "log_softmax", "logsumexp", "cross_entropy")
PEERS = ("numpy-naive", "scipy", "torch")


@dataclass(frozen=True)
class Contender:
    """One implementation: its table label, whether it is ours, and its call maker."""

    name: str
    ours: bool
    prepare: object  # (op, x, target) -> zero-argument callable, or None: op not offered


def bytes_moved(op, x, target):
    """Bytes an op must read and write once: the numerator of GB/s, the same for all."""
    if op == "logsumexp":
        return x.nbytes + x.shape[0] * x.itemsize
    if op == "cross_entropy":  # logits and targets in, gradient out
        return 2 * x.nbytes + target.nbytes
    return 2 * x.nbytes


# fastsoftmax: results go into preallocated arrays through out= / grad_out=.


def _ours_host(backend):
    def prepare(op, x, target):
        if op == "cross_entropy":
            grad = np.empty_like(x)
            return lambda: fastsoftmax.cross_entropy(
                x, target, return_grad=True, grad_out=grad, backend=backend
            )
        function = getattr(fastsoftmax, op)
        out = np.empty(x.shape[:1] if op == "logsumexp" else x.shape, dtype=x.dtype)
        return lambda: function(x, out=out, backend=backend)

    return prepare


def _ours_cuda(op, x, target):
    """The cuda backend on arrays already on the GPU; the timing includes a synchronize."""
    from numba import cuda

    x_gpu = cuda.to_device(x)
    if op == "cross_entropy":
        target_gpu = cuda.to_device(target)
        grad = cuda.device_array_like(x_gpu)

        def call():
            fastsoftmax.cross_entropy(
                x_gpu, target_gpu, return_grad=True, grad_out=grad, backend="cuda"
            )
            cuda.synchronize()

        return call
    function = getattr(fastsoftmax, op)
    out = cuda.device_array(x.shape[:1] if op == "logsumexp" else x.shape, dtype=x.dtype)

    def call():
        function(x_gpu, out=out, backend="cuda")
        cuda.synchronize()

    return call


# numpy-naive: the textbook expressions (max, exp, sum, divide), allocating freely.


def _naive_lse(x):
    m = x.max(axis=1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def _naive_softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _naive_cross_entropy(x, target):
    rows = np.arange(x.shape[0])
    loss = np.mean(_naive_lse(x)[:, 0] - x[rows, target])
    grad = _naive_softmax(x)
    grad[rows, target] -= 1
    grad /= x.shape[0]
    return loss, grad


_NAIVE = {
    "softmax": _naive_softmax,
    "log_softmax": lambda x: x - _naive_lse(x),
    "logsumexp": lambda x: _naive_lse(x)[:, 0],
    "cross_entropy": _naive_cross_entropy,
}


def _numpy_naive(op, x, target):
    function = _NAIVE[op]
    if op == "cross_entropy":
        return lambda: function(x, target)
    return lambda: function(x)


def _scipy(op, x, target):
    if op == "cross_entropy":  # SciPy has no cross-entropy with a gradient
        return None
    special = importlib.import_module("scipy.special")
    function = getattr(special, op)
    return lambda: function(x, axis=1)


def _torch(op, x, target):
    import torch

    if op == "cross_entropy":
        logits = torch.from_numpy(x).requires_grad_(True)
        classes = torch.from_numpy(target)

        def call():
            logits.grad = None
            torch.nn.functional.cross_entropy(logits, classes).backward()

        return call
    tensor = torch.from_numpy(x)
    function = getattr(torch, op)
    return lambda: function(tensor, dim=1)


_PEER_MODULES = {"numpy-naive": "numpy", "scipy": "scipy.special", "torch": "torch"}
_PEER_PREPARE = {"numpy-naive": _numpy_naive, "scipy": _scipy, "torch": _torch}


def peer_version(name):
    """The version of a peer's package, or None when it cannot be imported."""
    try:
        module = importlib.import_module(_PEER_MODULES[name].split(".")[0])
    except ImportError:
        return None
    return getattr(module, "__version__", "")


def ours(backend_names):
    """Contenders for the named fastsoftmax backends (all assumed available)."""
    return [
        Contender(name, True, _ours_cuda if name == "cuda" else _ours_host(name))
        for name in backend_names
    ]


def peers(names):
    """Contenders for the named peers whose packages import; and ``{name: why not}``."""
    found, missing = [], {}
    for name in names:
        if peer_version(name) is None:
            missing[name] = f"{_PEER_MODULES[name].split('.')[0]} is not installed"
        else:
            found.append(Contender(name, False, _PEER_PREPARE[name]))
    return found, missing
