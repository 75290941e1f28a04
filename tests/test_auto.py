"""The ``auto`` policy: by where the array lives and how large the call is.

Tiny calls never wait for a JIT compile (they go to C, or NumPy without it);
large ones go to numba-parallel; GPU arrays go to cuda; the environment
variable overrides ``auto`` only; ``auto`` never fails while NumPy imports.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import _dispatch

SMALL = 12
LARGE = _dispatch.AUTO_PARALLEL_MIN_ELEMENTS


class FakeDeviceArray:
    """Looks like a GPU array to the API (it has __cuda_array_interface__)."""

    __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (0, False), "version": 3}
    shape = (2, 3)


@pytest.fixture
def availability(monkeypatch):
    """Pretend a chosen set of backends is available."""

    def pretend(names):
        def probe(name):
            if name in names:  # a stand-in module: these tests only choose
                return object(), _dispatch.BackendInfo(True, "", "test")
            return None, _dispatch.BackendInfo(False, "switched off by the test", None)

        monkeypatch.setattr(_dispatch, "_probe", probe)

    monkeypatch.delenv(_dispatch.ENVIRONMENT_VARIABLE, raising=False)
    return pretend


@pytest.mark.parametrize(
    "available, small, large",
    [
        ({"numpy", "c", "numba", "numba-parallel"}, "c", "numba-parallel"),
        ({"numpy", "c"}, "c", "c"),
        ({"numpy", "numba", "numba-parallel"}, "numpy", "numba-parallel"),
        ({"numpy"}, "numpy", "numpy"),
    ],
)
def test_auto_by_size(availability, available, small, large):
    availability(available)
    assert _dispatch.choose("auto", SMALL) == small
    assert _dispatch.choose("auto", LARGE) == large
    assert _dispatch.choose("auto", LARGE - 1) == small


def test_auto_sends_device_arrays_to_cuda(availability):
    availability({"numpy", "c"})
    assert _dispatch.choose("auto", 0, on_device=True) == "cuda"
    # ... and says so when cuda is missing, rather than copying to the host.
    with pytest.raises(RuntimeError, match="'cuda' is not available"):
        fastsoftmax.softmax(FakeDeviceArray())


@pytest.mark.parametrize("name", ["numpy", "c"])
def test_device_array_with_a_cpu_backend_is_refused(name):
    with pytest.raises(TypeError, match="lives on a GPU.*copy it to the host"):
        fastsoftmax.softmax(FakeDeviceArray(), backend=name)


def test_mixing_host_and_device_arrays_is_refused():
    with pytest.raises(TypeError, match="y lives on a GPU but the other arguments do not"):
        fastsoftmax.softmax_backward(np.ones((2, 3)), FakeDeviceArray(), backend="numpy")
    with pytest.raises(TypeError, match="target lives on a GPU"):
        fastsoftmax.cross_entropy(np.ones((2, 3)), FakeDeviceArray(), backend="numpy")


def test_environment_variable_overrides_auto_only(monkeypatch):
    used = []
    real_load = _dispatch.load

    def recording_load(name):
        used.append(name)
        return real_load(name)

    monkeypatch.setattr(_dispatch, "load", recording_load)
    monkeypatch.setenv(_dispatch.ENVIRONMENT_VARIABLE, "numpy")
    fastsoftmax.softmax(np.zeros((2, 3)))
    assert used[-1] == "numpy"
    available = [n for n, info in fastsoftmax.backends().items() if info.available and n != "numpy"]
    for name in available:
        if name == "cuda":
            continue
        fastsoftmax.softmax(np.zeros((2, 3)), backend=name)
        assert used[-1] == name
    monkeypatch.setenv(_dispatch.ENVIRONMENT_VARIABLE, "  ")
    assert _dispatch.choose("auto", SMALL) in _dispatch.HOST_BACKENDS


def test_a_tiny_auto_call_loads_no_jit():
    # A first, tiny call must not import Numba (let alone compile a kernel).
    code = """
        import json, sys
        import numpy as np
        import fastsoftmax
        x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
        fastsoftmax.softmax(x)
        fastsoftmax.log_softmax(x)
        fastsoftmax.logsumexp(x)
        fastsoftmax.softmax_topk(x, 2)
        fastsoftmax.softmax_backward(x, x)
        fastsoftmax.log_softmax_backward(x, x)
        fastsoftmax.cross_entropy(x, np.array([0, 2]), return_grad=True)
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "numba")))
    """
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
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
