"""``fastsoftmax score``: probabilities or top-k predictions for a .npy file of logits.

The input is memory-mapped and scored a batch of rows at a time straight into
memory-mapped outputs (the library's ``out=``), releasing the pages of each
batch once done, so resident memory stays near one batch whatever the file's
size.
"""

import argparse
import contextlib
import functools
import signal
import sys
import threading

import numpy as np

import fastsoftmax

from .. import _checks, _dispatch
from . import npyfiles
from ._arguments import positive_int
from ._errors import CommandError
from .progress import Progress

OPS = ("softmax", "log_softmax", "logsumexp", "topk")
OUTPUT_DTYPES = ("float16", "float32", "float64")

# A batch holds about this many bytes of its wider side (input or output rows):
# large enough that per-batch overhead vanishes next to the work, small enough
# that resident memory stays far below the files' sizes.
BATCH_BYTES = 32 * 2**20

DESCRIPTION = """\
Score a 2-D .npy file of logits (rows, classes), the class axis last, in
bounded memory. softmax and log_softmax write an array of the input's shape,
logsumexp one value per row, topk the k largest probabilities per row to -o
and their class indices (int64) to --indices. The output dtype is --dtype, else
the input's float dtype (float64 for integer input). Outputs are written under
a temporary name and renamed when complete.
"""


def _temperature(text):
    try:
        value = float(text)
        _checks.inverse_temperature(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def add_parser(commands):
    """Register ``score`` and its options."""
    parser = commands.add_parser(
        "score", help="score a .npy file of logits", description=DESCRIPTION
    )
    parser.add_argument(
        "input", metavar="INPUT.npy", help="2-D .npy file of logits (rows, classes)"
    )
    parser.add_argument(
        "-o", "--output", metavar="OUTPUT.npy", required=True, help="the .npy file to write"
    )
    parser.add_argument("--op", choices=OPS, default="softmax", help="default: softmax")
    parser.add_argument(
        "--k", type=positive_int, help="how many classes --op topk keeps (1..classes)"
    )
    parser.add_argument(
        "--indices",
        metavar="IDX.npy",
        help="the .npy file for the class indices of --op topk (required there)",
    )
    parser.add_argument(
        "--temperature",
        metavar="T",
        type=_temperature,
        help="divide the logits by T > 0 (default 1)",
    )
    parser.add_argument(
        "--batch-rows",
        metavar="N",
        type=positive_int,
        help=f"rows per batch (default: about {BATCH_BYTES // 2**20} MiB of data)",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", *_dispatch.BACKEND_NAMES),
        default="auto",
        help="default: auto, chosen once for the whole file",
    )
    parser.add_argument("--dtype", choices=OUTPUT_DTYPES, help="floating dtype of the result")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.set_defaults(run=run)


def _check_op_options(args):
    """Options that belong to one op are refused with the others."""
    if args.op == "topk":
        if args.k is None:
            raise CommandError("--op topk needs --k")
        if args.indices is None:
            raise CommandError("--op topk needs --indices FILE.npy for the class indices")
        return
    for given, option in ((args.k, "--k"), (args.indices, "--indices")):
        if given is not None:
            raise CommandError(f"{option} applies only to --op topk")
    if args.op == "logsumexp" and args.temperature is not None:
        raise CommandError("--temperature does not apply to --op logsumexp")


def _outputs(args, rows, classes, dtype):
    """What the op writes: one OutputSpec per file."""
    if args.op == "topk":
        if args.k > classes:
            raise CommandError(
                f"--k must be between 1 and the number of classes ({classes}), got {args.k}"
            )
        return [
            npyfiles.OutputSpec(args.output, (rows, args.k), dtype),
            npyfiles.OutputSpec(args.indices, (rows, args.k), np.dtype(np.int64)),
        ]
    shape = (rows,) if args.op == "logsumexp" else (rows, classes)
    return [npyfiles.OutputSpec(args.output, shape, dtype)]


def _topk(logits, probs_out, index_out, *, k, temperature, backend, dtype):
    """softmax_topk into preallocated outputs, computed as softmax(dtype=dtype) would be.

    ``softmax_topk`` has no ``dtype=``: logits are cast to the compute dtype of
    `dtype` first when it differs from their own, so float16 results come from
    float32 arithmetic and float64 results from float64 arithmetic.
    """
    compute = _checks.compute_dtype(dtype)
    if _checks.compute_dtype(_checks.result_dtype(logits.dtype)) != compute:
        logits = logits.astype(compute)
    probs, indices = fastsoftmax.softmax_topk(logits, k, temperature=temperature, backend=backend)
    np.copyto(probs_out, probs, casting="same_kind")
    np.copyto(index_out, indices)


def _batch_function(args, dtype, backend):
    """``compute(logits_batch, *output_batches)`` for the chosen op."""
    temperature = 1.0 if args.temperature is None else args.temperature
    if args.op == "topk":
        return functools.partial(
            _topk, k=args.k, temperature=temperature, backend=backend, dtype=dtype
        )
    if args.op == "logsumexp":
        return lambda x, out: fastsoftmax.logsumexp(x, out=out, dtype=dtype, backend=backend)
    op = getattr(fastsoftmax, args.op)
    return lambda x, out: op(x, temperature=temperature, out=out, dtype=dtype, backend=backend)


def _row_bytes(spec):
    return spec.dtype.itemsize * int(np.prod(spec.shape[1:]))


def default_batch_rows(specs, input_row_bytes):
    """Rows per batch so that the wider of input and output rows fill about BATCH_BYTES."""
    widest = max(input_row_bytes, *(_row_bytes(spec) for spec in specs), 1)
    return max(1, BATCH_BYTES // widest)


@contextlib.contextmanager
def _sigterm_as_exit():
    """Turn SIGTERM into SystemExit(143) so that temporary outputs get removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args):
    """Score ``args.input`` into ``args.output`` (and ``args.indices``); returns 0."""
    _check_op_options(args)
    with npyfiles.LogitsFile(args.input) as logits:
        rows, classes = logits.shape
        dtype = _checks.result_dtype(logits.dtype, args.dtype)
        specs = _outputs(args, rows, classes, dtype)
        npyfiles.check_targets(specs, args.overwrite)
        try:
            # Resolved once, so every batch runs on the backend the whole file would get.
            backend = _dispatch.choose(args.backend, logits.size)
        except (ValueError, RuntimeError) as exc:
            raise CommandError(str(exc)) from None
        input_row_bytes = classes * logits.dtype.itemsize
        progress = Progress(
            args.op,
            rows,
            input_row_bytes + sum(_row_bytes(spec) for spec in specs),
            sys.stderr,
            enabled=not args.quiet and sys.stderr.isatty(),
        )
        try:
            _score(
                logits,
                specs,
                _batch_function(args, dtype, backend),
                args.batch_rows or default_batch_rows(specs, input_row_bytes),
                progress,
            )
        except BaseException:
            progress.abandon()
            raise
    progress.finish(rows)
    return 0


def _score(logits, specs, compute, batch_rows, progress):
    """Compute every batch into new files, then rename them into place."""
    rows = logits.shape[0]
    with _sigterm_as_exit(), npyfiles.NewFiles(specs) as files:
        for start in range(0, rows, batch_rows):
            stop = min(start + batch_rows, rows)
            try:
                compute(logits.rows(start, stop), *(a[start:stop] for a in files.arrays))
            except (TypeError, ValueError, RuntimeError) as exc:
                raise CommandError(str(exc)) from None
            logits.release()
            npyfiles.release_pages(*files.arrays)
            progress.update(stop)
        files.commit()
