"""The ``numba-parallel`` backend: the ``numba`` kernels split across threads.

The rows are cut into one contiguous chunk per thread and each chunk runs the
serial kernel (``parallel=True`` drivers with ``prange``). The thread count is
``fastsoftmax.get_num_threads()``, read on every call and capped by Numba's
pool size (``NUMBA_NUM_THREADS``); calls below `PARALLEL_MIN_ELEMENTS`
elements stay on the calling thread.

Thread safety: Numba's ``omp`` and ``tbb`` threading layers accept parallel
calls from many threads at once, its ``workqueue`` layer aborts the process.
This module never chooses a layer (that would be a process-wide setting of the
host application); it asks Numba which one is active and, if it is
``workqueue``, lets one parallel call run at a time.
"""

import threading

import numba

from .._threads import get_num_threads
from ._numba import kernels, parallel
from ._numba.protocol import Protocol

# Below this many elements a call stays serial: starting the threads costs
# more than they save there.
PARALLEL_MIN_ELEMENTS = 1 << 15

_workqueue_lock = threading.Lock()
_layer_threadsafe = None  # known once Numba has started its thread pool


def availability():
    return True, "", numba.__version__


def _threads_for(x):
    if x.size < PARALLEL_MIN_ELEMENTS:
        return 1
    return max(1, min(get_num_threads(), numba.config.NUMBA_NUM_THREADS, x.shape[0]))


def _run(name, x, args):
    global _layer_threadsafe
    n_threads = _threads_for(x)
    if n_threads == 1:
        getattr(kernels, name)(*args, 0, x.shape[0])
        return
    driver = getattr(parallel, name)
    # Numba's thread count belongs to the calling thread (it starts the thread
    # pool, after which the threading layer is known); the caller's own
    # setting is put back afterwards.
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        if _layer_threadsafe is None:
            _layer_threadsafe = numba.threading_layer() != "workqueue"
        if _layer_threadsafe:
            driver(*args, n_threads)
        else:
            with _workqueue_lock:
                driver(*args, n_threads)
    finally:
        numba.set_num_threads(previous)


Protocol(_run).export(globals())
