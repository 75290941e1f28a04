"""The CPU thread count shared by the C and Numba backends.

The value lives here and is read by host code on every call; kernels never
freeze it. Setting it affects only this library, never Numba's or OpenMP's own
process-wide defaults.
"""

import operator
import os

_num_threads = None


def _cpus_available():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def set_num_threads(n):
    """Set the number of CPU threads the C and Numba backends may use.

    Parameters
    ----------
    n : int
        Thread count, at least 1. Small inputs still run on one thread. The
        ``numba-parallel`` backend is further capped by Numba's thread pool size
        (``NUMBA_NUM_THREADS``, fixed when Numba starts).

    Raises
    ------
    TypeError
        If `n` is not an integer.
    ValueError
        If `n` is smaller than 1.

    Examples
    --------
    >>> import fastsoftmax
    >>> previous = fastsoftmax.get_num_threads()
    >>> fastsoftmax.set_num_threads(1)
    >>> fastsoftmax.get_num_threads()
    1
    >>> fastsoftmax.set_num_threads(previous)
    """
    global _num_threads
    if isinstance(n, bool):
        raise TypeError("thread count must be an integer, got bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"thread count must be an integer, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"thread count must be at least 1, got {n}")
    _num_threads = n


def get_num_threads():
    """Return the number of CPU threads the C and Numba backends may use.

    Returns
    -------
    int
        The value given to `set_num_threads`, or by default the number of CPUs
        this process may run on.

    Examples
    --------
    >>> import fastsoftmax
    >>> fastsoftmax.get_num_threads() >= 1
    True
    """
    if _num_threads is None:
        return _cpus_available()
    return _num_threads
