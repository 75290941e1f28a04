"""GPU bandwidth of the cuda backend against PyTorch CUDA and a device-to-device copy.

Run on a machine with an NVIDIA GPU::

    python benchmarks/gpu_bench.py                  # the full table (needs ~40 GiB)
    python benchmarks/gpu_bench.py --rows 4096      # smaller GPUs

For each shape (rows x classes, float32) it times, with CUDA events around a
batch of back-to-back calls:

* ``copy``: a device-to-device copy of the input (the bandwidth ceiling);
* ``softmax`` and ``log_softmax``: fastsoftmax (``out=`` preallocated) and
  ``torch.softmax`` / ``torch.log_softmax``;
* ``cross_entropy``: the loss (mean over rows) and its gradient, fastsoftmax's
  one fused call (``grad_out=`` preallocated) against PyTorch's forward and
  backward (``F.cross_entropy`` then ``backward()``).

GB/s counts the bytes that must move: the input read once and the result
written once (the int64 targets for cross_entropy), the same for every
implementation, so the columns compare times. The printed table (Markdown)
gives GB/s, the fraction of the copy's bandwidth and the speed-up over
PyTorch, and marks the targets: softmax at >= 85% of the copy and >= 1.0x
PyTorch; cross_entropy >= 2x PyTorch's forward + backward.

Exits with status 2 and says why when there is no usable GPU (the CUDA
simulator gives meaningless timings and is refused).
"""

import argparse
import json
import os
import statistics
import sys

DEFAULT_COLS = (1024, 8192, 32768, 131072)
OPS = ("softmax", "log_softmax", "cross_entropy")
TARGET_COPY_FRACTION = 0.85
TARGET_SPEEDUP = {"softmax": 1.0, "log_softmax": 1.0, "cross_entropy": 2.0}


def fail(message):
    print(f"gpu_bench: {message}", file=sys.stderr)
    raise SystemExit(2)


def require_gpu():
    """Import Numba CUDA and fastsoftmax's cuda backend, or exit saying why."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        fail("NUMBA_ENABLE_CUDASIM is set: the CUDA simulator cannot be benchmarked; unset it")
    import fastsoftmax

    info = fastsoftmax.backends()["cuda"]
    if not info.available:
        fail(f"the cuda backend is not available: {info.reason}")
    from numba import cuda

    return fastsoftmax, cuda


def load_torch():
    """PyTorch with CUDA, or None (its columns are then left out)."""
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


class Timer:
    """Seconds per call of a function, from CUDA events around batches of calls."""

    def __init__(self, cuda, repeat, min_batch_seconds=0.05):
        self.cuda = cuda
        self.repeat = repeat
        self.min_batch_seconds = min_batch_seconds

    def _batch(self, fn, calls):
        start, stop = self.cuda.event(), self.cuda.event()
        start.record()
        for _ in range(calls):
            fn()
        stop.record()
        stop.synchronize()
        return self.cuda.event_elapsed_time(start, stop) / 1e3 / calls

    def __call__(self, fn):
        for _ in range(2):  # compile, allocate, warm the caches
            fn()
        self.cuda.synchronize()
        estimate = self._batch(fn, 3)
        calls = max(3, int(self.min_batch_seconds / max(estimate, 1e-7)))
        return statistics.median(self._batch(fn, calls) for _ in range(self.repeat))


def bench_shape(fastsoftmax, cuda, torch, timer, rows, cols, ops):
    """{(op, implementation): seconds per call} for one shape."""
    import numpy as np

    rng = np.random.default_rng(0)
    times = {}
    x = cuda.to_device(rng.standard_normal((rows, cols), dtype=np.float32) * 4)
    out = cuda.device_array_like(x)
    times["copy", "copy"] = timer(lambda: out.copy_to_device(x))
    xt = torch.as_tensor(x, device="cuda") if torch is not None else None

    for op in ("softmax", "log_softmax"):
        if op not in ops:
            continue
        ours = getattr(fastsoftmax, op)
        times[op, "fastsoftmax"] = timer(lambda: ours(x, out=out))
        if torch is not None:
            theirs = getattr(torch, op)
            times[op, "torch"] = timer(lambda: theirs(xt, dim=-1))

    if "cross_entropy" in ops:
        target = cuda.to_device(rng.integers(0, cols, size=rows))
        times["cross_entropy", "fastsoftmax"] = timer(
            lambda: fastsoftmax.cross_entropy(x, target, return_grad=True, grad_out=out)
        )
        if torch is not None:
            logits = xt.detach().clone().requires_grad_(True)
            target_t = torch.as_tensor(target, device="cuda")

            def torch_forward_backward():
                logits.grad = None
                torch.nn.functional.cross_entropy(logits, target_t).backward()

            times["cross_entropy", "torch"] = timer(torch_forward_backward)
            del logits
    del x, out, xt
    if torch is not None:
        torch.cuda.empty_cache()
    return times


def moved_bytes(op, rows, cols):
    """Bytes read once plus bytes written once (float32; int64 targets)."""
    elements = rows * cols * 4 * 2
    return elements + (rows * 8 if op == "cross_entropy" else 0)


def table(results, rows, ops):
    """Markdown table: GB/s, fraction of the copy, speed-up over PyTorch, target met."""
    lines = [
        "| op | shape | fastsoftmax GB/s | torch GB/s | copy GB/s | vs copy | vs torch | target |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for op in ops:
        for cols, times in results.items():
            ours = times.get((op, "fastsoftmax"))
            if ours is None:
                continue
            theirs = times.get((op, "torch"))
            copy = times["copy", "copy"]
            nbytes = moved_bytes(op, rows, cols)
            vs_copy = copy / ours * moved_bytes(op, rows, cols) / moved_bytes("copy", rows, cols)
            speedup = theirs / ours if theirs else None
            met = speedup is None or speedup >= TARGET_SPEEDUP[op]
            if op != "cross_entropy":
                met = met and vs_copy >= TARGET_COPY_FRACTION
            verdict = "met" if met else "MISSED"
            if speedup is None:
                verdict += " (no torch)"
            lines.append(
                f"| {op} | {rows}x{cols} | {nbytes / ours / 1e9:.0f} | "
                f"{'' if theirs is None else f'{nbytes / theirs / 1e9:.0f}'} | "
                f"{moved_bytes('copy', rows, cols) / copy / 1e9:.0f} | {vs_copy:.0%} | "
                f"{'' if speedup is None else f'{speedup:.2f}x'} | {verdict} |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=16384)
    parser.add_argument("--cols", type=int, nargs="+", default=list(DEFAULT_COLS))
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--repeat", type=int, default=7, help="timed batches per measurement")
    parser.add_argument("--json", help="also write the raw seconds per call to this file")
    args = parser.parse_args(argv)

    fastsoftmax, cuda = require_gpu()
    torch = load_torch()
    device = cuda.get_current_device()
    print(f"# {device.name.decode() if isinstance(device.name, bytes) else device.name}, "
          f"fastsoftmax {fastsoftmax.__version__}, torch {torch.__version__ if torch else 'absent'}")
    timer = Timer(cuda, args.repeat)
    results = {}
    for cols in args.cols:
        results[cols] = bench_shape(fastsoftmax, cuda, torch, timer, args.rows, cols, args.ops)
        print(f"# {args.rows}x{cols} done", file=sys.stderr, flush=True)
    print(table(results, args.rows, args.ops))
    if args.json:
        raw = {str(c): {f"{op}/{impl}": s for (op, impl), s in t.items()} for c, t in results.items()}
        with open(args.json, "w") as f:
            json.dump({"rows": args.rows, "seconds_per_call": raw}, f, indent=1)


if __name__ == "__main__":
    main()
