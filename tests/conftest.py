"""Shared fixtures: every test that takes ``backend`` runs on every available backend."""

import os

import hypothesis
import pytest

import fastsoftmax

hypothesis.settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, print_blob=True
)
hypothesis.settings.register_profile("dev", max_examples=200, deadline=None)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

AVAILABLE_BACKENDS = [name for name, info in fastsoftmax.backends().items() if info.available]


def backend_params(names=AVAILABLE_BACKENDS):
    """pytest params for backend names; the cuda one carries the ``cuda`` mark."""
    return [pytest.param(n, marks=pytest.mark.cuda, id=n) if n == "cuda" else pytest.param(n, id=n) for n in names]


@pytest.fixture(params=backend_params())
def backend(request):
    """Name of an available backend."""
    return request.param


@pytest.fixture(params=backend_params([n for n in AVAILABLE_BACKENDS if n != "cuda"]))
def host_backend(request):
    """Name of an available CPU backend."""
    return request.param
