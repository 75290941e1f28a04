"""The asv benchmark suite stays runnable and measures what it says it measures.

CI runs ``asv check`` and a quick ``asv run --python=same`` over one shape and
dtype of every benchmark (the full suite takes far longer), with asv's machine
file and results in a temporary directory. The in-process tests check that each
implementation the suite times computes its operation correctly, and that it is
skipped only where it really cannot run.
"""

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import fastsoftmax
import reference

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"

# A trimmed quick run at one shape and dtype: every benchmark function on the
# NumPy backend, and softmax on every implementation. Together with
# test_every_timed_call_computes_its_operation below, which builds every
# (implementation, operation, output) call in-process, this covers the suite in
# a couple of minutes.
SMOKE_SELECTION = [
    r"(time|peakmem)_\w+\('65536x128', 'float32', 'numpy'[,)]",
    r"track_gbps\('softmax', '65536x128', 'float32', 'numpy'\)",
    r"time_softmax\('65536x128', 'float32', ",
    r"time_small_call\('softmax', '(numpy|c)'\)",
]
IMPLEMENTATIONS = [
    "numpy",
    "c",
    "numba",
    "numba-parallel",
    "cuda",
    "numpy-naive",
    "scipy",
    "torch",
]
BENCHMARK_FUNCTIONS = [
    "time_softmax",
    "time_softmax_masked",
    "time_log_softmax",
    "time_logsumexp",
    "time_softmax_backward",
    "time_cross_entropy_grad",
    "time_softmax_topk",
    "track_gbps",
    "peakmem_softmax_alloc",
    "peakmem_cross_entropy_grad",
    "time_small_call",
]


@pytest.fixture(scope="module")
def asv(tmp_path_factory):
    """Run asv on the suite with its machine file and outputs in a temporary place."""
    tmp = tmp_path_factory.mktemp("asv")
    config = json.loads((BENCHMARKS / "asv.conf.json").read_text())
    config.update(
        repo=str(ROOT),
        benchmark_dir=str(BENCHMARKS / "benchmarks"),
        env_dir=str(tmp / "env"),
        results_dir=str(tmp / "results"),
        html_dir=str(tmp / "html"),
    )
    config_path = tmp / "asv.conf.json"
    config_path.write_text(json.dumps(config))
    env = dict(os.environ, HOME=str(tmp))

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "asv", *args, "--config", str(config_path)],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    machine = run("machine", "--yes")
    assert machine.returncode == 0, machine.stdout + machine.stderr
    return run


def test_asv_check_finds_no_problems(asv):
    result = asv("check", "--python=same")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "No problems found" in output, output


def test_quick_run_of_every_benchmark_has_no_error(asv):
    bench = [arg for regex in SMOKE_SELECTION for arg in ("--bench", regex)]
    result = asv("run", "--python=same", "--quick", "--show-stderr", *bench)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not re.search(r"\sfailed\s*$", output, flags=re.M), output
    assert "Traceback" not in output, output
    for name in BENCHMARK_FUNCTIONS:
        assert re.search(rf"\.{name}\s+ok\s*$", output, flags=re.M), f"{name} did not run"
    # The NumPy backend is always there, so its row must hold a time, not n/a.
    assert re.search(r"65536x128\s+float32\s+numpy\s+new\s+[\d.]+\S*s\b", output), output


@pytest.fixture(scope="module")
def suite():
    """The benchmark package's ``implementations`` module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCHMARKS))
        yield importlib.import_module("benchmarks.implementations")


def test_implementation_axis_covers_every_backend(suite):
    assert suite.common.BACKENDS == list(fastsoftmax.backends())
    assert suite.common.IMPLEMENTATIONS == IMPLEMENTATIONS


def expected_skips(impl, operations):
    """The (op, output) pairs an implementation may skip on this machine."""
    everything = {(op, output) for op in operations for output in ("new", "out")}
    no_out = {("softmax_topk", "out")}
    if impl in fastsoftmax.backends():
        runs = fastsoftmax.backends()[impl].available
        if impl == "cuda":
            runs = runs and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1"
        return no_out if runs else everything
    if impl == "numpy-naive":
        return no_out
    if impl == "scipy":
        return everything - {(op, "new") for op in ("softmax", "log_softmax", "logsumexp")}
    try:
        importlib.import_module("torch")
    except ImportError:
        return everything
    return no_out | {("cross_entropy", "out")}


def as_numpy(result):
    """A call's result as a list of NumPy arrays, whatever array type it came in."""
    parts = list(result) if isinstance(result, tuple) else [result]
    arrays = []
    for part in parts:
        if hasattr(part, "copy_to_host"):
            part = part.copy_to_host()
        elif hasattr(part, "detach"):
            part = part.detach().numpy()
        arrays.append(np.asarray(part))
    return arrays


def expected_results(op, inputs, k):
    if op == "softmax_backward":
        return [reference.softmax_backward(*inputs)]
    if op == "cross_entropy":
        return list(reference.cross_entropy(*inputs))
    if op == "softmax_topk":
        return list(reference.softmax_topk(inputs[0], k))
    return [getattr(reference, op)(inputs[0])]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_every_timed_call_computes_its_operation(suite, impl, dtype):
    shape = (6, 11)
    rtol = 1e-5 if dtype == "float32" else 1e-12
    skipped = set()
    for op in suite.OPERATIONS:
        for output in ("new", "out"):
            try:
                call = suite.build(op, impl, shape, dtype, output)
            except NotImplementedError:
                skipped.add((op, output))
                continue
            got = as_numpy(call())
            want = expected_results(op, suite.inputs(op, shape, dtype), suite.common.TOPK)
            assert len(got) == len(want), (op, output)
            for g, w in zip(got, want):
                np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol, err_msg=f"{op} {output}")
    assert skipped == expected_skips(impl, suite.OPERATIONS)


@pytest.mark.skipif(
    sysconfig.get_platform().split("-")[-1] not in ("x86_64", "amd64") or not shutil.which("cc"),
    reason="memory_floor.c is x86-64 C and needs a compiler named cc",
)
def test_memory_floor_builds_and_times_every_pass(tmp_path):
    program = tmp_path / "memory_floor"
    subprocess.run(
        ["cc", "-O2", "-march=native", "-pthread", str(BENCHMARKS / "memory_floor.c"),
         "-o", str(program)],
        check=True,
    )
    result = subprocess.run(
        [str(program), "100", "1003", "2", "3"], capture_output=True, text=True, check=True
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "100x1003 float32, 2 thread(s), best of 3"
    pattern = re.compile(r"  (.+?) +([0-9.]+) ns/element +([0-9.]+) GB/s$")
    passes = [pattern.match(line) for line in lines[1:]]
    assert [p.group(1) for p in passes if p] == [
        "read", "copy, streamed", "2 reads, streamed", "2 reads, cached"
    ]
    assert all(float(p.group(2)) > 0 for p in passes)
    bad = subprocess.run([str(program), "0", "10", "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "must be positive" in bad.stderr


@pytest.mark.parametrize("cadence, calls_per_turn", [("cold", 2), ("steady", 6)])
def test_side_by_side_turns_follow_the_cadence(monkeypatch, cadence, calls_per_turn):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when run as benchmarks/side_by_side.py
    side_by_side = importlib.import_module("side_by_side")
    monkeypatch.setattr(side_by_side, "PAUSE_SECONDS", 0.0)
    counts = {"a": 0, "b": 0}

    def counting(side):
        def call():
            counts[side] += 1

        return call

    best = side_by_side.best_seconds({"a": counting("a"), "b": counting("b")}, 3, cadence)
    assert counts == {"a": 3 * calls_per_turn, "b": 3 * calls_per_turn}
    assert set(best) == {"a", "b"} and all(0 <= t < 0.1 for t in best.values())
    assert side_by_side.parse_args(["--cadence", cadence]).cadence == cadence
