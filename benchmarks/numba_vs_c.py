"""numba-parallel time over C backend time, every operation, shape and dtype.

The Numba issue's bar is numba-parallel within 1.25x of the C backend's time
on every benchmark shape. A sequential table (``gb_table.py``) is too coarse
for that bar on a shared machine; here the two run side by side, as in
``side_by_side.py`` (with its ``--cadence``), and the best of ``--repeat``
turns of each is compared.

Run from the repository root::

    python benchmarks/numba_vs_c.py                      # all 60 cells
    python benchmarks/numba_vs_c.py --ops softmax --dtypes float64 --shapes 1048576x10

Prints one line per cell and a summary; exits with status 1 when a ratio is
above ``--limit`` (default 1.25).
"""

import argparse
import itertools
import statistics
import sys

from benchmarks import common
from benchmarks.implementations import OPERATIONS, best_output, prepare
from side_by_side import CADENCES, best_seconds  # the script beside this one

SIDES = ("c", "numba-parallel")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", nargs="+", choices=OPERATIONS, default=OPERATIONS)
    parser.add_argument("--shapes", nargs="+", choices=common.SHAPES, default=common.SHAPES)
    parser.add_argument("--dtypes", nargs="+", choices=common.DTYPES, default=common.DTYPES)
    parser.add_argument("--repeat", type=int, default=15, help="turns per side and cell")
    parser.add_argument("--cadence", choices=CADENCES, default="cold", help="see side_by_side.py")
    parser.add_argument("--limit", type=float, default=1.25, help="largest acceptable ratio")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    ratios = []
    # Shapes outermost: the cached inputs of one shape serve every op and dtype.
    for shape, dtype, op in itertools.product(args.shapes, args.dtypes, args.ops):
        size = common.shape_of(shape)
        calls = {side: prepare(op, side, size, dtype, best_output(op, side)) for side in SIDES}
        best = best_seconds(calls, args.repeat, args.cadence)
        ratio = best["numba-parallel"] / best["c"]
        ratios.append(ratio)
        print(
            f"{op:18s} {shape:11s} {dtype:8s} c {best['c'] * 1e3:8.3f} ms  "
            f"numba-parallel {best['numba-parallel'] * 1e3:8.3f} ms  ratio {ratio:.2f}",
            flush=True,
        )
    over = sum(r > args.limit for r in ratios)
    print(
        f"\n{len(ratios)} cells, {common.threads()} threads, {args.cadence} cadence: median ratio "
        f"{statistics.median(ratios):.2f}, largest {max(ratios):.2f}, "
        f"{over} above {args.limit}"
    )
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
