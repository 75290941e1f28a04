"""``import fastsoftmax`` is cheap and has no side effects: it loads no backend,
compiles nothing, changes no global setting, and costs under 0.3 s beyond
importing NumPy and Numba. Each check runs in a fresh interpreter."""

import json
import os
import subprocess
import sys
import textwrap

IMPORT_BUDGET_S = 0.3
REPEATS = 5


def run_python(code):
    """Run `code` in a fresh interpreter and return what it printed as JSON."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FASTSOFTMAX_", "NUMBA_ENABLE_CUDASIM"))
    }
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_loads_no_backend():
    loaded = run_python("""
        import json, sys
        import fastsoftmax
        print(json.dumps(sorted(sys.modules)))
        """)
    heavy = [m for m in loaded if m.split(".")[0] in ("numba", "cffi", "scipy", "torch", "dask")]
    assert heavy == [], heavy
    assert "fastsoftmax._fastsoftmax_c" not in loaded
    backends = [m for m in loaded if m.startswith("fastsoftmax._backends.")]
    assert backends == [], backends


def test_import_cost_beyond_numpy_and_numba():
    timings = []
    for _ in range(REPEATS):
        timings.append(run_python("""
                import json, time
                start = time.perf_counter()
                import numpy, numba
                middle = time.perf_counter()
                import fastsoftmax
                end = time.perf_counter()
                print(json.dumps([middle - start, end - middle]))
                """))
    cost = min(extra for _, extra in timings)
    assert cost < IMPORT_BUDGET_S, f"import fastsoftmax took {cost:.3f} s beyond numpy and numba"


def test_import_changes_no_global_state():
    changed = run_python("""
        import json, os, warnings
        import numpy as np
        before = (np.geterr(), np.get_printoptions(), list(warnings.filters), dict(os.environ))
        import fastsoftmax
        after = (np.geterr(), np.get_printoptions(), list(warnings.filters), dict(os.environ))
        names = ("numpy error handling", "numpy print options", "warning filters", "environment")
        print(json.dumps([n for n, b, a in zip(names, before, after) if b != a]))
        """)
    assert changed == []


def test_asking_for_backends_compiles_nothing():
    # backends() imports the backend modules to ask them; no kernel may compile.
    compiled = run_python("""
        import json, sys
        import fastsoftmax
        info = fastsoftmax.backends()
        from numba.core.dispatcher import Dispatcher
        compiled = []
        dispatchers = 0
        for name, module in list(sys.modules.items()):
            if not name.startswith("fastsoftmax"):
                continue
            for attr, value in vars(module).items():
                if isinstance(value, Dispatcher):
                    dispatchers += 1
                    if value.overloads:
                        compiled.append(f"{name}.{attr}")
        print(json.dumps([info["numba"].available, dispatchers, compiled]))
        """)
    numba_available, dispatchers, names = compiled
    assert names == []
    if numba_available:
        assert dispatchers > 0  # the check looked at the Numba kernels
