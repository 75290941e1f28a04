"""Numba kernels shared by the ``numba`` and ``numba-parallel`` backends.

Layers, bottom up, each in its own module:

``jit``          the compile options every kernel uses (lazy, cached, GIL released,
                 fast-math flags that keep NaN and infinity semantics);
``intrinsics``   bit casts, a NaN-propagating maximum and a unit-stride view, which
                 let LLVM vectorize the loops;
``elementary``   branch-free polynomial ``exp`` and ``log`` for float32 and float64;
``rows``         per-row helpers for rows longer than ``SHORT_ROW_MAX`` classes;
``blocks``       the same operations for short rows, a transposed block of rows at
                 a time so that vector lanes span rows;
``topk``         the one-pass top-k selection;
``kernels``      one function per operation over a range of rows: the serial
                 drivers, and the per-thread work of the parallel ones;
``parallel``     the ``parallel=True`` drivers that split the rows across threads.

Nothing here compiles at import: every function compiles on its first call, for
the argument types of that call, and is cached on disk.
"""
