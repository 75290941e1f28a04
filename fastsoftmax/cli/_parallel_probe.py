"""A tiny parallel Numba function, run once so that Numba loads its threading layer."""

import numba


@numba.njit(parallel=True, cache=True)
def parallel_sum(values):
    """Sum of a 1-D array over Numba's thread pool."""
    total = 0.0
    for i in numba.prange(values.shape[0]):
        total += values[i]
    return total
