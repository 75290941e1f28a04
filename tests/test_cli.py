"""The ``fastsoftmax`` command line, run as a user runs it: in a subprocess, on small files.

Every test runs in its own temporary directory (the current directory of the
test and of the commands it starts), so file names are short and relative.
"""

import importlib.util
import os
import pty
import re
import signal
import subprocess
import sys
import sysconfig
import textwrap

import numpy as np
import pytest

import fastsoftmax

TIMEOUT = 120


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args, env=None):
    """Run ``python -m fastsoftmax ARGS`` and return the finished process."""
    command = [sys.executable, "-m", "fastsoftmax", *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)


def run_python(code, *args):
    """Run a Python snippet in a fresh interpreter (to inject failures, inspect modules)."""
    command = [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)


def assert_ok(result):
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress line when stderr is not a terminal


def assert_clean_error(result, fragment):
    """Exit status 2 and exactly one line on stderr, ``fastsoftmax: error: ...``."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fastsoftmax: error: "), lines[0]
    assert fragment in lines[0]


def logits(rows=203, classes=17, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((rows, classes)) * 3).astype(dtype)


def save(path, array):
    np.save(path, array)
    return path


def leftovers():
    """Hidden temporary files that runs left in the current directory."""
    return sorted(name for name in os.listdir() if name.endswith(".part"))


def topk(k, *options, source="x.npy"):
    """``score --op topk`` into p.npy and i.npy; returns the process."""
    outputs = ("-o", "p.npy", "--indices", "i.npy")
    return cli("score", source, *outputs, "--op", "topk", "--k", k, *options)


# ---------------------------------------------------------------- score: results


@pytest.mark.parametrize("op", ["softmax", "log_softmax", "logsumexp"])
def test_score_in_batches_equals_the_in_memory_result(host_backend, op):
    x = logits()
    save("x.npy", x)
    options = ("--op", op, "--batch-rows", 50, "--backend", host_backend)
    assert_ok(cli("score", "x.npy", "-o", "y.npy", *options))
    expected = getattr(fastsoftmax, op)(x, backend=host_backend)
    got = np.load("y.npy")
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert leftovers() == []


def test_score_default_op_is_softmax_and_rows_sum_to_one():
    x = logits(rows=64, classes=5)
    assert_ok(cli("score", save("x.npy", x), "-o", "p.npy"))
    p = np.load("p.npy")
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(p, fastsoftmax.softmax(x))


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_score_temperature(op):
    x = logits()
    save("x.npy", x)
    options = ("--op", op, "--temperature", 2.5, "--batch-rows", 64)
    assert_ok(cli("score", "x.npy", "-o", "y.npy", *options))
    np.testing.assert_array_equal(np.load("y.npy"), getattr(fastsoftmax, op)(x, temperature=2.5))


def test_score_topk_writes_probabilities_and_indices():
    x = logits()
    x[5, :4] = 1.0  # ties go to the lower index
    save("x.npy", x)
    assert_ok(topk(3, "--temperature", 0.7, "--batch-rows", 40))
    probs, indices = fastsoftmax.softmax_topk(x, 3, temperature=0.7)
    got_probs, got_indices = np.load("p.npy"), np.load("i.npy")
    assert got_probs.dtype == np.float32 and got_indices.dtype == np.int64
    np.testing.assert_array_equal(got_probs, probs)
    np.testing.assert_array_equal(got_indices, indices)


def test_score_dtype_option():
    x = logits()
    save("x.npy", x)
    assert_ok(cli("score", "x.npy", "-o", "y.npy", "--dtype", "float64", "--batch-rows", 30))
    y = np.load("y.npy")
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, fastsoftmax.softmax(x, dtype=np.float64))

    assert_ok(cli("score", "x.npy", "-o", "h.npy", "--op", "logsumexp", "--dtype", "float16"))
    np.testing.assert_array_equal(np.load("h.npy"), fastsoftmax.logsumexp(x, dtype=np.float16))

    # topk computes in the requested dtype's precision, as softmax(dtype=...) does
    assert_ok(topk(2, "--dtype", "float64"))
    probs, indices = fastsoftmax.softmax_topk(x.astype(np.float64), 2)
    assert np.load("p.npy").dtype == np.float64
    np.testing.assert_array_equal(np.load("p.npy"), probs)
    np.testing.assert_array_equal(np.load("i.npy"), indices)


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param(lambda x: x.astype(np.float16), id="float16"),
        pytest.param(lambda x: x.astype(">f8"), id="big-endian-float64"),
        pytest.param(lambda x: (x * 10).astype(np.int16), id="int16"),
        pytest.param(lambda x: np.asfortranarray(x), id="fortran-order"),
    ],
)
def test_score_input_dtypes_and_layouts(layout):
    x = layout(logits())
    save("x.npy", x)
    assert_ok(cli("score", "x.npy", "-o", "y.npy", "--batch-rows", 64))
    expected = fastsoftmax.softmax(x)
    got = np.load("y.npy")
    assert got.dtype == expected.dtype  # float16 stays float16, integers give float64
    np.testing.assert_array_equal(got, expected)


def test_score_empty_inputs():
    assert_ok(cli("score", save("rows.npy", np.zeros((0, 4), np.float32)), "-o", "a.npy"))
    assert np.load("a.npy").shape == (0, 4)
    assert_ok(cli("score", save("cols.npy", np.zeros((3, 0))), "-o", "b.npy", "--op", "logsumexp"))
    np.testing.assert_array_equal(np.load("b.npy"), [-np.inf] * 3)


def test_console_script_and_module_agree():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "fastsoftmax"]
    assert script.value == "fastsoftmax.cli:main"
    executable = os.path.join(sysconfig.get_path("scripts"), "fastsoftmax")
    result = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"fastsoftmax {fastsoftmax.__version__}"
    assert cli("--version").stdout == result.stdout


# ---------------------------------------------------------------- score: files on disk


def test_score_refuses_to_overwrite_without_the_option(in_tmp_path):
    save("x.npy", logits())
    (in_tmp_path / "y.npy").write_bytes(b"keep me")
    assert_clean_error(cli("score", "x.npy", "-o", "y.npy"), "--overwrite")
    assert (in_tmp_path / "y.npy").read_bytes() == b"keep me"

    (in_tmp_path / "i.npy").write_bytes(b"keep me too")
    assert_clean_error(topk(2), "i.npy")
    assert (in_tmp_path / "i.npy").read_bytes() == b"keep me too"
    assert not os.path.exists("p.npy")

    assert_ok(cli("score", "x.npy", "-o", "y.npy", "--overwrite"))
    np.testing.assert_array_equal(np.load("y.npy"), fastsoftmax.softmax(np.load("x.npy")))


# A run whose library call fails on the third batch, after two batches were written.
FAIL_MID_WAY = """
    import os, signal, sys
    import fastsoftmax
    from fastsoftmax.cli import main

    how = sys.argv[1]
    real, calls = fastsoftmax.softmax, []

    def failing_softmax(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            if how == "error":
                raise ValueError("injected failure")
            if how == "interrupt":
                raise KeyboardInterrupt
            os.kill(os.getpid(), getattr(signal, how))
        return real(*args, **kwargs)

    fastsoftmax.softmax = failing_softmax
    sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    "how, status", [("error", 2), ("interrupt", 130), ("SIGTERM", 128 + signal.SIGTERM)]
)
def test_score_failure_mid_way_leaves_no_file(how, status):
    save("x.npy", logits())
    result = run_python(FAIL_MID_WAY, how, "score", "x.npy", "-o", "y.npy", "--batch-rows", 20)
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists("y.npy")
    assert leftovers() == []


def test_score_failure_keeps_the_previous_output():
    save("x.npy", logits())
    save("y.npy", np.arange(3.0))
    options = ("--batch-rows", 20, "--overwrite")
    result = run_python(FAIL_MID_WAY, "error", "score", "x.npy", "-o", "y.npy", *options)
    assert_clean_error(result, "injected failure")
    np.testing.assert_array_equal(np.load("y.npy"), np.arange(3.0))
    assert leftovers() == []


def test_score_killed_mid_way_never_leaves_a_partial_file_under_the_name():
    save("x.npy", logits())
    result = run_python(
        FAIL_MID_WAY, "SIGKILL", "score", "x.npy", "-o", "y.npy", "--batch-rows", 20
    )
    assert result.returncode == -signal.SIGKILL
    assert not os.path.exists("y.npy")
    (temporary,) = leftovers()  # only a hidden temporary file survives a SIGKILL
    assert temporary.startswith(".y.npy.")


def test_score_full_disk_is_a_clean_error():
    code = """
        import errno, os, sys
        from fastsoftmax.cli import main

        def no_space(fd, offset, length):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        os.posix_fallocate = no_space
        sys.exit(main(sys.argv[1:]))
    """
    save("x.npy", logits())
    assert_clean_error(run_python(code, "score", "x.npy", "-o", "y.npy"), "No space left on device")
    assert not os.path.exists("y.npy")
    assert leftovers() == []


# ---------------------------------------------------------------- score: errors


def _make_bad_input(case, directory):
    """Write the input of one bad-input case; returns its path."""
    if case == "truncated":
        save("t.npy", logits())
        with open("t.npy", "r+b") as file:
            file.truncate(400)
        return "t.npy"
    if case == "text":
        with open("text.npy", "w") as file:
            file.write("0.1, 0.2, 0.7\n")
        return "text.npy"
    if case == "npz":
        np.savez("a.npz", x=logits())
        return "a.npz"
    if case == "object":
        np.save("o.npy", np.array([[{}, 1]], dtype=object), allow_pickle=True)
        return "o.npy"
    arrays = {
        "1-D": np.zeros(5, np.float32),
        "3-D": np.zeros((2, 3, 4), np.float32),
        "complex": np.zeros((2, 3), np.complex64),
        "structured": np.zeros((2, 3), "f4,i4"),
        "string": np.full((2, 3), "a"),
    }
    if case in arrays:
        return save(f"{case}.npy", arrays[case])
    return {"missing": "missing.npy", "directory": str(directory)}[case]


@pytest.mark.parametrize(
    "case, fragment",
    [
        ("missing", "not found"),
        ("directory", "directory"),
        ("text", "not a .npy file"),
        ("npz", "not a .npy file"),
        ("truncated", "truncated"),
        ("1-D", "2-D"),
        ("3-D", "2-D"),
        ("complex", "complex64"),
        ("object", "object"),
        ("structured", "unsupported dtype"),
        ("string", "unsupported dtype"),
    ],
)
def test_score_bad_input_is_a_clean_error(in_tmp_path, case, fragment):
    source = _make_bad_input(case, in_tmp_path)
    before = sorted(os.listdir())
    assert_clean_error(cli("score", source, "-o", "y.npy"), fragment)
    assert sorted(os.listdir()) == before


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--op", "topk", "--k", 0, "--indices", "i.npy"], "--k"),
        (["--op", "topk", "--k", 18, "--indices", "i.npy"], "--k must be between 1 and"),
        (["--op", "topk", "--k", "two", "--indices", "i.npy"], "--k"),
        (["--op", "topk", "--indices", "i.npy"], "needs --k"),
        (["--op", "topk", "--k", 2], "needs --indices"),
        (["--k", 2], "only to --op topk"),
        (["--indices", "i.npy"], "only to --op topk"),
        (["--op", "logsumexp", "--temperature", 2], "does not apply"),
        (["--temperature", 0], "finite and > 0"),
        (["--temperature", "inf"], "finite and > 0"),
        (["--op", "argmax"], "invalid choice"),
        (["--dtype", "int32"], "invalid choice"),
        (["--backend", "fortran"], "invalid choice"),
        (["--batch-rows", -3], "positive integer"),
        (["--op", "topk", "--k", 2, "--indices", "y.npy"], "same file"),
    ],
)
def test_score_bad_options_are_clean_errors(options, fragment):
    save("x.npy", logits(classes=17))
    assert_clean_error(cli("score", "x.npy", "-o", "y.npy", *options), fragment)
    assert os.listdir() == ["x.npy"]


def test_score_output_directory_must_exist():
    save("x.npy", logits())
    assert_clean_error(cli("score", "x.npy", "-o", "no/y.npy"), "does not exist")


def test_score_unknown_or_unavailable_backend_is_a_clean_error():
    save("x.npy", logits())
    env = dict(os.environ, FASTSOFTMAX_BACKEND="fortran")
    assert_clean_error(cli("score", "x.npy", "-o", "y.npy", env=env), "fortran")
    code = """
        import sys
        from fastsoftmax import _dispatch
        from fastsoftmax.cli import main

        real_probe = _dispatch._probe

        def probe(name):
            if name == "c":
                return None, _dispatch.BackendInfo(False, "no C compiler at install time", None)
            return real_probe(name)

        _dispatch._probe = probe
        sys.exit(main(sys.argv[1:]))
    """
    result = run_python(code, "score", "x.npy", "-o", "y.npy", "--backend", "c")
    assert_clean_error(result, "backend 'c' is not available: no C compiler at install time")
    assert not os.path.exists("y.npy")


def test_usage_errors_are_one_line():
    assert_clean_error(cli(), "required: command")
    assert_clean_error(cli("frobnicate"), "invalid choice")


# ---------------------------------------------------------------- score: progress


def _run_on_terminal(*args):
    """Run the command line with stderr on a pseudo-terminal; returns (status, stderr)."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "fastsoftmax", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the terminal's last writer closed it
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    return process.wait(timeout=TIMEOUT), output.decode()


def test_score_progress_line_only_on_a_terminal_and_not_quiet():
    save("x.npy", logits(rows=2000))
    status, shown = _run_on_terminal("score", "x.npy", "-o", "a.npy", "--batch-rows", 100)
    assert status == 0
    assert "\r" in shown and "rows/s" in shown and "GB/s" in shown
    assert "softmax: 2,000 rows in" in shown  # the summary that stays on screen
    status, shown = _run_on_terminal("score", "x.npy", "-o", "b.npy", "--quiet")
    assert status == 0 and shown == ""


# ---------------------------------------------------------------- no heavy imports


def test_import_fastsoftmax_does_not_load_the_command_line():
    result = run_python("""
        import sys, fastsoftmax
        print(sorted(m for m in sys.modules if m.startswith("fastsoftmax.cli")))
    """)
    assert result.stdout.strip() == "[]", result.stderr


INSPECT_IMPORTS = """
    import sys
    from fastsoftmax.cli import main

    status = main(sys.argv[1:])
    loaded = {m.split(".")[0] for m in sys.modules}
    # Numba's own __init__ imports SciPy when it is installed; nothing else may.
    scipy = "scipy" in loaded and "numba" not in loaded
    print("torch:", "torch" in loaded, "scipy:", scipy, "matplotlib:", "matplotlib" in loaded)
    print("status:", status)
"""


@pytest.mark.parametrize("command", [["info"], ["score", "x.npy", "-o", "y.npy"]])
def test_info_and_score_never_import_torch_or_scipy(command):
    save("x.npy", logits())
    result = run_python(INSPECT_IMPORTS, *command)
    assert result.stdout.strip().splitlines()[-2:] == [
        "torch: False scipy: False matplotlib: False",
        "status: 0",
    ], result.stderr


# ---------------------------------------------------------------- info


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.split(":")[0].strip() in ("flags", "Features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def test_info_reports_every_field(in_tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(in_tmp_path / "numba-cache"))
    result = cli("info", env=env)
    assert_ok(result)
    lines = result.stdout.splitlines()
    assert lines[0] == f"fastsoftmax {fastsoftmax.__version__}"
    for name, entry in fastsoftmax.backends().items():
        (line,) = [text for text in lines if text.startswith("  ") and text.split()[0] == name]
        assert line.split()[1] == ("available" if entry.available else "unavailable")
        assert entry.available or entry.reason in line
    fields = dict(text.split(": ", 1) for text in lines if ": " in text and text[0] != " ")
    assert fields["threads"].startswith(f"{fastsoftmax.get_num_threads()} ")
    assert fields["threading layer"].split()[0] in ("omp", "tbb", "workqueue")
    flags = _cpu_flags()
    if flags is not None:  # the SIMD line agrees with /proc/cpuinfo
        present = fields["simd"].split(";")[0].split()
        for feature in ("avx2", "fma", "avx512f", "asimd", "sve"):
            assert (feature in present) == (feature in flags)
    assert fields["numba cache"].startswith(str(in_tmp_path / "numba-cache"))
    assert "NUMBA_CACHE_DIR" in fields["numba cache"]


# ---------------------------------------------------------------- bench


def test_bench_quick_times_every_backend_and_the_peers_and_plots(in_tmp_path):
    result = cli("bench", "--quick", "--shapes", "64x10,8x300", "--threads", 1, "--plot", "b.png")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "threads: 1 " in out
    # Cells are separated by at least two spaces; peers read "name (peer)".
    table = [re.split(r"\s{2,}", line) for line in out[out.index("\nop ") :].strip().splitlines()]
    assert table[0] == ["op", "shape", "implementation", "ms", "GB/s", "vs best peer"]
    available = [n for n, e in fastsoftmax.backends().items() if e.available and n != "cuda"]
    peers = ["numpy-naive (peer)"]
    peers += [f"{name} (peer)" for name in ("scipy", "torch") if importlib.util.find_spec(name)]
    for op in ("softmax", "cross_entropy"):
        for shape in ("64x10", "8x300"):
            rows = {row[2]: row[3:] for row in table if row[:2] == [op, shape]}
            expected_peers = [p for p in peers if not (op == "cross_entropy" and "scipy" in p)]
            assert set(rows) == set(available) | set(expected_peers)
            for name, (ms, gb_per_s, *ratio) in rows.items():
                assert float(ms) > 0 and float(gb_per_s) > 0
                if name in available:  # ratio to the best peer, e.g. "1.37x"
                    assert ratio[0].endswith("x") and float(ratio[0][:-1]) > 0
                else:
                    assert ratio == []
    assert (in_tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--shapes", "10by10"], "expected shapes"),
        (["--ops", "softmax,argmax"], "unknown name argmax"),
        (["--threads", 0], "positive integer"),
        (["--plot", "no/chart.png"], "directory does not exist"),
    ],
)
def test_bench_bad_options_are_clean_errors(options, fragment):
    assert_clean_error(cli("bench", *options), fragment)
