"""The ``numba`` backend: Numba-compiled kernels on the calling thread.

Each operation compiles on its first call for the dtypes and layouts of that
call (float32 and float64; contiguous or strided rows) and is cached on disk,
so importing this module compiles nothing. The kernels release the GIL, so
several Python threads may call them at once. The numerical code lives in
``fastsoftmax._backends._numba``; see there for how it vectorizes.
"""

import numba

from ._numba import kernels
from ._numba.protocol import Protocol


def availability():
    return True, "", numba.__version__


def _run(name, x, args):
    getattr(kernels, name)(*args, 0, x.shape[0])


Protocol(_run).export(globals())
