"""Numba kernels shared by the ``numba`` and ``numba-parallel`` backends.

Layers, bottom up, each in its own module:

``cache``          on-disk caching keyed to the sources of this whole package;
``jit``            the compile options: lazy, cached, GIL released, fast-math
                   flags that keep NaN and infinity semantics (reassociation
                   only in the helpers that sum);
``intrinsics``     bit casts, a NaN-propagating maximum, a unit-stride view and
                   stack arrays, which let LLVM vectorize the loops;
``elementary``     branch-free polynomial ``exp`` and ``log``, float32 and float64;
``rows``           per-row helpers for rows longer than ``SHORT_ROW_MAX`` classes;
``cross_entropy``  the per-row loss and gradient of the fused cross-entropy;
``topk``           the one-pass top-k selection;
``blocks``         every operation on short rows, a transposed tile of rows at a
                   time so that vector lanes span rows;
``kernels``        one function per operation over a range of rows: the serial
                   drivers, and the per-thread work of the parallel ones;
``parallel``       the ``parallel=True`` drivers that split the rows across threads;
``protocol``       the kernel protocol of ``fastsoftmax._backends`` on top of them;
``measure``        measures the size thresholds and first-call times
                   (``python -m fastsoftmax._backends._numba.measure``).

Nothing here compiles at import: every function compiles on its first call, for
the argument types of that call, and is cached on disk.
"""
