"""The backend registry: which backends exist, which must be available, dispatch."""

import os

import numpy as np
import pytest

import fastsoftmax
from fastsoftmax import _dispatch

# Every backend that must build and load on the CI machines. A backend that
# silently failed to build turns this red instead of turning into skips. Set
# FASTSOFTMAX_EXPECTED_BACKENDS (comma-separated) on platforms that lack one.
DEFAULT_EXPECTED = {"numpy", "c", "numba", "numba-parallel"}


def expected_backends():
    names = os.environ.get("FASTSOFTMAX_EXPECTED_BACKENDS")
    expected = set(names.split(",")) if names else set(DEFAULT_EXPECTED)
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        expected.add("cuda")
    return expected


def test_exact_set_of_available_backends():
    info = fastsoftmax.backends()
    assert list(info) == ["numpy", "c", "numba", "numba-parallel", "cuda"]
    available = {name for name, entry in info.items() if entry.available}
    reasons = {name: entry.reason for name, entry in info.items() if not entry.available}
    assert available == expected_backends(), reasons


def test_unavailable_backends_say_why():
    for name, entry in fastsoftmax.backends().items():
        assert isinstance(entry.available, bool)
        if entry.available:
            assert entry.reason == ""
        else:
            assert entry.reason, name


def test_unknown_backend_lists_the_names():
    with pytest.raises(ValueError, match="numba-parallel"):
        fastsoftmax.softmax(np.zeros(3), backend="fortran")


def test_unavailable_backend_raises_runtime_error_with_reason(monkeypatch):
    real_probe = _dispatch._probe

    def probe(name):
        if name == "c":
            return None, _dispatch.BackendInfo(False, "no C compiler at install time", None)
        return real_probe(name)

    monkeypatch.setattr(_dispatch, "_probe", probe)
    with pytest.raises(RuntimeError, match="'c' is not available: no C compiler"):
        fastsoftmax.softmax(np.zeros(3), backend="c")
    # auto never fails while NumPy is importable
    np.testing.assert_allclose(fastsoftmax.softmax(np.zeros(2)), [0.5, 0.5])


def test_environment_variable_overrides_auto(monkeypatch):
    monkeypatch.setenv("FASTSOFTMAX_BACKEND", "fortran")
    with pytest.raises(ValueError, match="unknown backend"):
        fastsoftmax.softmax(np.zeros(3))
    monkeypatch.setenv("FASTSOFTMAX_BACKEND", "numpy")
    np.testing.assert_allclose(fastsoftmax.softmax(np.zeros(2)), [0.5, 0.5])


def test_backend_must_be_a_string():
    with pytest.raises(TypeError, match="backend must be a string"):
        fastsoftmax.softmax(np.zeros(3), backend=1)
