"""The ``numba-parallel`` backend: the ``numba`` kernels split across threads.

The rows are cut into one contiguous chunk per thread and each chunk runs the
serial kernel (``parallel=True`` drivers with ``prange``). The thread count is
``fastsoftmax.get_num_threads()``, read on every call and capped by Numba's
pool size (``NUMBA_NUM_THREADS``); calls below `PARALLEL_MIN_ELEMENTS`
elements stay on the calling thread.

One call at a time uses the threads: a call that finds them busy (another
Python thread's call, say from Dask's threaded scheduler) runs on its own
thread instead of queueing or stacking a second team of threads on the same
cores. That also makes concurrent calls safe under Numba's ``workqueue``
threading layer, which aborts the process when two parallel regions overlap;
``omp`` and ``tbb`` accept them. This module never chooses a layer: that is a
process-wide setting of the host application.

Numba's default layer here is OpenMP, whose idle threads spin. On a machine
whose cores are all busy with other work, a spinning thread waits for the
scheduler and a call can take milliseconds instead of microseconds; setting
``OMP_WAIT_POLICY=passive`` in the environment (before the first parallel
call), or ``fastsoftmax.set_num_threads(1)``, avoids that.
"""

import threading

import numba

from .._threads import get_num_threads
from ._numba import kernels, parallel
from ._numba.protocol import Protocol

# Below this many elements a call stays on the calling thread. Measured with
# ``python -m fastsoftmax._backends._numba.measure threads`` (float32, best of
# 100 runs, 2-core AMD EPYC): two threads take 1.2-1.3x less time than one at
# 16k elements (rows of 128), 1.5-1.6x at 32k, 1.65-1.8x at 64k (rows of 128
# and 1000), 1.9-2.0x from 512k (rows of 10 too); at 8k they gain nothing.
PARALLEL_MIN_ELEMENTS = 1 << 15

_threads_busy = threading.Lock()


def availability():
    return True, "", numba.__version__


def _threads_for(x):
    if x.size < PARALLEL_MIN_ELEMENTS:
        return 1
    return max(1, min(get_num_threads(), numba.config.NUMBA_NUM_THREADS, x.shape[0]))


def _run(name, x, args):
    n_threads = _threads_for(x)
    if n_threads > 1 and _threads_busy.acquire(blocking=False):
        try:
            # Numba's thread count belongs to the calling thread; the caller's
            # own setting is put back afterwards.
            previous = numba.get_num_threads()
            numba.set_num_threads(n_threads)
            try:
                getattr(parallel, name)(*args, n_threads)
            finally:
                numba.set_num_threads(previous)
        finally:
            _threads_busy.release()
        return
    getattr(kernels, name)(*args, 0, x.shape[0])


Protocol(_run, _threads_for).export(globals())
