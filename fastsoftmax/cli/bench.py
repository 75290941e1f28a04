"""``fastsoftmax bench``: every available backend against NumPy, SciPy and PyTorch.

For each op and shape, every contender runs once or twice to compile and warm
up, then all of them run in turns (one call each per round, so that noise from
other processes hits everyone alike) and the median time per call is reported
with its bandwidth (bytes read and written once / time) and, for the backends,
the ratio of the best peer's time to theirs.
"""

import argparse
import importlib.util
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

import fastsoftmax

from .. import _dispatch
from . import contenders
from ._arguments import positive_int
from ._errors import CommandError

SHAPES = ((1048576, 10), (65536, 128), (16384, 1000), (1024, 32000), (64, 256000))
QUICK_SHAPES = ((262144, 10), (8192, 1000), (64, 32000))
DEFAULT_OPS = ("softmax", "cross_entropy")

# Seconds of timed calls per op and shape (all contenders together), and the
# bounds on the number of rounds that budget buys.
BUDGET_SECONDS = {"quick": 0.25, "full": 1.5}
MIN_ROUNDS = {"quick": 3, "full": 5}
MAX_ROUNDS = 200
WARMUP_CALLS = 2


@dataclass(frozen=True)
class Result:
    """The outcome of one contender on one op and shape."""

    op: str
    shape: tuple
    name: str
    ours: bool
    seconds: float  # median per call; NaN when it failed
    bytes: int
    error: str = ""

    @property
    def gb_per_s(self):
        return self.bytes / self.seconds / 1e9


def _shapes(text):
    shapes = []
    for item in text.split(","):
        rows, _, classes = item.strip().lower().partition("x")
        try:
            shape = (int(rows), int(classes))
        except ValueError:
            shape = (0, 0)
        if min(shape) < 1:
            raise argparse.ArgumentTypeError(
                f"expected shapes like 1024x1000,64x32000, got {item.strip()!r}"
            )
        shapes.append(shape)
    return tuple(shapes)


def _names(choices):
    def parse(text):
        names = tuple(name.strip() for name in text.split(",") if name.strip())
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"unknown name {', '.join(unknown) or repr(text)}; choose from {', '.join(choices)}"
            )
        return names

    return parse


def add_parser(commands):
    """Register ``bench`` and its options."""
    shapes = ",".join(f"{r}x{c}" for r, c in SHAPES)
    quick = ",".join(f"{r}x{c}" for r, c in QUICK_SHAPES)
    parser = commands.add_parser(
        "bench",
        help="time every backend against NumPy, SciPy and PyTorch",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    parser.add_argument("--quick", action="store_true", help=f"shapes {quick} and fewer rounds")
    parser.add_argument("--shapes", type=_shapes, help=f"ROWSxCLASSES,... (default {shapes})")
    parser.add_argument(
        "--ops",
        type=_names(contenders.OPS),
        default=DEFAULT_OPS,
        help=f"comma-separated, from {', '.join(contenders.OPS)} (default softmax,cross_entropy)",
    )
    parser.add_argument(
        "--backends",
        type=_names(_dispatch.BACKEND_NAMES),
        help="comma-separated fastsoftmax backends (default: every available one)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads for fastsoftmax and torch (default: every CPU this process may use)",
    )
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw a bar chart of GB/s")
    parser.set_defaults(run=run)


def _our_backends(requested):
    """Available backends to time (all by default) and ``{name: why skipped}``."""
    info = fastsoftmax.backends()
    names = requested or tuple(info)
    chosen, skipped = [], {}
    for name in names:
        if not info[name].available:
            skipped[name] = info[name].reason
        elif name == "cuda" and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
            skipped[name] = "the CUDA simulator is not worth timing"
        else:
            chosen.append(name)
    if requested and not chosen:
        raise CommandError(f"none of the backends {', '.join(requested)} is available here")
    return chosen, skipped


def _check_plot_target(path):
    if importlib.util.find_spec("matplotlib") is None:
        raise CommandError(
            "--plot needs matplotlib, which is not installed (pip install matplotlib)"
        )
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise CommandError(f"--plot: directory does not exist: {directory}")


def _set_threads(threads):
    """The same thread count for fastsoftmax and (when it is a peer) PyTorch."""
    fastsoftmax.set_num_threads(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape, dtype=np.float32) * 4).astype(dtype, copy=False)
    target = rng.integers(0, shape[1], size=shape[0], dtype=np.int64)
    return x, target


def _prepare(contender, op, x, target):
    """``(call, error)``: a warmed-up call, or None and why it failed."""
    try:
        call = contender.prepare(op, x, target)
        if call is None:
            return None, ""
        for _ in range(WARMUP_CALLS):
            call()
    except Exception as exc:  # one failing contender must not stop the others
        return None, f"{type(exc).__name__}: {exc}"
    return call, ""


def _time_case(op, shape, dtype, field, mode):
    """Results of every contender in `field` on one op and shape, timed in turns."""
    x, target = _data(shape, dtype)
    moved = contenders.bytes_moved(op, x, target)
    calls, results = {}, []
    for contender in field:
        start = time.perf_counter()
        call, error = _prepare(contender, op, x, target)
        if call is not None:
            calls[contender] = (call, (time.perf_counter() - start) / WARMUP_CALLS)
        elif error:
            results.append(
                Result(op, shape, contender.name, contender.ours, math.nan, moved, error)
            )
    if not calls:
        return results
    # The warm-up (which may include a compile) overestimates a call; fine for a budget.
    per_round = sum(estimate for _, estimate in calls.values())
    rounds = int(BUDGET_SECONDS[mode] / max(per_round, 1e-9))
    rounds = min(max(rounds, MIN_ROUNDS[mode]), MAX_ROUNDS)
    times = {contender: [] for contender in calls}
    for _ in range(rounds):
        for contender, (call, _) in calls.items():
            start = time.perf_counter()
            call()
            times[contender].append(time.perf_counter() - start)
    for contender, samples in times.items():
        median = statistics.median(samples)
        results.append(Result(op, shape, contender.name, contender.ours, median, moved))
    return results


def _format_table(results):
    """The results as aligned text: one line per contender, ours first, then peers."""
    header = ("op", "shape", "implementation", "ms", "GB/s", "vs best peer")
    lines = []
    cases = dict.fromkeys((r.op, r.shape) for r in results)
    for op, shape in cases:
        case = [r for r in results if (r.op, r.shape) == (op, shape)]
        peer_times = [r.seconds for r in case if not r.ours and not r.error]
        best_peer = min(peer_times) if peer_times else math.nan
        for r in sorted(case, key=lambda r: not r.ours):
            label = (f"{op}", f"{shape[0]}x{shape[1]}", r.name if r.ours else f"{r.name} (peer)")
            if r.error:
                lines.append((*label, "failed", "", ""))
                continue
            ratio = f"{best_peer / r.seconds:.2f}x" if r.ours and peer_times else ""
            lines.append((*label, f"{r.seconds * 1e3:.3f}", f"{r.gb_per_s:.2f}", ratio))
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    text = []
    for row in [header, *lines]:
        cells = [
            cell.ljust(width) if i < 3 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths))
        ]
        text.append("  ".join(cells).rstrip())
    return "\n".join(text)


def run(args):
    """Time, print the table (and draw the chart); 0, or 1 when a backend failed."""
    if args.plot:
        _check_plot_target(args.plot)
    mode = "quick" if args.quick else "full"
    shapes = args.shapes or (QUICK_SHAPES if args.quick else SHAPES)
    threads = args.threads or fastsoftmax.get_num_threads()
    backends, skipped = _our_backends(args.backends)
    peers, missing = contenders.peers(contenders.PEERS)
    _set_threads(threads)

    versions = ", ".join(f"{p.name} {contenders.peer_version(p.name)}" for p in peers)
    print(
        f"fastsoftmax {fastsoftmax.__version__} bench: {args.dtype}, threads: {threads} "
        "(fastsoftmax and torch), median ms per call after a warm-up"
    )
    print("backends write into preallocated outputs (out=, grad_out=); peers allocate theirs")
    print(f"peers: {versions}")
    for name, why in {**skipped, **missing}.items():
        print(f"skipped {name}: {why}")
    print(flush=True)

    field = contenders.ours(backends) + peers
    results = []
    for op in args.ops:
        for shape in shapes:
            results.extend(_time_case(op, shape, np.dtype(args.dtype), field, mode))
    print(_format_table(results))
    failures = [r for r in results if r.error]
    for r in failures:
        print(f"{r.name} failed on {r.op} {r.shape[0]}x{r.shape[1]}: {r.error}", file=sys.stderr)

    if args.plot:
        from .plot import bar_chart

        title = f"fastsoftmax {fastsoftmax.__version__}: {args.dtype}, threads: {threads}"
        bar_chart([r for r in results if not r.error], args.plot, title)
        print(f"\nchart written to {args.plot}")
    return 1 if any(r.ours for r in failures) else 0
