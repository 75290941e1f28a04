"""Measure the size thresholds that decide where the Numba kernels run, and
the time a first call takes.

``python -m fastsoftmax._backends._numba.measure [threads|auto|first-call]``
prints, for float32 rows of 10, 128 and 1000 classes and sizes from 8k to 1M
elements:

- ``threads``: the serial kernel against the parallel driver on two threads,
  which sets ``numba_parallel_backend.PARALLEL_MIN_ELEMENTS``;
- ``auto``: one call through the public API on the C backend against
  numba-parallel, which sets ``fastsoftmax._dispatch.AUTO_PARALLEL_MIN_ELEMENTS``;
- ``first-call``: in fresh interpreters, the time of ``import fastsoftmax`` and
  of each op's first call on both Numba backends, cold (empty on-disk cache,
  so the op compiles) and warm (the next process, which loads it).

Each threshold time is the best of many interleaved runs: on a shared machine
that is the least disturbed one. Run it on an otherwise idle machine; under
CPU oversubscription the OpenMP threading layer's spinning threads dominate.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

import fastsoftmax

from . import kernels, parallel
from .blocks import SHORT_ROW_MAX

WIDTHS = (10, 128, 1000)
SIZES = tuple(2**k for k in range(13, 21))


def best_times(calls, repeats):
    """Best time in seconds of each callable, run in turn `repeats` times."""
    for call in calls.values():
        call()  # compile, warm the caches
    best = dict.fromkeys(calls, np.inf)
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def problems():
    """``(rows, width, x, out)`` for every width and size."""
    rng = np.random.default_rng(0)
    for width in WIDTHS:
        for size in SIZES:
            rows = max(1, size // width)
            x = rng.standard_normal((rows, width), dtype=np.float32)
            yield rows, width, x, np.empty_like(x)


def threads(repeats):
    """Serial kernels against the parallel drivers on two threads."""
    print("size         op           1 thread   2 threads  speed-up")
    for rows, width, x, out in problems():
        suffix = "_short" if width <= SHORT_ROW_MAX else ""
        t = 1.0
        for op in ("softmax", "log_softmax"):
            serial, threaded = getattr(kernels, op + suffix), getattr(parallel, op + suffix)
            best = best_times(
                {
                    "serial": lambda: serial(x, out, t, 0, rows),
                    "threads": lambda: threaded(x, out, t, 2),
                },
                repeats,
            )
            print(
                f"{rows:>7}x{width:<5} {op:12} {best['serial'] * 1e6:8.1f}us "
                f"{best['threads'] * 1e6:8.1f}us {best['serial'] / best['threads']:6.2f}x"
            )


def auto(repeats):
    """The C backend against numba-parallel, one public call each."""
    fastsoftmax.set_num_threads(2)
    print("size         op              c     numba-parallel  c / numba-parallel")
    for rows, width, x, out in problems():
        target = np.zeros(rows, np.int64)
        for op in ("softmax", "log_softmax", "cross_entropy"):
            if op == "cross_entropy":
                calls = {
                    b: lambda b=b: fastsoftmax.cross_entropy(
                        x, target, return_grad=True, grad_out=out, backend=b
                    )
                    for b in ("c", "numba-parallel")
                }
            else:
                function = getattr(fastsoftmax, op)
                calls = {
                    b: lambda b=b: function(x, out=out, backend=b) for b in ("c", "numba-parallel")
                }
            best = best_times(calls, repeats)
            c, numba = best["c"], best["numba-parallel"]
            print(
                f"{rows:>7}x{width:<5} {op:13} {c * 1e6:8.1f}us {numba * 1e6:8.1f}us "
                f"{c / numba:10.2f}x"
            )


_FIRST_CALLS = """
    import time
    start = time.perf_counter()
    import fastsoftmax
    print(f"import fastsoftmax {time.perf_counter() - start:.2f}s")
    import numpy as np
    x = np.random.default_rng(0).standard_normal((2000, 1000), dtype=np.float32)
    g, target = np.ones_like(x), np.zeros(2000, np.int64)
    ops = {
        "softmax": lambda b: fastsoftmax.softmax(x, backend=b),
        "log_softmax": lambda b: fastsoftmax.log_softmax(x, backend=b),
        "logsumexp": lambda b: fastsoftmax.logsumexp(x, backend=b),
        "softmax_backward": lambda b: fastsoftmax.softmax_backward(g, x, backend=b),
        "log_softmax_backward": lambda b: fastsoftmax.log_softmax_backward(g, x, backend=b),
        "cross_entropy": lambda b: fastsoftmax.cross_entropy(
            x, target, return_grad=True, backend=b
        ),
        "softmax_topk": lambda b: fastsoftmax.softmax_topk(x, 5, backend=b),
    }
    for backend in ("numba", "numba-parallel"):
        for name, call in ops.items():
            start = time.perf_counter()
            call(backend)
            first = time.perf_counter() - start
            start = time.perf_counter()
            call(backend)
            print(f"{backend:15} {name:21} first call {first:6.2f}s, "
                  f"then {(time.perf_counter() - start) * 1e3:7.2f}ms")
"""


def first_call():
    """Cold and warm first calls, each in a fresh interpreter."""
    with tempfile.TemporaryDirectory() as cache:
        environment = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("cold (empty cache)", "warm (cached)"):
            print(f"--- {label}, float32 2000x1000, in this order:", flush=True)
            subprocess.run(
                [sys.executable, "-c", textwrap.dedent(_FIRST_CALLS)], env=environment, check=True
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "what", choices=("threads", "auto", "first-call", "all"), nargs="?", default="all"
    )
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args(argv)
    if args.what in ("threads", "all"):
        threads(args.repeats)
    if args.what in ("auto", "all"):
        if not fastsoftmax.backends()["c"].available:
            raise SystemExit("the C backend is not available here")
        auto(args.repeats)
    if args.what in ("first-call", "all"):
        first_call()


if __name__ == "__main__":
    main()
