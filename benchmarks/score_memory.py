"""Peak memory of ``fastsoftmax score`` on a large file: it must stay bounded.

Writes a float32 .npy file of logits (800 MB by default) into a temporary
directory, scores it with every ``--op`` in a fresh ``fastsoftmax score``
process each, and reports each process's peak resident memory (``ru_maxrss``
from ``wait4``, which counts the pages of memory-mapped files too), wall time
and throughput. Exits with status 1 when any run fails or peaks above the limit
(400 MB by default).

Usage::

    python benchmarks/score_memory.py [--mb 800] [--classes 1000] [--limit-mb 400]

Linux only (``ru_maxrss`` is in KiB there).
"""

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

OPS = ("softmax", "log_softmax", "logsumexp", "topk")
TOPK = 5


def write_logits(path, rows, classes, fortran_order=False, chunk_bytes=4 * 2**20, seed=0):
    """A float32 (rows, classes) .npy file of random logits, written a chunk at a time.

    Plain writes, not a memory map: this process must stay small, because a
    child's peak RSS starts from its parent's peak at the time of the spawn. In
    Fortran order the file holds the columns one after another.
    """
    rng = np.random.default_rng(seed)
    header = {"descr": "<f4", "fortran_order": fortran_order, "shape": (rows, classes)}
    lines, width = (classes, rows) if fortran_order else (rows, classes)
    chunk_lines = max(1, chunk_bytes // (4 * width))
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        for start in range(0, lines, chunk_lines):
            count = min(chunk_lines, lines - start)
            file.write((rng.standard_normal((count, width), dtype=np.float32) * 4).tobytes())


def measure(command):
    """``(exit status, peak RSS in MB, wall seconds)`` of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss * 1024 / 1e6, time.perf_counter() - start


def score_command(op, source, output, indices, backend):
    command = [
        sys.executable,
        "-m",
        "fastsoftmax",
        "score",
        source,
        "-o",
        output,
        "--op",
        op,
        "--backend",
        backend,
        "--quiet",
    ]
    if op == "topk":
        command += ["--k", str(TOPK), "--indices", indices]
    return command


def output_bytes(op, rows, classes):
    if op == "logsumexp":
        return rows * 4
    if op == "topk":
        return rows * TOPK * (4 + 8)
    return rows * classes * 4


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=800, help="input size in MB (default 800)")
    parser.add_argument("--classes", type=int, default=1000, help="row length (default 1000)")
    parser.add_argument("--limit-mb", type=float, default=400, help="peak RSS bound (400)")
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated --op values")
    parser.add_argument("--backend", default="auto", help="--backend for score (auto)")
    parser.add_argument("--fortran", action="store_true", help="a Fortran-ordered input file")
    parser.add_argument("--dir", help="where to put the files (default: the temp directory)")
    args = parser.parse_args(argv)

    rows = int(args.mb * 1e6 / (args.classes * 4))
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        source = os.path.join(work, "logits.npy")
        write_logits(source, rows, args.classes, fortran_order=args.fortran)
        input_bytes = os.path.getsize(source)
        order = "Fortran" if args.fortran else "C"
        print(
            f"input: {rows} x {args.classes} float32 in {order} order, {input_bytes / 1e6:.0f} MB; "
            f"backend {args.backend}; limit {args.limit_mb:.0f} MB"
        )

        status, baseline, _ = measure(
            [sys.executable, "-c", "import fastsoftmax, fastsoftmax.cli; fastsoftmax.backends()"]
        )
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6
        print(
            f"baseline (interpreter and imports, no work): {baseline:.0f} MB peak RSS; "
            f"this script: {own:.0f} MB\n"
        )
        print(f"{'op':<12} {'peak RSS MB':>12} {'wall s':>8} {'GB/s':>6}  verdict")

        failed = status != 0
        for op in args.ops.split(","):
            output = os.path.join(work, "out.npy")
            indices = os.path.join(work, "indices.npy")
            command = score_command(op, source, output, indices, args.backend)
            status, peak, wall = measure(command)
            moved = input_bytes + output_bytes(op, rows, args.classes)
            ok = status == 0 and peak <= args.limit_mb
            verdict = "ok" if ok else (f"exit status {status}" if status else "over the limit")
            print(f"{op:<12} {peak:>12.0f} {wall:>8.2f} {moved / wall / 1e9:>6.2f}  {verdict}")
            failed |= not ok
            for path in (output, indices):
                if os.path.exists(path):
                    os.unlink(path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
