"""Implementations timed side by side, turn by turn: times, GB/s and speedups.

A sequential table (``gb_table.py``) measures one implementation after the
other and, on a shared machine, its cells move by 20-30 % between runs: the
load of the neighbours changes in the meantime. Here the implementations of a
cell take turns, and the best of ``--repeat`` turns of each is kept: whatever
slows the machine down slows every side alike, and the best time is the one
least disturbed. The calls are the asv suite's own
(``benchmarks.implementations``), with ``out=`` where taken. Two cadences:

- ``cold`` (the default): a turn is a pause (so the other side's idle OpenMP
  threads stop spinning), an untimed call and one timed call: a burst of work
  after idle time.
- ``steady``: a turn is an untimed call and ``STEADY_CALLS`` timed calls back
  to back, timed by their median, as asv times a benchmark: throughput under
  a stream of calls. On a virtual machine whose cores the host takes back
  when idle the two can differ by 2x: the first few milliseconds after a
  pause run slower, for some implementations more than others.

The first implementation named is the reference: every other one gets its
speedup over it (reference time / its time). Run from the repository root::

    python benchmarks/side_by_side.py --impls torch c numba-parallel \\
        --ops softmax log_softmax --dtypes float32
"""

import argparse
import itertools
import statistics
import sys
import time

from benchmarks import common
from benchmarks.implementations import OPERATIONS, best_output, prepare

PAUSE_SECONDS = 0.05
STEADY_CALLS = 5
CADENCES = ("cold", "steady")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--impls",
        nargs="+",
        choices=common.IMPLEMENTATIONS,
        default=["torch", "c", "numba-parallel"],
        help="the first is the reference of the speedups",
    )
    parser.add_argument("--ops", nargs="+", choices=OPERATIONS, default=OPERATIONS)
    parser.add_argument("--shapes", nargs="+", choices=common.SHAPES, default=common.SHAPES)
    parser.add_argument("--dtypes", nargs="+", choices=common.DTYPES, default=common.DTYPES)
    parser.add_argument("--repeat", type=int, default=15, help="turns per side and cell")
    parser.add_argument(
        "--cadence", choices=CADENCES, default="cold", help="what a turn is (see the module doc)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if len(set(args.impls)) < 2:
        parser.error("--impls needs two different implementations at least")
    return args


def _turn_seconds(call, cadence):
    """The time of one turn of `call` (see the module doc)."""
    if cadence == "cold":
        time.sleep(PAUSE_SECONDS)
    call()
    times = []
    for _ in range(1 if cadence == "cold" else STEADY_CALLS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def best_seconds(calls, repeat, cadence="cold"):
    """Best turn of each call in `calls` (a dict), the calls taking `repeat` turns each."""
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeat):
        for side, call in calls.items():
            best[side] = min(best[side], _turn_seconds(call, cadence))
    return best


def main(argv=None):
    args = parse_args(argv)
    reference, others = args.impls[0], args.impls[1:]
    speedups = {impl: [] for impl in others}
    # Shapes outermost: the cached inputs of one shape serve every op and dtype.
    for shape, dtype, op in itertools.product(args.shapes, args.dtypes, args.ops):
        size = common.shape_of(shape)
        calls, skipped = {}, []
        for impl in args.impls:
            try:
                calls[impl] = prepare(op, impl, size, dtype, best_output(op, impl))
            except NotImplementedError:
                skipped.append(impl)
        if reference not in calls:
            print(f"{op:18s} {shape:11s} {dtype:8s} {reference} n/a", flush=True)
            continue
        best = best_seconds(calls, args.repeat, args.cadence)
        cells = []
        for impl, seconds in best.items():
            gbps = common.gigabytes_per_second(op, size, dtype, seconds)
            cell = f"{impl} {seconds * 1e3:8.3f} ms {gbps:6.2f} GB/s"
            if impl != reference:
                speedup = best[reference] / seconds
                speedups[impl].append(speedup)
                cell += f" x{speedup:.2f}"
            cells.append(cell)
        cells += [f"{impl} n/a" for impl in skipped]
        print(f"{op:18s} {shape:11s} {dtype:8s} " + " | ".join(cells), flush=True)
    print(f"\n{common.threads()} threads, {args.cadence} cadence; speedup over {reference}:")
    for impl, values in speedups.items():
        if values:
            print(
                f"  {impl}: {len(values)} cells, median x{statistics.median(values):.2f}, "
                f"smallest x{min(values):.2f}, largest x{max(values):.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
