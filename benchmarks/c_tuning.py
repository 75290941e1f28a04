"""Speed of the C backend against PyTorch on the CPU, side by side in one process.

Run ``python benchmarks/c_tuning.py`` (``--quick`` for fewer repeats,
``--threads N`` to change the thread count of both sides, ``--cases`` to pick
some). For each case it reports the median time per call of the C backend and
of the PyTorch peer, their ratio, and the C backend's speed in GB/s counting
the bytes that must move (input read once, output written once) as a fraction
of the ``np.copyto`` bandwidth measured in the same run.

The two sides alternate in short blocks so that both see the same machine
load; a pause between blocks lets idle OpenMP threads of PyTorch stop spinning
before the C backend is timed.
"""

import argparse
import statistics
import time

import numpy as np

import fastsoftmax

SHAPES = {
    "softmax": [(65536, 128), (16384, 1000), (1024, 32000), (64, 256000), (1048576, 10)],
    "log_softmax": [(65536, 128), (16384, 1000), (1024, 32000), (64, 256000), (1048576, 10)],
    "cross_entropy": [(16384, 1000), (1024, 32000), (64, 256000)],
}
PAUSE_SECONDS = 0.05


def _median_time(fn, calls, repeats, other=None):
    """Median seconds per call of `fn`, alternating blocks with `other` if given."""
    times, other_times = [], []
    for _ in range(repeats):
        for f, sink in ((fn, times), (other, other_times)):
            if f is None:
                continue
            time.sleep(PAUSE_SECONDS)
            start = time.perf_counter()
            for _ in range(calls):
                f()
            sink.append((time.perf_counter() - start) / calls)
    return statistics.median(times), (statistics.median(other_times) if other else None)


def copy_bandwidth(nbytes, repeats):
    """GB/s of np.copyto over `nbytes` (read + write counted)."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    seconds, _ = _median_time(lambda: np.copyto(dst, src), 3, repeats)
    return 2 * nbytes / seconds / 1e9


def _cases(op, shape, torch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    out = np.empty_like(x)
    xt, ot = torch.from_numpy(x), torch.from_numpy(out.copy())
    if op in ("softmax", "log_softmax"):
        ours = getattr(fastsoftmax, op)
        peer = getattr(torch, op)
        return (
            lambda: ours(x, out=out, backend="c"),
            lambda: peer(xt, 1, out=ot),
            2 * x.nbytes,
        )
    target = rng.integers(0, shape[1], shape[0])
    tt = torch.from_numpy(target)
    grad = np.empty_like(x)
    leaf = xt.clone().requires_grad_(True)

    def peer_step():
        leaf.grad = None
        torch.nn.functional.cross_entropy(leaf, tt).backward()

    return (
        lambda: fastsoftmax.cross_entropy(x, target, return_grad=True, grad_out=grad, backend="c"),
        peer_step,
        2 * x.nbytes,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cases", nargs="*", default=list(SHAPES))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    fastsoftmax.set_num_threads(args.threads)
    repeats = 3 if args.quick else 7
    bandwidth = copy_bandwidth(64 << 20, repeats)
    info = fastsoftmax.backends()["c"]
    print(f"C backend {info.version}, {args.threads} threads, torch {torch.__version__}")
    print(f"np.copyto bandwidth: {bandwidth:.1f} GB/s\n")
    print(f"{'case':<28}{'c ms':>9}{'torch ms':>10}{'ratio':>8}{'GB/s':>8}{'of copy':>9}")
    for op in args.cases:
        for shape in SHAPES[op]:
            ours, peer, nbytes = _cases(op, shape, torch)
            ours(), peer()  # warm up both
            calls = max(1, int(2e7 // (shape[0] * shape[1])))
            t_ours, t_peer = _median_time(ours, calls, repeats, peer)
            gbs = nbytes / t_ours / 1e9
            name = f"{op} {shape[0]}x{shape[1]}"
            print(
                f"{name:<28}{t_ours * 1e3:9.3f}{t_peer * 1e3:10.3f}{t_peer / t_ours:8.2f}"
                f"{gbs:8.1f}{gbs / bandwidth:9.0%}"
            )


if __name__ == "__main__":
    main()
