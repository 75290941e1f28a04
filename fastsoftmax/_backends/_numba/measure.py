"""Measure the two size thresholds that decide where the Numba kernels run.

``python -m fastsoftmax._backends._numba.measure`` prints, for float32 rows of
10, 128 and 1000 classes and sizes from 8k to 1M elements:

- ``threads``: the serial kernel against the parallel driver on two threads,
  which sets ``numba_parallel_backend.PARALLEL_MIN_ELEMENTS``;
- ``auto``: one call through the public API on the C backend against
  numba-parallel, which sets ``fastsoftmax._dispatch.AUTO_PARALLEL_MIN_ELEMENTS``.

Each time is the best of many interleaved runs: on a shared machine that is
the least disturbed one. Run it on an otherwise idle machine; under CPU
oversubscription the OpenMP threading layer's spinning threads dominate.
"""

import argparse
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
        t = np.float32(1.0)
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("threads", "auto", "both"), nargs="?", default="both")
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args(argv)
    if args.what in ("threads", "both"):
        threads(args.repeats)
    if args.what in ("auto", "both"):
        if not fastsoftmax.backends()["c"].available:
            raise SystemExit("the C backend is not available here")
        auto(args.repeats)


if __name__ == "__main__":
    main()
