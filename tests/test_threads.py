"""Thread safety and the thread-count setting.

Every op runs from 8 Python threads at once on every backend (shared and
private inputs, inputs large enough for the threaded kernels) and must give
what it gives when called serially.
"""

import math
import os
import threading
import time

import numpy as np
import pytest

import fastsoftmax
import reference
from strategies import (
    assert_matches_reference,
    assert_same_to_rounding,
    assert_same_values,
    is_simulated,
)

N_THREADS = 8


def make_tasks(backend, seed, dtype):
    """(call, kinds) for every op on inputs of their own; `kinds` describe the results."""
    rng = np.random.default_rng(seed)
    # 128 x 300 = 38400 elements: above the size where CPU backends start threads.
    shape = (3, 5) if is_simulated(backend) else (128, 300)
    x = (rng.normal(scale=3, size=shape)).astype(dtype)
    grad = rng.normal(size=shape).astype(dtype)
    y = reference.softmax(x).astype(dtype)
    logp = reference.log_softmax(x).astype(dtype)
    target = rng.integers(0, shape[1], size=shape[0])
    target[::5] = -100
    weight = rng.uniform(0.5, 2.0, size=shape[1])

    def in_place():
        z = x.copy()
        return fastsoftmax.log_softmax(z, out=z, backend=backend)

    def into_out():
        out = np.empty(shape[::-1], dtype).T
        return fastsoftmax.softmax(x, axis=-1, out=out, temperature=0.5, backend=backend)

    return [
        (lambda: fastsoftmax.softmax(x, backend=backend), ("probability",)),
        (lambda: fastsoftmax.log_softmax(x, temperature=2.0, backend=backend), ("log",)),
        (lambda: fastsoftmax.logsumexp(x, backend=backend), ("log",)),
        (lambda: fastsoftmax.softmax(x, axis=0, backend=backend), ("probability",)),
        (lambda: fastsoftmax.softmax_backward(grad, y, backend=backend), ("scaled",)),
        (lambda: fastsoftmax.log_softmax_backward(grad, logp, backend=backend), ("scaled",)),
        (
            lambda: fastsoftmax.cross_entropy(
                x, target, weight=weight, label_smoothing=0.1, return_grad=True, backend=backend
            ),
            ("scaled", "scaled"),
        ),
        (
            lambda: fastsoftmax.cross_entropy(
                x, y, reduction="none", return_grad=True, backend=backend
            ),
            ("scaled", "scaled"),
        ),
        (lambda: fastsoftmax.softmax_topk(x, 5, backend=backend), ("probability", "exact")),
        (in_place, ("log",)),
        (into_out, ("probability",)),
    ]


def assert_same_result(result, expected, kinds):
    results = result if isinstance(result, tuple) else (result,)
    expecteds = expected if isinstance(expected, tuple) else (expected,)
    assert len(results) == len(expecteds) == len(kinds)
    for got, want, kind in zip(results, expecteds, kinds):
        if kind == "exact":
            assert_same_values(got, want)
        else:
            assert_same_to_rounding(got, want, kind)


def run_concurrently(functions, n_threads, rounds):
    """Each thread calls every function `rounds` times, starting at its own offset.

    All threads are released together. Returns, per thread, a list of
    (function index, result); re-raises the first error of any thread.
    """
    barrier = threading.Barrier(n_threads)
    outcomes = [[] for _ in range(n_threads)]
    errors = []

    def worker(slot):
        try:
            barrier.wait()
            for _ in range(rounds):
                for step in range(len(functions)):
                    index = (slot + step) % len(functions)
                    outcomes[slot].append((index, functions[index]()))
        except BaseException as exc:  # reported in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return outcomes


def test_every_op_from_eight_threads_at_once(backend):
    tasks = []
    # On the simulator, where each call is slow: one input set per dtype.
    for seed in range(1 if is_simulated(backend) else 2):
        for dtype in (np.float32, np.float64):
            tasks += make_tasks(backend, seed, dtype)
    calls = [call for call, _ in tasks]
    serial = [call() for call in calls]
    rounds = 1 if is_simulated(backend) else 2
    outcomes = run_concurrently(calls, N_THREADS, rounds)
    for per_thread in outcomes:
        assert len(per_thread) == len(calls) * rounds
        for index, result in per_thread:
            assert_same_result(result, serial[index], tasks[index][1])


def test_default_thread_count_is_the_cpus_available():
    assert fastsoftmax.get_num_threads() == len(os.sched_getaffinity(0))


@pytest.fixture
def restore_threads():
    from fastsoftmax import _threads

    saved = _threads._num_threads
    yield
    _threads._num_threads = saved


def test_set_and_get(restore_threads):
    for n in (1, 3, 64):
        fastsoftmax.set_num_threads(n)
        assert fastsoftmax.get_num_threads() == n
    fastsoftmax.set_num_threads(np.int64(2))
    assert fastsoftmax.get_num_threads() == 2
    assert type(fastsoftmax.get_num_threads()) is int


@pytest.mark.parametrize(
    "bad, error",
    [
        (0, ValueError),
        (-2, ValueError),
        (1.0, TypeError),
        ("2", TypeError),
        (True, TypeError),
        (None, TypeError),
    ],
)
def test_bad_thread_counts(restore_threads, bad, error):
    fastsoftmax.set_num_threads(3)
    with pytest.raises(error) as info:
        fastsoftmax.set_num_threads(bad)
    assert info.type is error
    assert fastsoftmax.get_num_threads() == 3


def test_results_do_not_depend_on_the_thread_count(host_backend, restore_threads):
    tasks = make_tasks(host_backend, 7, np.float32) + make_tasks(host_backend, 8, np.float64)
    fastsoftmax.set_num_threads(1)
    one = [call() for call, _ in tasks]
    for n in (2, 5):
        fastsoftmax.set_num_threads(n)
        for (call, kinds), expected in zip(tasks, one):
            assert_same_result(call(), expected, kinds)


def test_thread_count_is_read_on_every_call_and_stays_ours(restore_threads):
    # Setting it changes neither Numba's own setting nor the result.
    if not fastsoftmax.backends()["numba-parallel"].available:
        pytest.skip("the numba-parallel backend is not available here")
    import numba

    before = numba.get_num_threads()
    x = np.random.default_rng(9).normal(size=(256, 256))
    for n in (1, 2):
        fastsoftmax.set_num_threads(n)
        p = fastsoftmax.softmax(x, backend="numba-parallel")
        assert_matches_reference(p, reference.softmax(x), "probability")
        assert numba.get_num_threads() == before


def compiled_host_backends():
    available = [n for n, info in fastsoftmax.backends().items() if info.available]
    return [n for n in ("c", "numba", "numba-parallel") if n in available]


def longest_stall_while(call):
    """(longest pause of this thread while `call` runs in another, duration of `call`)."""
    finished = threading.Event()
    duration = []

    def work():
        t0 = time.perf_counter()
        call()
        duration.append(time.perf_counter() - t0)
        finished.set()

    worker = threading.Thread(target=work)
    longest, last = 0.0, time.perf_counter()
    worker.start()
    while not finished.is_set():
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    worker.join()
    return longest, duration[0]


@pytest.mark.parametrize("backend", compiled_host_backends())
def test_kernels_release_the_gil(backend, restore_threads):
    # While a kernel works through a long row in one thread, this thread keeps
    # running: its longest pause stays far below the call's duration. (A
    # kernel that holds the GIL pauses it for the whole call.)
    fastsoftmax.set_num_threads(1)
    x = np.zeros((1, 1 << 28), dtype=np.float32)  # 1 GiB of zero-mapped pages
    target = np.zeros(1, dtype=np.int64)
    for call in (
        lambda: fastsoftmax.logsumexp(x, backend=backend),
        lambda: fastsoftmax.cross_entropy(x, target, backend=backend),
    ):
        call()  # compile outside the measurement
        longest, duration = longest_stall_while(call)
        assert duration > 0.05, "the call is too short to tell"
        assert longest < duration / 2, (longest, duration)


def test_the_gil_measurement_sees_a_kernel_that_holds_it():
    import numba

    @numba.njit(nogil=False)
    def holds_the_gil(n):
        total = 0.0
        for i in range(n):
            total += math.sqrt(i)
        return total

    holds_the_gil(10)
    longest, duration = longest_stall_while(lambda: holds_the_gil(200_000_000))
    assert duration > 0.05
    assert longest > duration / 2, (longest, duration)
