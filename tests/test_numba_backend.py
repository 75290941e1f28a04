"""The Numba backends ("numba" and "numba-parallel") beyond the shared suites.

What only these backends have: kernels that LLVM must vectorize (checked in
the generated assembly), lazy compilation with an on-disk cache, the short-row
and long-row code paths and their boundary, in-place rows, and thread safety
under every Numba threading layer and inside Dask's threaded scheduler.
"""

import os
import re
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import fastsoftmax
import reference
from strategies import assert_close_scaled, assert_matches_reference

pytestmark = pytest.mark.skipif(
    not fastsoftmax.backends()["numba"].available, reason="Numba is not installed"
)

NUMBA_BACKENDS = ["numba", "numba-parallel"]
DTYPES = [np.float32, np.float64]
N_THREADS = 8


def numba_modules():
    from fastsoftmax._backends._numba import blocks, kernels, parallel

    return blocks, kernels, parallel


def logits(shape, dtype, seed=0, scale=4.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def run_python(*code, cache_dir, **env):
    """Run the `code` snippets in a fresh interpreter with NUMBA_CACHE_DIR=`cache_dir`.

    Returns what it printed.
    """
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), **env)
    result = subprocess.run(
        [sys.executable, "-c", "\n".join(textwrap.dedent(part) for part in code)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- every op against the float64 reference ------------------------------------

# Around the short-row limit (32), a vector of float32 (8) or float64 (4) lanes
# and the 2048-element blocks of the one-pass log-sum-exp.
WIDTHS = [1, 2, 7, 31, 32, 33, 65, 2047, 2049]


def check_every_op(x, backend, temperature=1.0):
    """Every op on logits `x` (class axis last) against the reference."""
    dtype = x.dtype
    p = fastsoftmax.softmax(x, temperature=temperature, backend=backend)
    assert_matches_reference(p, reference.softmax(x, temperature), "probability")
    logp = fastsoftmax.log_softmax(x, temperature=temperature, backend=backend)
    assert_matches_reference(logp, reference.log_softmax(x, temperature), "log")
    lse = fastsoftmax.logsumexp(x, backend=backend)
    assert_matches_reference(lse, reference.logsumexp(x), "log")

    grad = logits(x.shape, dtype, seed=1, scale=1.0)
    size = np.abs(grad).sum(axis=-1, keepdims=True)
    assert_close_scaled(
        fastsoftmax.softmax_backward(grad, p, backend=backend),
        reference.softmax_backward(grad, p),
        size,
        dtype,
    )
    assert_close_scaled(
        fastsoftmax.log_softmax_backward(grad, logp, backend=backend),
        reference.log_softmax_backward(grad, logp),
        size,
        dtype,
    )

    n_classes = x.shape[-1]
    target = np.random.default_rng(2).integers(0, n_classes, x.shape[:-1])
    weight = np.random.default_rng(3).uniform(0.5, 2.0, n_classes)
    options = dict(weight=weight, label_smoothing=0.1, z_loss=1e-3, reduction="none")
    # Losses are sums of terms as large as the logits.
    loss_rtol = 2e-6 if dtype == np.float32 else 1e-12
    loss, g = fastsoftmax.cross_entropy(x, target, return_grad=True, backend=backend, **options)
    with np.errstate(invalid="ignore"):  # special rows: NaN and inf as the contract says
        ref_loss, ref_g = reference.cross_entropy(x, target, **options)
    assert_close_scaled(loss, ref_loss, np.abs(x).max(axis=-1) + 1, dtype, rtol=loss_rtol)
    assert_close_scaled(g, ref_g, 1.0, dtype)
    q = reference.softmax(logits(x.shape, dtype, seed=4)).astype(dtype)
    loss, g = fastsoftmax.cross_entropy(x, q, return_grad=True, backend=backend, reduction="sum")
    with np.errstate(invalid="ignore"):
        ref_loss, ref_g = reference.cross_entropy(x, q, reduction="sum")
    scale = np.abs(x).max() * x.shape[0] + 1
    assert_close_scaled(loss, ref_loss, scale, dtype, rtol=loss_rtol)
    assert_close_scaled(g, ref_g, 1.0, dtype)

    k = min(3, n_classes)
    probs, index = fastsoftmax.softmax_topk(x, k, temperature=temperature, backend=backend)
    ref_probs, ref_index = reference.softmax_topk(x, k, temperature)
    assert_matches_reference(probs, ref_probs, "probability")
    np.testing.assert_array_equal(index, ref_index)


@pytest.mark.parametrize("backend", NUMBA_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", WIDTHS)
def test_every_op_matches_reference(backend, dtype, width):
    rows = 300 if width <= 33 else 20  # several short-row blocks, partial last one
    check_every_op(logits((rows, width), dtype), backend, temperature=0.7)


@pytest.mark.parametrize("backend", NUMBA_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_of_256k_classes(backend, dtype):
    x = logits((2, 256_000), dtype, scale=8.0)
    check_every_op(x, backend)


@pytest.mark.parametrize("backend", NUMBA_BACKENDS)
@pytest.mark.parametrize("width", [10, 1000])
def test_strided_and_reversed_rows(backend, width):
    base = logits((300, width + 8), np.float32)
    for x in (base[::2, 3 : 3 + width], base[::-1, :width], base[::-3, 5 : 5 + width]):
        assert not x.flags.c_contiguous
        check_every_op(x, backend)


@pytest.mark.parametrize("backend", NUMBA_BACKENDS)
@pytest.mark.parametrize("width", [10, 1000])
def test_in_place(backend, width):
    x = logits((300, width), np.float32)
    for op, kind in ((fastsoftmax.softmax, "probability"), (fastsoftmax.log_softmax, "log")):
        z = x.copy()
        assert op(z, out=z, backend=backend) is z
        assert_matches_reference(z, getattr(reference, op.__name__)(x), kind)
    y = fastsoftmax.softmax(x, backend=backend)
    logp = fastsoftmax.log_softmax(x, backend=backend)
    grad = logits(x.shape, np.float32, seed=5)
    size = np.abs(grad).sum(axis=-1, keepdims=True)
    backward = ((fastsoftmax.softmax_backward, y), (fastsoftmax.log_softmax_backward, logp))
    for op, saved in backward:
        expected = getattr(reference, op.__name__)(grad, saved)
        for overwrite in ("grad", "saved"):
            g, s = grad.copy(), saved.copy()
            out = g if overwrite == "grad" else s
            assert op(g, s, out=out, backend=backend) is out
            assert_close_scaled(out, expected, size, np.float32)
    labels = np.arange(x.shape[0]) % width
    z = x.copy()
    loss, g = fastsoftmax.cross_entropy(
        z, labels, return_grad=True, grad_out=z, backend=backend
    )
    ref_loss, ref_grad = reference.cross_entropy(x, labels)
    assert g is z
    assert_close_scaled(loss, ref_loss, np.abs(x).max(), np.float32)
    assert_close_scaled(z, ref_grad, 1.0 / x.shape[0], np.float32)


@pytest.mark.parametrize("backend", NUMBA_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [5, 10, 16, 40, 3000])
def test_special_rows(backend, dtype, width):
    """NaN, +inf and -inf rows among finite ones, in both code paths."""
    x = logits((12, width), dtype)
    x[1, width // 2] = np.nan
    x[2, 0] = np.inf
    x[3] = -np.inf
    x[4, ::2] = -np.inf
    x[5, -1] = np.inf
    x[5, 0] = np.nan
    x[6, :] = -np.inf
    x[6, -1] = 0.0
    x[7, :] = np.nan
    check_every_op(x, backend)
    lse = fastsoftmax.logsumexp(x, backend=backend)
    assert np.isnan(lse[[1, 5, 7]]).all()
    assert lse[2] == np.inf and lse[3] == -np.inf


@pytest.mark.parametrize("backend", NUMBA_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [10, 5000])
def test_topk_ties_and_large_k(backend, dtype, width):
    x = np.zeros((3, width), dtype)
    x[0, [1, width - 2, 5]] = 1.0
    x[1] = np.arange(width) % 7  # many ties, ascending runs
    x[2] = -np.arange(width, dtype=dtype)
    for k in sorted({1, 4, 50 % width, width} - {0}):
        probs, index = fastsoftmax.softmax_topk(x, k, backend=backend)
        ref_probs, ref_index = reference.softmax_topk(x, k)
        np.testing.assert_array_equal(index, ref_index)
        assert_matches_reference(probs, ref_probs, "probability")


# --- vectorization: packed AVX2 / AVX-512 instructions in the hot loops ---------


def host_has_avx2():
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    return features.get("avx2", False) and features.get("fma", False)


def fresh_assembly(dispatcher, args):
    """Assembly of `dispatcher`'s code for `args`, compiled now with its own options.

    Numba shows no assembly for code loaded from its cache, so a twin of the
    kernel (same function, same options, no cache) is compiled instead.
    """
    import numba

    options = {k: v for k, v in dispatcher.targetoptions.items() if k != "nopython"}
    twin = numba.njit(**options)(dispatcher.py_func)
    signature = tuple(numba.typeof(a) for a in args)
    twin.compile(signature)
    return twin.inspect_asm(signature)


def packed(assembly, mnemonic, dtype):
    """How many 256- or 512-bit packed `mnemonic` instructions of `dtype` the code holds.

    LLVM targets the host: AVX2 machines get ymm registers, AVX-512 ones
    (Zen 4, Sapphire Rapids) zmm registers in the widest loops.
    """
    suffix = "ps" if dtype == np.float32 else "pd"
    return len(re.findall(rf"\b{mnemonic}\w*{suffix}\s[^\n]*%[yz]mm", assembly))


def kernel_cases():
    """(name, dispatcher-getter, argument-maker) for the kernels worth inspecting."""

    def rowwise(width):
        def make(dtype):
            x = logits((4, width), dtype)
            return (x, np.empty_like(x), 0, 4)  # the t = 1 kernels take no t

        return make

    def backward(dtype):
        x = logits((4, 100), dtype)
        return (x, x.copy(), np.empty_like(x), 0, 4)

    def lse(width):
        def make(dtype):
            x = logits((4, width), dtype)
            return (x, np.empty(4, dtype), 0, 4)

        return make

    def ce(width):
        def make(dtype):
            x = logits((4, width), dtype)
            target, loss = np.zeros(4, np.int64), np.empty(4, dtype)
            return (x, target, None, loss, np.empty_like(x), -100, 0.1, 0.0, 1.0, 0, 4)

        return make

    def topk(width):
        def make(dtype):
            x = logits((4, width), dtype)
            return (x, dtype(1.0), np.empty((4, 3), dtype), np.empty((4, 3), np.int64), 0, 4)

        return make

    def streamed(width):
        def make(dtype):
            x = logits((3, width), dtype)
            return (x, np.empty_like(x), 0, 3)

        return make

    def parallel_softmax(dtype):
        x = logits((4, 100), dtype)
        return (x, np.empty_like(x), 2)

    return [
        ("softmax", lambda m: m[1].softmax_unit, rowwise(100)),
        ("log_softmax", lambda m: m[1].log_softmax_unit, rowwise(100)),
        ("logsumexp", lambda m: m[1].logsumexp, lse(100)),
        ("softmax_short", lambda m: m[1].softmax_short_unit, rowwise(10)),
        ("log_softmax_short", lambda m: m[1].log_softmax_short_unit, rowwise(10)),
        ("logsumexp_short", lambda m: m[1].logsumexp_short, lse(10)),
        ("softmax_backward", lambda m: m[1].softmax_backward, backward),
        ("log_softmax_backward", lambda m: m[1].log_softmax_backward, backward),
        ("cross_entropy_class", lambda m: m[1].cross_entropy_class, ce(100)),
        ("cross_entropy_class_short", lambda m: m[1].cross_entropy_class_short, ce(10)),
        ("softmax_topk", lambda m: m[1].softmax_topk, topk(100)),
        ("softmax_topk_short", lambda m: m[1].softmax_topk_short_scaled, topk(10)),
        ("parallel softmax", lambda m: m[2].softmax_unit, parallel_softmax),
        ("softmax_pipelined", lambda m: m[1].softmax_pipelined_unit, rowwise(100)),
        ("softmax_rescaled", lambda m: m[1].softmax_rescaled_unit, rowwise(3000)),
        ("log_softmax_streamed_unit", lambda m: m[1].log_softmax_streamed_unit, streamed(1000)),
        ("log_softmax_pipelined_unit", lambda m: m[1].log_softmax_pipelined_unit, streamed(16_400)),
    ]


@pytest.mark.slow
@pytest.mark.skipif(not host_has_avx2(), reason="the assembly checks are for AVX2 + FMA CPUs")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", kernel_cases(), ids=lambda case: case[0])
def test_hot_loops_use_packed_instructions(case, dtype):
    name, get, make = case
    assembly = fresh_assembly(get(numba_modules()), make(dtype))
    # The polynomial exp alone is a chain of fused multiply-adds; every kernel
    # but softmax_backward evaluates it (or log) in a vector loop.
    if name != "softmax_backward":
        assert packed(assembly, "vfmadd", dtype) + packed(assembly, "vfmsub", dtype) >= 8, name
    else:
        assert packed(assembly, "vmul", dtype) + packed(assembly, "vfmadd", dtype) >= 2, name
    if name not in ("softmax_backward", "log_softmax_backward"):
        assert packed(assembly, "vmax", dtype) >= 1, name  # the row (or column) maximum
    if name.startswith("log_softmax_") and name.endswith("ed_unit"):  # streamed output
        assert packed(assembly, "vmovnt", dtype) >= 2, name
    # No libm exp is called anywhere.
    assert not re.search(r"\b(exp|expf|__exp_finite)\b", assembly), name


# --- compilation and the on-disk cache -------------------------------------------

LIST_COMPILED = """
    from numba.core.registry import CPUDispatcher
    from fastsoftmax._backends._numba import blocks, kernels, parallel

    def compiled():
        \"\"\"The compiled entry points (helpers are inlined into them), by name.\"\"\"
        names = {}
        for module in (blocks, kernels, parallel):
            for name, value in vars(module).items():
                if (
                    isinstance(value, CPUDispatcher)
                    and value.signatures
                    and not value.targetoptions.get("forceinline")
                    and value.__module__ == module.__name__
                ):
                    names[module.__name__.rsplit(".", 1)[1] + "." + name] = value
        return names
"""


def test_importing_compiles_nothing(tmp_path):
    out = run_python(
        """
        import sys
        import fastsoftmax
        print("numba" in sys.modules)
        fastsoftmax.backends()  # imports every backend module
        """,
        LIST_COMPILED,
        "print(sorted(compiled()))",
        cache_dir=tmp_path,
    )
    assert out.splitlines() == ["False", "[]"]  # import fastsoftmax leaves Numba alone
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]  # nothing cached


def test_first_call_compiles_only_its_op_at_its_temperature_and_is_cached(tmp_path):
    call = """
        import numpy as np
        import fastsoftmax
        x = np.ones((4, 100), np.float32)
        fastsoftmax.log_softmax(x, backend="numba")
        entries = compiled()
        print(sorted(entries))
        kernel = entries["kernels.log_softmax_unit"]
        print(sorted({str(a.dtype) for signature in kernel.signatures for a in signature[:2]}))
        print(sum(kernel.stats.cache_hits.values()), sum(kernel.stats.cache_misses.values()))
    """
    # the t = 1 kernel alone: the one for any t is another entry point
    log_softmax_kernels = "['kernels.log_softmax_unit']"
    first = run_python(LIST_COMPILED, call, cache_dir=tmp_path).splitlines()
    assert first[0] == log_softmax_kernels
    assert first[1] == "['float32']"
    assert first[2] == "0 1"  # compiled, not found in the cache
    assert any(path.suffix == ".nbi" for path in tmp_path.rglob("*"))
    second = run_python(LIST_COMPILED, call, cache_dir=tmp_path).splitlines()
    assert second[0] == log_softmax_kernels
    assert second[2] == "1 0"  # loaded from the cache, nothing compiled


def test_cache_entries_expire_with_any_kernel_source():
    from fastsoftmax._backends._numba import cache

    _, kernels, _ = numba_modules()
    stamp = kernels.softmax_unit._cache._impl.locator.get_source_stamp()
    assert stamp[1] == cache.SOURCES_DIGEST
    assert isinstance(kernels.softmax_unit._cache, cache.KernelCache)


def test_tiny_auto_calls_do_not_load_numba(tmp_path):
    if not fastsoftmax.backends()["c"].available:
        pytest.skip("without the C backend, auto uses NumPy for tiny calls")
    out = run_python(
        """
        import sys
        import numpy as np
        import fastsoftmax
        fastsoftmax.softmax(np.ones((8, 10), np.float32))
        fastsoftmax.cross_entropy(np.ones((8, 10)), np.zeros(8, np.int64))
        print("numba" in sys.modules)
        """,
        cache_dir=tmp_path,
    )
    assert out.strip() == "False"


# --- threads -------------------------------------------------------------------


def every_op(backend, x, grad, target):
    """Run every op on `backend`; returns the list of results."""
    y = fastsoftmax.softmax(x, backend=backend)
    logp = fastsoftmax.log_softmax(x, temperature=2.0, backend=backend)
    z = x.copy()
    fastsoftmax.softmax(z, out=z, backend=backend)
    return [
        y,
        logp,
        z,
        fastsoftmax.logsumexp(x, backend=backend),
        fastsoftmax.softmax_backward(grad, y, backend=backend),
        fastsoftmax.log_softmax_backward(grad, logp, backend=backend),
        *fastsoftmax.cross_entropy(
            x, target, return_grad=True, label_smoothing=0.1, backend=backend
        ),
        *fastsoftmax.softmax_topk(x, 4, backend=backend),
    ]


@pytest.mark.parametrize("backend", NUMBA_BACKENDS)
@pytest.mark.parametrize("width", [10, 700])
def test_every_op_from_eight_threads_at_once(backend, width):
    # 100k elements: above the size where numba-parallel starts its threads.
    x = logits((100_000 // width, width), np.float32)
    grad = logits(x.shape, np.float32, seed=1)
    target = np.arange(x.shape[0]) % width
    expected = every_op(backend, x, grad, target)
    barrier = threading.Barrier(N_THREADS)
    results = [None] * N_THREADS
    errors = []

    def work(i):
        try:
            barrier.wait()
            for _ in range(3):
                results[i] = every_op(backend, x, grad, target)
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for result in results:
        for got, want in zip(result, expected):
            np.testing.assert_array_equal(got, want)


def test_workqueue_layer_is_guarded(tmp_path):
    """Numba's workqueue layer aborts on overlapping parallel regions; ours never overlap."""
    out = run_python(
        """
        import threading
        import numpy as np
        import numba
        import fastsoftmax
        fastsoftmax.set_num_threads(2)
        x = np.random.default_rng(0).standard_normal((2000, 100)).astype(np.float32)
        expected = fastsoftmax.log_softmax(x, backend="numba-parallel")
        print(numba.threading_layer())
        def work():
            for _ in range(20):
                got = fastsoftmax.log_softmax(x, backend="numba-parallel")
                np.testing.assert_array_equal(got, expected)
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print("done")
        """,
        cache_dir=tmp_path,
        NUMBA_THREADING_LAYER="workqueue",
        NUMBA_NUM_THREADS="2",
    )
    assert out.split() == ["workqueue", "done"]


@pytest.mark.parametrize("backend", NUMBA_BACKENDS)
def test_inside_dask_threaded_workers(backend):
    da = pytest.importorskip("dask.array")
    import dask

    x = logits((40_000, 50), np.float32)
    expected = fastsoftmax.log_softmax(x, backend=backend)
    chunks = da.from_array(x, chunks=(2_500, 50))
    lazy = chunks.map_blocks(lambda block: fastsoftmax.log_softmax(block, backend=backend))
    with dask.config.set(scheduler="threads", num_workers=8):
        got = lazy.compute()
    np.testing.assert_array_equal(got, expected)


def test_parallel_calls_leave_the_callers_numba_thread_count_alone():
    import numba

    x = logits((1000, 100), np.float32)
    before = numba.get_num_threads()
    previous = fastsoftmax.get_num_threads()
    try:
        fastsoftmax.set_num_threads(1)
        one = fastsoftmax.softmax(x, backend="numba-parallel")
        fastsoftmax.set_num_threads(64)
        many = fastsoftmax.softmax(x, backend="numba-parallel")
    finally:
        fastsoftmax.set_num_threads(previous)
    assert numba.get_num_threads() == before
    np.testing.assert_array_equal(one, many)


def test_one_call_at_a_time_uses_the_threads(monkeypatch):
    """A call that finds the threads busy runs on its own thread, same result."""
    from fastsoftmax._backends import numba_parallel_backend as backend

    x = logits((1000, 100), np.float32)  # 100k elements: big enough for threads
    expected = fastsoftmax.softmax(x, backend="numba")
    driver = backend.parallel.softmax_unit
    launched = []

    def spy(*args):
        launched.append(threading.get_ident())
        return driver(*args)

    monkeypatch.setattr(backend.parallel, "softmax_unit", spy)
    previous = fastsoftmax.get_num_threads()
    try:
        fastsoftmax.set_num_threads(2)
        with backend._threads_busy:
            busy = fastsoftmax.softmax(x, backend="numba-parallel")
        np.testing.assert_array_equal(busy, expected)
        assert launched == []
        got = fastsoftmax.softmax(x, backend="numba-parallel")
    finally:
        fastsoftmax.set_num_threads(previous)
    assert len(launched) == (1 if backend.numba.config.NUMBA_NUM_THREADS > 1 else 0)
    assert_matches_reference(got, reference.softmax(x), "probability")


@pytest.mark.parametrize("backend", NUMBA_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [6, 1000])
def test_huge_opposite_logits_at_high_temperature(backend, dtype, width):
    """x - max overflows for logits near the largest float; (x - max) / T need not."""
    big = np.finfo(dtype).max / 1.5
    x = logits((3, width), dtype, scale=1.0) * (big / 8)
    x[:, 0], x[:, 1] = big, -big
    temperature = float(big) / 2  # (x - max) / T = -4 for the second logit
    # The same problem scaled down, where the float64 reference cannot overflow.
    small = x.astype(np.float64) / big
    p = fastsoftmax.softmax(x, temperature=temperature, backend=backend)
    assert_matches_reference(p, reference.softmax(small, 0.5), "probability")
    logp = fastsoftmax.log_softmax(x, temperature=temperature, backend=backend)
    assert_matches_reference(logp, reference.log_softmax(small, 0.5), "log")
    probs, index = fastsoftmax.softmax_topk(x, 2, temperature=temperature, backend=backend)
    ref_probs, ref_index = reference.softmax_topk(small, 2, 0.5)
    np.testing.assert_array_equal(index, ref_index)
    assert_matches_reference(probs, ref_probs, "probability", dtype)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_vector_exp_gives_the_scalar_result_lane_for_lane():
    # The register kernels of rows of 8 to 16 float32 classes build the exp
    # on <8 x float> vectors; it must be the scalar kernels' exp bit for bit.
    import numba

    from fastsoftmax._backends._numba.elementary import exp_nonpositive
    from fastsoftmax._backends._numba.register_rows import exp_nonpositive8

    @numba.njit
    def both(x, scalar, vector):
        for i in range(x.shape[0]):
            scalar[i] = exp_nonpositive(x[i])
        for i in range(0, x.shape[0], 8):
            exp_nonpositive8(x, vector, i)

    rng = np.random.default_rng(5)
    special = [-np.inf, np.nan, 0.0, -0.0, -87.33, -87.3, -87.34, -103.9, -104.0, -132.0, -132.5,
               -133.0, -1e30, -1e-8]
    x = np.concatenate(
        [-rng.exponential(30, 40_000), -rng.uniform(0, 120, 40_000), special * 8]
    ).astype(np.float32)
    x = x[: x.size // 8 * 8]
    scalar, vector = np.empty_like(x), np.empty_like(x)
    both(x, scalar, vector)
    np.testing.assert_array_equal(scalar.view(np.uint32), vector.view(np.uint32))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES)
def test_vector_exp_sums_take_the_scalar_exps(dtype):
    # The pipelined log_softmax adds its exponentials a vector at a time
    # (vector_exp.add_exps): one vector into each accumulator, they must be
    # the scalar kernels' exps bit for bit.
    import numba

    from fastsoftmax._backends._numba.elementary import exp_nonpositive
    from fastsoftmax._backends._numba.vector_exp import ACC_VECTORS, VECTOR_BYTES, add_exps

    width = ACC_VECTORS * VECTOR_BYTES // np.dtype(dtype).itemsize

    @numba.njit
    def both(x, scalar, vector, acc):
        for i in range(x.shape[0]):
            scalar[i] = exp_nonpositive(x[i])
        for i in range(0, x.shape[0], width):
            acc[:] = 0.0
            add_exps(acc, x[i : i + width], x.dtype.type(0.0), width)
            vector[i : i + width] = acc

    rng = np.random.default_rng(6)
    special = [-np.inf, np.nan, 0.0, -0.0, -87.33, -103.9, -104.0, -708.4, -745.0, -746.0,
               -1063.5, -1064.0, -1064.5, -1e300, -1e-8]
    x = np.concatenate(
        [-rng.exponential(30, 40_000), -rng.uniform(0, 800, 40_000), special * 16]
    ).astype(dtype)
    x = x[: x.size // width * width]
    scalar, vector = np.empty_like(x), np.empty_like(x)
    both(x, scalar, vector, np.empty(width, dtype))
    bits = np.uint32 if dtype == np.float32 else np.uint64
    np.testing.assert_array_equal(scalar.view(bits), vector.view(bits))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_short_rows_exp_within_a_sixth_of_the_probability_bound():
    # softmax's cheaper exp for rows of 8 to 16 float32 classes: every 257th
    # nonpositive float32, then a fine grid where results are normal.
    import numba

    from fastsoftmax._backends._numba.register_rows import exp_nonpositive_short8

    @numba.njit
    def exps(x, out):
        for i in range(0, x.shape[0], 8):
            exp_nonpositive_short8(x, out, i)

    x = np.arange(2**31, 2**32, 257, dtype=np.uint64).astype(np.uint32).view(np.float32)
    x = np.concatenate([x, np.linspace(-87.3, 0, 1_000_000, dtype=np.float32),
                        np.array([-np.inf, np.nan, -0.0, 0.0, -132.5, -1e30], np.float32)])
    x = x[: x.size // 8 * 8]
    got = np.empty_like(x)
    exps(x, got)
    exact = np.exp(x.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(exact))
    rounded = exact.astype(np.float32)
    np.testing.assert_array_equal(got[rounded == 0], 0)
    normal = rounded >= np.finfo(np.float32).tiny
    spacing = np.spacing(rounded[normal]).astype(np.float64)
    assert (np.abs(got[normal] - exact[normal]) / spacing).max() < 5.0
    relative = np.abs(got[normal] - exact[normal]) / exact[normal]
    assert (relative / (1e-6 + 1.2e-7 * np.abs(x[normal]))).max() < 1 / 6
    subnormal = (rounded > 0) & ~normal
    assert (np.abs(got[subnormal] - exact[subnormal]) / 2.0**-149).max() < 3.5


@pytest.mark.parametrize("backend", ["numba", "numba-parallel"])
@pytest.mark.parametrize("n_cols", [8, 9, 10, 12, 14, 16])
def test_short_rows_give_the_same_bits_as_lines_as_rows_and_streamed(backend, n_cols):
    # Contiguous float32 rows of an even number of classes move as whole
    # 32-byte lines, streamed into outputs of 16 MiB and more that are 16-byte
    # aligned; rows at a stride go through row transposes. All the same bits.
    rows = (16 << 20) // (4 * n_cols) + 13
    x = logits((rows, n_cols), np.float32, seed=n_cols, scale=20.0)
    x[3, 1], x[8, 2], x[9] = np.inf, np.nan, -np.inf
    x[10, ::2] = -np.inf
    contiguous = fastsoftmax.softmax(x, backend=backend)
    wide = np.zeros((rows, n_cols + 1), np.float32)
    wide[:, :n_cols] = x
    strided = fastsoftmax.softmax(wide[:, :n_cols], backend=backend)
    np.testing.assert_array_equal(contiguous.view(np.uint32), strided.view(np.uint32))
    buffer = np.empty(x.size + 32, np.float32)
    for offset in (4, 1):  # 16 bytes past a 64-byte line: streamed; 4 bytes: not
        start = (-buffer.ctypes.data // 4) % 16 + offset
        out = buffer[start : start + x.size].reshape(x.shape)
        fastsoftmax.softmax(x, out=out, backend=backend)
        np.testing.assert_array_equal(out.view(np.uint32), contiguous.view(np.uint32))
    in_place = x.copy()  # in place: each group is read before the one before it is written
    fastsoftmax.softmax(in_place, out=in_place, backend=backend)
    np.testing.assert_array_equal(in_place.view(np.uint32), contiguous.view(np.uint32))
    np.testing.assert_array_equal(
        fastsoftmax.softmax(x[:1000], backend=backend).view(np.uint32),
        contiguous[:1000].view(np.uint32),
    )
    assert np.isnan(contiguous[[3, 8, 9]]).all()
    np.testing.assert_array_equal(contiguous[10, ::2], 0)


@pytest.mark.parametrize("width", [8, 9, 10, 12, 13, 16])
def test_register_rows_do_not_depend_on_the_thread_count(width):
    # Rows of 8 to 16 float32 classes go eight at a time through registers,
    # the last few padded to eight: every split must give the same bits.
    x = logits((40_003, width), np.float32, seed=width)  # large enough to use threads
    x[40_000, 3] = np.nan
    x[40_001] = -np.inf
    x[40_002, 1] = np.inf
    previous = fastsoftmax.get_num_threads()
    results = []
    try:
        for backend, threads in (("numba", 1), ("numba-parallel", 2), ("numba-parallel", 3)):
            fastsoftmax.set_num_threads(threads)
            results.append(
                (
                    fastsoftmax.softmax(x, backend=backend),
                    fastsoftmax.log_softmax(x, backend=backend),
                )
            )
    finally:
        fastsoftmax.set_num_threads(previous)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    check_every_op(x[:999], "numba")
    assert np.isnan(results[0][0][[40_000, 40_001, 40_002]]).all()


def test_float32_log_within_one_ulp_over_the_whole_range():
    # The kernels' float32 log is float32 arithmetic (as the C backend's);
    # every 257th bit pattern: negatives, subnormals, zeros, inf and NaN too.
    import numba

    from fastsoftmax._backends._numba.elementary import log

    @numba.njit
    def logs(x, out):
        for i in range(x.shape[0]):
            out[i] = log(x[i])

    x = np.arange(0, 2**32, 257, dtype=np.uint64).astype(np.uint32).view(np.float32)
    got = np.empty_like(x)
    logs(x, got)
    exact = np.log(x.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(exact))
    rounded = exact.astype(np.float32)
    extreme = np.isinf(rounded)
    np.testing.assert_array_equal(got[extreme], rounded[extreme])
    finite = np.isfinite(rounded)
    spacing = np.spacing(np.abs(rounded[finite])).astype(np.float64)
    ulps = np.abs(got[finite].astype(np.float64) - exact[finite]) / spacing
    assert ulps.max() < 1.0


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_nonpositive_within_one_ulp_and_exactly_zero_below_the_subnormals(dtype):
    # The kernels' exp of x - max(x): subnormal results round once, results
    # below them are exactly 0 (for -inf and past the clamp too, where the
    # power of two is +0), NaN stays NaN. The polynomials are Horner in the
    # kernel's own dtype: the largest errors measured here are 1.04 ulp
    # (float32) and 3.12 ulp (float64, against the contract's 1e-13).
    import numba

    from fastsoftmax._backends._numba.elementary import exp_nonpositive

    @numba.njit
    def exps(x, out):
        for i in range(x.shape[0]):
            out[i] = exp_nonpositive(x[i])

    if dtype == np.float32:  # every 257th bit pattern with the sign bit set
        x = np.arange(2**31, 2**32, 257, dtype=np.uint64).astype(np.uint32).view(np.float32)
    else:
        rng = np.random.default_rng(8)
        x = np.concatenate([-rng.uniform(0, 760, 500_000), -rng.exponential(1, 100_000)])
    edges = [0.0, -0.0, -87.33, -103.9, -104.0, -132.0, -132.5, -133.0, -745.1, -745.2,
             -1063.5, -1064.0, -1064.5, -1e30, -np.inf, np.nan]
    x = np.concatenate([x, np.array(edges, dtype)])
    got = np.empty_like(x)
    exps(x, got)
    exact = np.exp(x.astype(np.longdouble))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(exact))
    rounded = exact.astype(dtype)
    zero = rounded == 0
    np.testing.assert_array_equal(got[zero].view(np.uint32 if dtype == np.float32 else np.uint64), 0)
    rest = np.isfinite(rounded) & ~zero
    spacing = np.maximum(np.spacing(np.abs(rounded[rest])), np.finfo(dtype).smallest_subnormal)
    ulps = np.abs(got[rest].astype(np.longdouble) - exact[rest]) / spacing.astype(np.longdouble)
    assert ulps.max() < (1.1 if dtype == np.float32 else 3.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", ["numba", "numba-parallel"])
def test_large_log_softmax_outputs_are_streamed_at_any_alignment(backend, dtype):
    # Outputs of 16 MiB and more in rows of 512+ classes go through streaming
    # stores: whole 64-byte lines, the partial ones at each row's ends by
    # element. Outputs 0, 1 and 5 elements after a line; in place; t != 1.
    from fastsoftmax._backends._numba import kernels

    cols = 1003
    itemsize = np.dtype(dtype).itemsize
    rows = kernels.STREAMED_MIN_BYTES // (itemsize * cols) + 3
    x = logits((rows, cols), dtype, seed=3)
    x[7, 100] = np.nan  # special rows keep their values
    x[8, :] = -np.inf
    picked = [0, 1, 7, 8, rows // 2, rows - 1]
    expected = reference.log_softmax(x[picked])
    for offset in (0, 1, 5):
        buffer = np.empty(x.size + 64, dtype)
        start = (-buffer.ctypes.data // itemsize) % (64 // itemsize) + offset
        out = buffer[start : start + x.size].reshape(x.shape)
        fastsoftmax.log_softmax(x, out=out, backend=backend)
        assert_matches_reference(out[picked], expected, "log")
    inplace = x.copy()
    assert fastsoftmax.log_softmax(inplace, out=inplace, backend=backend) is inplace
    assert_matches_reference(inplace[picked], expected, "log")
    scaled = fastsoftmax.log_softmax(x, temperature=2.0, backend=backend)
    assert_matches_reference(scaled[picked], reference.log_softmax(x[picked], 2.0), "log")


def _record_runs(monkeypatch, family, threads):
    """A list that gets an entry each time a kernel of `family` runs (its ``_unit``
    or ``_scaled`` case): the parallel one when `threads` > 1 (it calls the serial
    one), else the serial one."""
    from fastsoftmax._backends._numba import kernels, parallel

    ran = []
    called = parallel if threads > 1 else kernels

    def spy_on(name):
        real = getattr(called, name)

        def spy(*args):
            ran.append(True)
            return real(*args)

        monkeypatch.setattr(called, name, spy)

    for case in ("_unit", "_scaled"):
        spy_on(family + case)
    return ran


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "backend, threads", [("numba", 1), ("numba-parallel", 1), ("numba-parallel", 2)]
)
def test_long_softmax_rows_are_pipelined_through_a_workspace(
    backend, threads, dtype, monkeypatch
):
    # Rows of 16384+ classes, an output of 16 MiB+, and enough rows for two
    # workspace rows per thread within the memory rule: each exponential is
    # computed once and the rows are pipelined (`rows.softmax_pipelined`).
    from fastsoftmax._backends._numba import protocol

    ran = _record_runs(monkeypatch, "softmax_pipelined", threads)
    previous = fastsoftmax.get_num_threads()
    fastsoftmax.set_num_threads(threads)
    try:
        x = logits((264 * threads, 16_407), dtype, seed=9)
        x[1, 5] = np.nan
        x[2, 77] = np.inf
        x[3] = -np.inf
        x[4, ::3] = -np.inf
        x[5, 16_000] = 3e30  # all the mass in one class, the others exactly 0
        x[-1, -1] = np.nan  # the pipeline ends on a NaN row
        picked = [0, 1, 2, 3, 4, 5, 6, 131, 262, 263, len(x) - 1]
        buffer = np.empty(x.size + 16, dtype)
        out = buffer[1 : 1 + x.size].reshape(x.shape)  # not on a cache line
        for temperature in (1.0, 0.3):
            expected = reference.softmax(x[picked], temperature)
            fastsoftmax.softmax(x, temperature=temperature, out=out, backend=backend)
            assert ran.pop()
            assert_matches_reference(out[picked], expected, "probability")
            first_nan = fastsoftmax.softmax(x[1:], temperature=temperature, backend=backend)
            assert ran.pop()
            assert_matches_reference(first_nan[[p - 1 for p in picked[1:]]], expected[1:], "probability")
        inplace = x.copy()
        fastsoftmax.softmax(inplace, out=inplace, backend=backend)
        assert ran.pop()
        assert_matches_reference(inplace[picked], reference.softmax(x[picked]), "probability")
        # too few rows for two workspace rows under the memory rule: the plain kernel
        few = logits((200 * threads, 21_000), dtype, seed=10)
        assert not protocol._pipelines(few, few, threads)
        fastsoftmax.softmax(few, backend=backend)
        assert not ran
        assert protocol._pipelines(x, out, threads)
    finally:
        fastsoftmax.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "backend, threads", [("numba", 1), ("numba-parallel", 1), ("numba-parallel", 2)]
)
def test_long_softmax_rows_without_a_workspace_are_rescaled_in_their_output(
    backend, threads, dtype, monkeypatch
):
    # Rows of 512 KiB+ into an output of 16 MiB+, too few for a workspace: each
    # output row holds its exponentials, a part at a time against the running
    # maximum, until the row's sum is known and the parts are scaled in place
    # (`rows.softmax_rescaled`), the scaling of one row beside the next row's
    # exponentials.
    from fastsoftmax._backends._numba import kernels, protocol, rows

    ran = _record_runs(monkeypatch, "softmax_rescaled", threads)
    itemsize = np.dtype(dtype).itemsize
    n_cols = rows.RESCALE_MIN_BYTES // itemsize + 13
    n_rows = kernels.STREAMED_MIN_BYTES // (n_cols * itemsize) + 3 * threads
    x = logits((n_rows, n_cols), dtype, seed=13)
    x[1, 5] = np.nan
    x[2, 77] = np.inf
    x[3] = -np.inf
    x[4, ::3] = -np.inf
    x[5, n_cols - 100] = 3e30  # all the mass in a late part, the others exactly 0
    x[6, :300] += 30  # the mass in the first part
    x[7, :5000] = -np.inf  # a NaN among a leading run of -inf
    x[7, 300] = np.nan
    x[8, :5000] = -np.inf  # the first finite logit after several parts of -inf
    x[9] = np.linspace(-30, 30, n_cols)  # a maximum that grows in every part
    x[-1, -1] = np.nan  # the pipeline ends on a NaN row
    picked = list(range(10)) + [n_rows // 2, n_rows - 2, n_rows - 1]
    previous = fastsoftmax.get_num_threads()
    fastsoftmax.set_num_threads(threads)
    try:
        assert protocol._rescales(x, x) and not protocol._pipelines(x, x, threads)
        buffer = np.empty(x.size + 16, dtype)
        out = buffer[1 : 1 + x.size].reshape(x.shape)  # not on a cache line
        for temperature in (1.0, 0.3):
            with np.errstate(over="ignore", invalid="ignore"):
                expected = reference.softmax(x[picked], temperature)
            fastsoftmax.softmax(x, temperature=temperature, out=out, backend=backend)
            assert ran.pop()
            assert_matches_reference(out[picked], expected, "probability")
            first_nan = fastsoftmax.softmax(x[1:], temperature=temperature, backend=backend)
            assert ran.pop()
            assert_matches_reference(first_nan[[p - 1 for p in picked[1:]]], expected[1:], "probability")
            inplace = x.copy()
            fastsoftmax.softmax(inplace, temperature=temperature, out=inplace, backend=backend)
            assert ran.pop()
            assert_matches_reference(inplace[picked], expected, "probability")
        # rows that fit L2, or too long for their output to stay in cache: the plain kernel
        for cols in (rows.RESCALE_MIN_BYTES // itemsize - 1, rows.RESCALE_MAX_BYTES // itemsize + 1):
            assert not protocol._rescales(np.empty((100, cols), dtype), np.empty((100, cols), dtype))
    finally:
        fastsoftmax.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "backend, threads", [("numba", 1), ("numba-parallel", 1), ("numba-parallel", 2)]
)
def test_long_log_softmax_rows_are_pipelined(backend, threads, dtype):
    # Rows of PIPELINED_ROW_MIN+ classes into a streamed output: the next row's
    # maximum and sum are taken while this row's output streams
    # (`rows.log_softmax_unit_pipelined`), starting and ending on NaN rows.
    from fastsoftmax._backends._numba import kernels

    n_cols = kernels.PIPELINED_ROW_MIN + 23
    n_rows = kernels.STREAMED_MIN_BYTES // (n_cols * np.dtype(dtype).itemsize) + 5 * threads
    x = logits((n_rows, n_cols), dtype, seed=12)
    x[0, 3] = np.nan
    x[2, 77] = np.inf
    x[3] = -np.inf
    x[4, ::3] = -np.inf
    x[5, 16_000] = 3e30
    x[6, :300] += 30  # the mass in the first blocks
    x[7, :5000] = -np.inf  # a NaN among a leading run of -inf
    x[7, 300] = np.nan
    # float64 rows take their maximum a stage at a time: the first finite
    # logit after whole stages of -inf, and a maximum that grows in every stage
    x[8, :5000] = -np.inf
    x[9] = np.linspace(-30, 30, n_cols)
    x[-1, -1] = np.nan
    expected = reference.log_softmax(x)
    previous = fastsoftmax.get_num_threads()
    fastsoftmax.set_num_threads(threads)
    try:
        # every element of every row: the streamed stores of a row start where
        # the addresses of the two rows put them (`rows.store_start`) and wrap
        # around, so the output is checked at several offsets
        for offset in (0, 1, 200, 333):
            buffer = np.full(x.size + 512, np.nan, dtype)
            out = buffer[offset : offset + x.size].reshape(x.shape)
            fastsoftmax.log_softmax(x, out=out, backend=backend)
            assert_matches_reference(out, expected, "log")
        inplace = x.copy()
        fastsoftmax.log_softmax(inplace, out=inplace, backend=backend)
        assert_matches_reference(inplace, expected, "log")
    finally:
        fastsoftmax.set_num_threads(previous)
