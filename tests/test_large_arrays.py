"""64-bit indexing: rows that start beyond 2**31 elements, and a row longer than 2**31.

Row offsets are tested cheaply on every backend: rows of a sparse memory-mapped
file lie 2**31 + 5 elements apart (16 GiB of address space, a few pages of
disk), so a kernel computing row offsets in 32 bits reads the wrong memory.
One row of 2**31 + 7 float32 zeros (8 GiB of untouched, zero-mapped pages)
tests indices within a row on the compiled CPU backends.
"""

import numpy as np
import pytest

import fastsoftmax
import reference
from strategies import (
    assert_close_scaled,
    assert_cross_entropy_close,
    assert_matches_reference,
    assert_same_values,
    is_simulated,
)

ROW_STRIDE = 2**31 + 5  # elements between row starts: beyond int32
CLASSES = 16


@pytest.fixture
def huge_strided(tmp_path):
    """Three rows 2**31 + 5 elements apart in a sparse file, their values, and a
    second such view (for outputs)."""
    total = 2 * ROW_STRIDE + CLASSES
    maps = [
        np.memmap(tmp_path / name, dtype=np.float32, mode="w+", shape=(total,))
        for name in ("in", "out")
    ]
    views = [
        np.lib.stride_tricks.as_strided(m, shape=(3, CLASSES), strides=(4 * ROW_STRIDE, 4))
        for m in maps
    ]
    values = np.random.default_rng(51).normal(scale=3, size=(3, CLASSES)).astype(np.float32)
    views[0][...] = values
    views[1][...] = np.nan
    yield views[0], values, views[1]
    del maps, views
    for name in ("in", "out"):
        (tmp_path / name).unlink()  # the mappings go with their last array


def test_rows_beyond_2_31_elements(backend, huge_strided):
    x, values, out = huge_strided
    for view, expected_values in ((x, values), (x[::-1], values[::-1])):
        p = fastsoftmax.softmax(view, backend=backend)
        assert_matches_reference(p, reference.softmax(expected_values), "probability")
        logp = fastsoftmax.log_softmax(view, backend=backend)
        assert_matches_reference(logp, reference.log_softmax(expected_values), "log")
        lse = fastsoftmax.logsumexp(view, backend=backend)
        assert_matches_reference(lse, reference.logsumexp(expected_values), "log")
        probs, index = fastsoftmax.softmax_topk(view, 3, backend=backend)
        expected_probs, expected_index = reference.softmax_topk(expected_values, 3)
        assert_same_values(index, expected_index)
        assert_matches_reference(probs, expected_probs, "probability")
        back = fastsoftmax.softmax_backward(view, p, backend=backend)
        assert_close_scaled(back, reference.softmax_backward(expected_values, p), 10.0, np.float32)
        target = np.array([0, 5, 15])
        loss, grad = fastsoftmax.cross_entropy(
            view, target, reduction="none", return_grad=True, backend=backend
        )
        expected_loss, expected_grad = reference.cross_entropy(
            expected_values, target, reduction="none"
        )
        assert_cross_entropy_close(
            loss, grad, expected_loss, expected_grad, expected_values, target, "none"
        )
    # Outputs far apart too, and in place.
    assert fastsoftmax.softmax(x, out=out, backend=backend) is out
    assert_matches_reference(out, reference.softmax(values), "probability")
    fastsoftmax.log_softmax(x, out=x, backend=backend)
    assert_matches_reference(x, reference.log_softmax(values), "log")


def compiled_host_backends():
    available = [n for n, info in fastsoftmax.backends().items() if info.available]
    # The NumPy backend works a whole row at a time with row-sized temporaries
    # (16 GiB here); NumPy's own indexing is 64-bit. The CUDA simulator would
    # copy 8 GiB through Python.
    return [n for n in ("c", "numba", "numba-parallel") if n in available]


@pytest.mark.slow
@pytest.mark.parametrize("backend", compiled_host_backends())
def test_a_row_longer_than_2_31(backend):
    assert not is_simulated(backend)
    n = 2**31 + 7
    x = np.zeros(n, dtype=np.float32)  # calloc: zero pages, nothing resident
    lse = fastsoftmax.logsumexp(x, backend=backend)
    # A 32-bit count would wrap to a few elements (lse near ln 7) or none
    # (-inf); a float32 running sum would stall at 2**24 (lse near 16.6).
    assert lse == pytest.approx(np.log(n), rel=1e-6)
