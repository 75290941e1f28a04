"""The numpydoc Examples of the public API run as doctests, so ``pytest`` alone runs them.

Every function a public module exports (``__all__`` of ``fastsoftmax`` and of
``fastsoftmax.dask``) must have an Examples section; every docstring of every
public module (no leading underscore in its dotted name) that has examples must
pass.
"""

import doctest
import importlib
import inspect
import pkgutil

import pytest

import fastsoftmax

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
API_MODULES = ["fastsoftmax", "fastsoftmax.dask"]


def public_modules():
    names = ["fastsoftmax"]
    for info in pkgutil.walk_packages(fastsoftmax.__path__, "fastsoftmax."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def exported_functions():
    params = []
    for module_name in API_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                params.append(pytest.param(obj, id=f"{module_name}.{name}"))
    return params


def run_examples(test):
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.parametrize("function", exported_functions())
def test_every_exported_function_has_passing_examples(function):
    tests = [
        t for t in doctest.DocTestFinder().find(function, function.__name__, globs={}) if t.examples
    ]
    assert tests, f"{function.__module__}.{function.__name__} has no Examples"
    for test in tests:
        results = run_examples(test)
        assert (
            results.failed == 0
        ), f"{results.failed} of {results.attempted} examples failed in {test.name}"


@pytest.mark.parametrize("module_name", public_modules())
def test_docstring_examples_of_public_modules(module_name):
    module = importlib.import_module(module_name)
    for test in doctest.DocTestFinder().find(module, module_name, globs={}):
        if test.examples:
            results = run_examples(test)
            assert (
                results.failed == 0
            ), f"{results.failed} of {results.attempted} examples failed in {test.name}"


def test_the_expected_functions_are_exported():
    # A public function dropped from __all__ would silently lose its doctest.
    expected = {
        "softmax",
        "log_softmax",
        "logsumexp",
        "softmax_backward",
        "log_softmax_backward",
        "cross_entropy",
        "softmax_topk",
        "backends",
        "set_num_threads",
        "get_num_threads",
    }
    exported = {n for n in fastsoftmax.__all__ if inspect.isfunction(getattr(fastsoftmax, n))}
    assert expected <= exported
