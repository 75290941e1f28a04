"""Print effective GB/s of every implementation per shape as Markdown tables.

The same measurement as the asv ``track_gbps`` benchmark (bench_bandwidth.py),
run directly in one process without asv: one table per operation and dtype,
implementations as rows, shapes as columns. Cells read "n/a" where an
implementation cannot run here (not installed, not built, or lacking the
operation); the reason is listed under the table. Each table ends with the
copy bandwidth of the same shape (the input copied into a preallocated array
by as many threads as the benchmarks use), the floor no implementation can go
below, and each implementation's fraction of it.

Run from anywhere, e.g.::

    python benchmarks/gb_table.py --ops softmax cross_entropy --dtypes float32
"""

import argparse
import concurrent.futures
import itertools
import json
import os
import platform
import sys

import numpy as np

from benchmarks import common
from benchmarks.implementations import OPERATIONS, best_output, measure_gbps, prepare


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", nargs="+", choices=OPERATIONS, default=OPERATIONS)
    parser.add_argument("--shapes", nargs="+", choices=common.SHAPES, default=common.SHAPES)
    parser.add_argument("--dtypes", nargs="+", choices=common.DTYPES, default=common.DTYPES)
    parser.add_argument(
        "--impls", nargs="+", choices=common.IMPLEMENTATIONS, default=common.IMPLEMENTATIONS
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed calls per cell; the median is used"
    )
    parser.add_argument(
        "--json", metavar="FILE", help="also write every cell to FILE, for ratios and plots"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def copy_gbps(shape, dtype, n_threads, repeat):
    """GB/s of copying a (rows, classes) array into another, rows split over threads.

    Counts the bytes read and written, as the operations' figures do.
    """
    source = common.logits(shape, dtype)
    target = np.empty_like(source)
    bounds = np.linspace(0, shape[0], n_threads + 1).astype(int)
    parts = [(target[a:b], source[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    with concurrent.futures.ThreadPoolExecutor(n_threads) as pool:

        def call():  # np.copyto releases the GIL
            list(pool.map(lambda part: np.copyto(*part), parts))

        call()
        seconds = common.median_seconds(call, repeat)
    return 2 * source.nbytes / seconds / 1e9


def measure(args):
    """``{(op, dtype, impl, shape): GB/s or the reason it was skipped}``."""
    cells = {}
    # Shapes outermost: the cached inputs of one shape serve every op and impl.
    for shape, dtype, op, impl in itertools.product(
        args.shapes, args.dtypes, args.ops, args.impls
    ):
        size = common.shape_of(shape)
        try:
            call = prepare(op, impl, size, dtype, best_output(op, impl))
        except NotImplementedError as exc:
            cells[op, dtype, impl, shape] = str(exc)
            continue
        cells[op, dtype, impl, shape] = measure_gbps(call, op, size, dtype, args.repeat)
        print(f"measured {op} {dtype} {impl} {shape}", file=sys.stderr)
    for shape, dtype in itertools.product(args.shapes, args.dtypes):
        copy = copy_gbps(common.shape_of(shape), dtype, common.threads(), args.repeat)
        cells["copy", dtype, shape] = copy
    return cells


def markdown(args, cells):
    lines = [
        f"Effective GB/s (bytes read once + written once, over the median of "
        f"{args.repeat} calls) and, in brackets, the fraction of the copy bandwidth; "
        f"{common.threads()} threads; "
        f"{platform.machine()}, {os.cpu_count()} CPUs.",
        "",
    ]
    for op in args.ops:
        for dtype in args.dtypes:
            lines += [f"### {op}, {dtype}", ""]
            lines.append("| implementation | " + " | ".join(args.shapes) + " |")
            lines.append("|---|" + "---:|" * len(args.shapes))
            copies = [cells["copy", dtype, shape] for shape in args.shapes]
            for impl in args.impls:
                values = [cells[op, dtype, impl, shape] for shape in args.shapes]
                row = [
                    "n/a" if isinstance(v, str) else f"{v:.2f} ({v / copy:.0%})"
                    for v, copy in zip(values, copies)
                ]
                lines.append(f"| {impl} | " + " | ".join(row) + " |")
            lines.append("| memory copy | " + " | ".join(f"{c:.2f}" for c in copies) + " |")
            lines.append("")
    skipped = sorted(
        {(key[2], value) for key, value in cells.items() if isinstance(value, str)}
    )
    if skipped:
        lines += ["n/a:", ""] + [f"- {impl}: {reason}" for impl, reason in skipped]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    cells = measure(args)
    print(markdown(args, cells))
    if args.json:
        records = [
            {"key": list(key), "value": value} for key, value in cells.items()
        ]
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main()
