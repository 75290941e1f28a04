"""Backend registry and the ``auto`` policy, in one place.

Backends are modules under ``fastsoftmax._backends`` imported on first use, so
``import fastsoftmax`` loads neither Numba nor the C extension.
"""

import functools
import importlib
import os
from typing import NamedTuple

BACKEND_MODULES = {
    "numpy": "fastsoftmax._backends.numpy_backend",
    "c": "fastsoftmax._backends.c_backend",
    "numba": "fastsoftmax._backends.numba_backend",
    "numba-parallel": "fastsoftmax._backends.numba_parallel_backend",
    "cuda": "fastsoftmax._backends.cuda_backend",
}
BACKEND_NAMES = tuple(BACKEND_MODULES)
HOST_BACKENDS = ("numpy", "c", "numba", "numba-parallel")
ENVIRONMENT_VARIABLE = "FASTSOFTMAX_BACKEND"

# ``auto`` sends host calls of at least this many elements to numba-parallel and
# smaller ones to the C backend, which loads no JIT: a small call never waits
# for Numba's import (0.5 s), its start-up on a process's first call (about 1 s,
# even with the kernels cached) or a first compile (2-8 s per op and dtype).
# Measured with ``python -m fastsoftmax._backends._numba.measure`` (float32,
# 2 threads, best of 60-100 runs, 2-core AMD EPYC): below 32k elements both run
# on one thread and numba-parallel takes only 3-13% less time per call; from
# 32k it runs two threads (1.5x faster than one at 32k, 1.65-1.8x at 64k) while
# the C backend stays on one thread up to 256k elements.
AUTO_PARALLEL_MIN_ELEMENTS = 1 << 16


class BackendInfo(NamedTuple):
    """Availability of one backend, as reported by `backends`."""

    available: bool
    reason: str
    version: str | None


@functools.cache
def _probe(name):
    """Import a backend module and ask it whether it can run; cached per process."""
    try:
        module = importlib.import_module(BACKEND_MODULES[name])
    except ImportError as exc:
        return None, BackendInfo(False, f"cannot import {BACKEND_MODULES[name]}: {exc}", None)
    available, reason, version = module.availability()
    return (module if available else None), BackendInfo(bool(available), reason, version)


def backends():
    """Report every backend: whether it can run here, why not, and its version.

    Returns
    -------
    dict of str to BackendInfo
        Keys in the order ``numpy``, ``c``, ``numba``, ``numba-parallel``,
        ``cuda``; each value is a ``(available, reason, version)`` named tuple.
        ``reason`` is empty for an available backend.

    Examples
    --------
    >>> import fastsoftmax
    >>> info = fastsoftmax.backends()
    >>> list(info)
    ['numpy', 'c', 'numba', 'numba-parallel', 'cuda']
    >>> info["numpy"].available
    True
    """
    return {name: _probe(name)[1] for name in BACKEND_NAMES}


def is_available(name):
    return _probe(name)[0] is not None


def load(name):
    """Return the module of an explicitly named backend, or raise why not."""
    if name not in BACKEND_MODULES:
        raise ValueError(
            f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)} or 'auto'"
        )
    module, info = _probe(name)
    if module is None:
        raise RuntimeError(f"backend {name!r} is not available: {info.reason}")
    return module


def _auto_host(n_elements):
    if n_elements >= AUTO_PARALLEL_MIN_ELEMENTS and is_available("numba-parallel"):
        return "numba-parallel"
    if is_available("c"):
        return "c"
    return "numpy"


def choose(backend, n_elements, on_device=False):
    """Resolve a ``backend=`` argument to a backend name.

    ``"auto"`` takes ``FASTSOFTMAX_BACKEND`` when it is set, else picks ``cuda``
    for device arrays and, for host arrays, ``numba-parallel`` from
    `AUTO_PARALLEL_MIN_ELEMENTS` elements up, the C backend below that, and the
    NumPy backend when neither is available.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend == "auto":
        backend = os.environ.get(ENVIRONMENT_VARIABLE, "").strip() or "auto"
    if backend == "auto":
        return "cuda" if on_device else _auto_host(n_elements)
    load(backend)  # raises for unknown or unavailable names
    return backend
