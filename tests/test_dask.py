"""fastsoftmax.dask against the float64 reference, on the threaded scheduler and on
a real two-process ``distributed.LocalCluster``.

Every operation runs on row-chunked, class-chunked and ragged chunk layouts
(and a class chunk of width zero), with the rows of the numerics table placed
so that special values meet chunk boundaries: a chunk of only ``-inf`` next to
finite chunks, NaN in one chunk and ``+inf`` in another, ties across chunks,
huge logits. A scheduler callback and a scheduler plugin check that no task
holds more than a chunk of the input.
"""

import math
import pathlib
import pickle
import re
import subprocess
import sys

import dask
import dask.array as da
import distributed
import hypothesis
import numpy as np
import pytest
from dask.callbacks import Callback
from dask.sizeof import sizeof
from distributed.diagnostics.plugin import SchedulerPlugin
from hypothesis import strategies as st

import fastsoftmax
import fastsoftmax.dask as fsd
import reference
import strategies
from strategies import assert_close_scaled, assert_matches_reference

ROOT = pathlib.Path(__file__).resolve().parent.parent
INF, NAN = np.inf, np.nan
N_ROWS, N_CLASSES = 14, 11

# Row chunks, class chunks. "classes" splits at columns 4 and 8, "ragged" at
# 2, 8 and 9 (a one-class chunk); "empty_chunk" holds a chunk of width zero.
LAYOUTS = {
    "rows": ((4, 5, 5), (11,)),
    "classes": ((14,), (4, 4, 3)),
    "ragged": ((1, 8, 5), (2, 6, 1, 2)),
    "empty_chunk": ((6, 8), (5, 0, 6)),
}
CLUSTER_LAYOUTS = ["rows", "classes", "ragged"]
DTYPES = [np.float32, np.float64]


def special_logits(dtype=np.float64, seed=0):
    """14 x 11 logits: random rows and the numerics table across chunk boundaries."""
    x = np.random.default_rng(seed).normal(scale=3.0, size=(N_ROWS, N_CLASSES))
    x[0, 5] = NAN
    x[1, 9] = INF
    x[2, :] = -INF
    x[3, :4] = -INF  # a whole first class chunk of -inf, finite elsewhere
    x[4, [1, 6]] = -INF
    x[5, :] = [1e30, -1e30, 0, 1e30, -1e30, 5, 1e30, 0, 0, -1e30, 1]
    x[6, 2], x[6, 8] = INF, -INF
    x[7, 1], x[7, 10] = NAN, INF  # NaN in one chunk, +inf in another
    x[8, :] = 0.0  # ties everywhere
    x[9, 4:8] = -INF  # a whole middle chunk of -inf
    x[10, [0, 3, 4, 7, 10]] = 5.0  # the maximum tied across every chunk
    x[11, :] = -INF
    x[11, 10] = -2.0  # one finite entry, in the last chunk
    return x.astype(dtype)


def lazy(x, layout):
    return da.from_array(x, chunks=LAYOUTS[layout])


def nonempty(chunks):
    """The chunks a result keeps: chunks of size zero are merged away, no other."""
    return tuple(tuple(c for c in axis if c) for axis in chunks)


def quietly(function, *args, **kwargs):
    """Call the reference on special values without its RuntimeWarnings."""
    with np.errstate(all="ignore"):
        return function(*args, **kwargs)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    )
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


# --- softmax, log_softmax, logsumexp ---------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_softmax_and_log_softmax(layout, dtype, temperature):
    x = special_logits(dtype)
    p = fsd.softmax(lazy(x, layout), temperature=temperature, backend="numpy")
    logp = fsd.log_softmax(lazy(x, layout), temperature=temperature, backend="numpy")
    assert isinstance(p, da.Array) and p.chunks == nonempty(LAYOUTS[layout]) == logp.chunks
    p, logp = dask.compute(p, logp, scheduler="threads")
    assert_matches_reference(p, quietly(reference.softmax, x, temperature), "probability")
    assert_matches_reference(logp, quietly(reference.log_softmax, x, temperature), "log")
    assert (p[np.isneginf(x) & np.isfinite(p)] == 0).all()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_class_chunked_log_softmax_within_the_float32_bound_over_wide_gaps(
    host_backend, temperature
):
    # Log-probabilities near -100, where float32 has 1.3 ulps for the
    # contract's 1e-5: a chunk's local log_softmax moved onto its row's
    # scale in float32 rounds three times and missed it (by up to 1.3e-5).
    x = (np.random.default_rng(6).normal(size=(256, 300)) * 25).astype(np.float32)
    logp = fsd.log_softmax(
        da.from_array(x, chunks=(128, 100)), temperature=temperature, backend=host_backend
    )
    expected = reference.log_softmax(x, temperature)
    assert_matches_reference(logp.compute(scheduler="threads"), expected, "log")


def test_class_chunked_log_softmax_keeps_huge_logits_finite(host_backend):
    # x - max overflows float64 here, (x - max) / 10 does not; the float64
    # reference overflows too, so the expected values are written out.
    x = np.array([[-1.5e308, 1.5e308, 0.0]])
    logp = fsd.log_softmax(da.from_array(x, chunks=(1, 1)), temperature=10.0, backend=host_backend)
    np.testing.assert_allclose(logp.compute(scheduler="threads"), [[-3e307, 0.0, -1.5e307]])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp(layout, dtype, keepdims):
    x = special_logits(dtype)
    lse = fsd.logsumexp(lazy(x, layout), keepdims=keepdims, backend="numpy")
    assert lse.chunks[0] == LAYOUTS[layout][0]
    lse = lse.compute(scheduler="threads")
    expected = quietly(reference.logsumexp, x)
    assert_matches_reference(lse, expected[:, None] if keepdims else expected, "log")


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("axis", [0, 1, -3])
def test_any_axis_of_a_three_dimensional_array(split, axis):
    x = np.random.default_rng(3).normal(scale=4.0, size=(6, 7, 5))
    x[1, 2, 3] = -INF
    chunks = (2, 3, 5) if split else (6, 3, 2)
    chunks = tuple(c if d != axis % 3 or split else -1 for d, c in enumerate(chunks))
    xd = da.from_array(x, chunks=chunks)
    assert (xd.numblocks[axis] > 1) == split
    moved = np.moveaxis(x, axis, -1)
    p, logp, lse, (top_p, top_i) = dask.compute(
        fsd.softmax(xd, axis=axis, temperature=0.7),
        fsd.log_softmax(xd, axis=axis),
        fsd.logsumexp(xd, axis=axis),
        fsd.softmax_topk(xd, 3, axis=axis),
        scheduler="threads",
    )
    assert_matches_reference(p, np.moveaxis(reference.softmax(moved, 0.7), -1, axis), "probability")
    assert_matches_reference(logp, np.moveaxis(reference.log_softmax(moved), -1, axis), "log")
    assert_matches_reference(lse, reference.logsumexp(moved), "log")
    expected_p, expected_i = reference.softmax_topk(moved, 3)
    np.testing.assert_array_equal(top_i, np.moveaxis(expected_i, -1, axis))
    assert_matches_reference(top_p, np.moveaxis(expected_p, -1, axis), "probability")


# --- softmax_topk ---------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3, 6, N_CLASSES])
def test_softmax_topk(layout, dtype, k):
    x = special_logits(dtype)
    probs, indices = fsd.softmax_topk(lazy(x, layout), k, temperature=0.8, backend="numpy")
    assert probs.chunks == indices.chunks == (LAYOUTS[layout][0], (k,))
    probs, indices = dask.compute(probs, indices, scheduler="threads")
    expected_p, expected_i = quietly(reference.softmax_topk, x, k, 0.8)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, expected_i)
    assert_matches_reference(probs, expected_p, "probability")


def test_topk_ties_across_chunks_go_to_the_lower_index():
    x = np.array([[1.0, 7.0, 7.0, 0.0, 7.0, 7.0, 3.0, 7.0]])
    for chunks in ((1, 1), (1, 3), (1, (2, 3, 3))):
        _, indices = fsd.softmax_topk(da.from_array(x, chunks=chunks), 6)
        np.testing.assert_array_equal(indices.compute(), [[1, 2, 4, 5, 7, 6]])


# --- cross_entropy --------------------------------------------------------------

OPTION_SETS = [
    {},
    {"weight": True},
    {"label_smoothing": 0.1},
    {"weight": True, "label_smoothing": 0.25, "z_loss": 1e-2},
    {"ignore_index": 3, "label_smoothing": 0.1},
]


def cross_entropy_problem(dtype, probability_target=False, seed=1):
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(N_ROWS, N_CLASSES))
    logits[3, :4] = -INF  # the target's chunk is all -inf: the loss is +inf
    logits[4, [1, 6]] = -INF
    logits[9, 4:8] = -INF
    logits[5, :] = [1e30, 1e30, -1e30, 1e30, 0, 0, 0, 0, 0, 0, 1e30]
    target = rng.integers(0, N_CLASSES, size=N_ROWS)
    target[3], target[4], target[5], target[9] = 0, 0, 1, 8
    target[[2, 12]] = -100
    weight = rng.uniform(0.2, 2.0, size=N_CLASSES)
    if probability_target:
        target = reference.softmax(rng.normal(size=(N_ROWS, N_CLASSES)))
    return logits.astype(dtype), target, weight


def check_cross_entropy(logits, target, scheduler, chunks, reduction, **options):
    """Dask's loss and gradient (and the loss-only graph) against the reference."""
    dtype = np.dtype(logits.dtype)
    lazy_logits = da.from_array(logits, chunks=chunks)
    lazy_target = da.from_array(target, chunks=chunks if target.ndim == 2 else 3)
    loss, grad = fsd.cross_entropy(
        lazy_logits, lazy_target, reduction=reduction, return_grad=True, backend="numpy", **options
    )
    loss_only = fsd.cross_entropy(
        lazy_logits, lazy_target, reduction=reduction, backend="numpy", **options
    )
    assert isinstance(loss, da.Array) and loss.ndim == (1 if reduction == "none" else 0)
    assert grad.chunks == nonempty(lazy_logits.chunks)
    loss, grad, loss_only = dask.compute(loss, grad, loss_only, scheduler=scheduler)
    expected_loss, expected_grad = quietly(
        reference.cross_entropy, logits, target, reduction=reduction, **options
    )
    # z_loss * lse**2 of 1e30 logits is beyond float32: inf there, as locally.
    expected_loss = np.where(np.abs(expected_loss) > np.finfo(dtype).max, INF, expected_loss)
    # Losses and gradients are sums of terms that may cancel: compare relative
    # to the size of the terms, as the local tests do.
    finite = np.where(np.isfinite(logits), logits, 0).astype(np.float64)
    weight = options.get("weight")
    w = 1.0 if weight is None else weight.max()
    z_loss = options.get("z_loss", 0.0)
    magnitude = np.abs(finite).max(axis=-1)
    row_scale = (
        w * (1 + np.ptp(finite, axis=-1) + np.log(N_CLASSES)) + z_loss * (1 + magnitude) ** 2
    )
    scale = row_scale if reduction == "none" else row_scale.sum()
    rtol = 1e-13 if dtype == np.float64 else 1e-5
    for value in (loss, loss_only):
        if reduction != "none":
            assert type(value) is dtype.type  # a NumPy scalar, as locally
        assert_close_scaled(value, expected_loss, scale, dtype, rtol)
    grad_scale = (w + 2 * z_loss * (1 + magnitude[:, None])) * (
        1 if reduction != "mean" else 1 / N_ROWS
    )
    assert_close_scaled(grad, expected_grad, grad_scale, dtype, rtol)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", OPTION_SETS, ids=lambda o: "-".join(o) or "plain")
def test_cross_entropy_class_targets(layout, dtype, reduction, options):
    logits, target, weight = cross_entropy_problem(dtype)
    options = dict(options, weight=weight) if options.get("weight") else options
    if "ignore_index" in options:
        target[target == -100] = options["ignore_index"]
    check_cross_entropy(logits, target, "threads", LAYOUTS[layout], reduction, **options)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize(
    "options",
    [o for o in OPTION_SETS if "ignore_index" not in o],
    ids=lambda o: "-".join(o) or "plain",
)
def test_cross_entropy_probability_targets(layout, reduction, options):
    logits, target, weight = cross_entropy_problem(np.float64, probability_target=True)
    logits[5] = 0.0  # 1e30 logits with a probability target give terms of 1e30
    options = dict(options, weight=weight) if options.get("weight") else options
    check_cross_entropy(logits, target, "threads", LAYOUTS[layout], reduction, **options)


@pytest.mark.parametrize("layout", ["rows", "classes", "ragged"])
def test_cross_entropy_rows_without_a_finite_maximum_are_nan(layout):
    logits = special_logits()
    target = np.arange(N_ROWS) % N_CLASSES
    target[0] = -100  # an ignored NaN row stays 0
    loss, grad = fsd.cross_entropy(lazy(logits, layout), target, reduction="none", return_grad=True)
    loss, grad = dask.compute(loss, grad, scheduler="threads")
    local_loss, local_grad = fastsoftmax.cross_entropy(
        logits, target, reduction="none", return_grad=True, backend="numpy"
    )
    assert loss[0] == 0 and (grad[0] == 0).all()
    for row in (1, 2, 6, 7):
        assert np.isnan(loss[row]) and np.isnan(grad[row]).all()
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(local_loss))
    np.testing.assert_allclose(loss, local_loss, rtol=1e-13)
    np.testing.assert_allclose(grad, local_grad, rtol=1e-13, atol=1e-16)


def test_cross_entropy_n_dimensional_batch():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(3, 4, 9))
    target = rng.integers(0, 9, size=(3, 4))
    for chunks in ((2, 3, 9), (2, 3, 4)):
        loss, grad = fsd.cross_entropy(
            da.from_array(logits, chunks=chunks), target, reduction="none", return_grad=True
        )
        expected_loss, expected_grad = reference.cross_entropy(logits, target, reduction="none")
        np.testing.assert_allclose(loss.compute(), expected_loss, rtol=1e-13)
        np.testing.assert_allclose(grad.compute(), expected_grad, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("layout", ["rows", "classes"])
@pytest.mark.parametrize("reduction, expected", [("mean", NAN), ("sum", 0.0)])
def test_cross_entropy_with_every_row_ignored(layout, reduction, expected):
    logits = np.random.default_rng(5).normal(size=(N_ROWS, N_CLASSES))
    target = np.full(N_ROWS, -100)
    loss, grad = fsd.cross_entropy(
        lazy(logits, layout), target, reduction=reduction, return_grad=True
    )
    loss, grad = dask.compute(loss, grad)
    np.testing.assert_equal(float(loss), expected)
    assert (grad == 0).all()


# --- any chunking -----------------------------------------------------------------


def chunk_sizes(n):
    """Partitions of `n` into up to four chunks, chunks of size zero included."""
    return st.lists(st.integers(0, n), max_size=3).map(
        lambda cuts: tuple(int(c) for c in np.diff([0, *sorted(cuts), n]))
    )


@hypothesis.given(data=st.data())
def test_property_any_chunking_of_special_rows(data):
    dtype = data.draw(st.sampled_from(DTYPES))
    x = data.draw(strategies.special_logits("numpy", dtype))
    n_rows, n_classes = x.shape
    xd = da.from_array(
        x, chunks=(data.draw(chunk_sizes(n_rows)), data.draw(chunk_sizes(n_classes)))
    )
    k = data.draw(st.integers(1, n_classes))
    temperature = data.draw(st.sampled_from([1.0, 0.3]))
    target = data.draw(st.lists(st.integers(0, n_classes - 1), min_size=n_rows, max_size=n_rows))
    target = np.array(target)
    p, logp, lse, (top_p, top_i), loss = dask.compute(
        fsd.softmax(xd, temperature=temperature),
        fsd.log_softmax(xd, temperature=temperature),
        fsd.logsumexp(xd),
        fsd.softmax_topk(xd, k, temperature=temperature),
        fsd.cross_entropy(xd, target, reduction="none", label_smoothing=0.1),
        scheduler="sync",
    )
    assert_matches_reference(p, quietly(reference.softmax, x, temperature), "probability")
    assert_matches_reference(logp, quietly(reference.log_softmax, x, temperature), "log")
    assert_matches_reference(lse, quietly(reference.logsumexp, x), "log")
    expected_p, expected_i = quietly(reference.softmax_topk, x, k, temperature)
    np.testing.assert_array_equal(top_i, expected_i)
    assert_matches_reference(top_p, expected_p, "probability")
    expected_loss, _ = quietly(
        reference.cross_entropy, x, target, reduction="none", label_smoothing=0.1
    )
    finite = np.where(np.isfinite(x), x, 0).astype(np.float64)
    scale = 1 + np.ptp(finite, axis=-1) + np.log(n_classes)
    assert_close_scaled(loss, expected_loss, scale, dtype, 1e-13 if dtype == np.float64 else 1e-5)


# --- a real cluster ---------------------------------------------------------------


@pytest.mark.parametrize("layout", CLUSTER_LAYOUTS)
def test_every_operation_on_a_local_cluster(client, layout):
    x = special_logits()
    xd = lazy(x, layout)
    p, logp, lse, (top_p, top_i) = dask.compute(
        fsd.softmax(xd, temperature=0.5, backend="numpy"),
        fsd.log_softmax(xd, backend="numpy"),
        fsd.logsumexp(xd, backend="numpy"),
        fsd.softmax_topk(xd, 4, backend="numpy"),
        scheduler=client,
    )
    assert_matches_reference(p, quietly(reference.softmax, x, 0.5), "probability")
    assert_matches_reference(logp, quietly(reference.log_softmax, x), "log")
    assert_matches_reference(lse, quietly(reference.logsumexp, x), "log")
    expected_p, expected_i = quietly(reference.softmax_topk, x, 4)
    np.testing.assert_array_equal(top_i, expected_i)
    assert_matches_reference(top_p, expected_p, "probability")

    logits, target, weight = cross_entropy_problem(np.float64)
    options = {"weight": weight, "label_smoothing": 0.1, "z_loss": 1e-3}
    check_cross_entropy(logits, target, client, LAYOUTS[layout], "mean", **options)
    logits, target, _ = cross_entropy_problem(np.float64, probability_target=True)
    logits[5] = 0.0
    check_cross_entropy(logits, target, client, LAYOUTS[layout], "sum", label_smoothing=0.2)


def test_bad_target_on_a_local_cluster(client):
    logits, target, _ = cross_entropy_problem(np.float64)
    target[10] = N_CLASSES
    with pytest.raises(ValueError) as local:
        fastsoftmax.cross_entropy(logits, target)
    loss = fsd.cross_entropy(
        lazy(logits, "classes"), da.from_array(target, chunks=4), backend="numpy"
    )
    with pytest.raises(ValueError) as lazy_error:
        dask.compute(loss, scheduler=client)
    assert str(lazy_error.value) == str(local.value)


# --- backends -----------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_host_backend(host_backend, layout, dtype):
    """The split plan leans on each backend's kernels (top-1 probability, NaN rows)."""
    x = special_logits(dtype)
    xd = lazy(x, layout)
    logits, target, weight = cross_entropy_problem(dtype)
    p, logp, lse, (top_p, top_i), (loss, grad) = dask.compute(
        fsd.softmax(xd, temperature=0.5, backend=host_backend),
        fsd.log_softmax(xd, backend=host_backend),
        fsd.logsumexp(xd, backend=host_backend),
        fsd.softmax_topk(xd, 3, backend=host_backend),
        fsd.cross_entropy(
            lazy(logits, layout),
            target,
            weight=weight,
            label_smoothing=0.1,
            reduction="none",
            return_grad=True,
            backend=host_backend,
        ),
        scheduler="threads",
    )
    assert_matches_reference(p, quietly(reference.softmax, x, 0.5), "probability")
    assert_matches_reference(logp, quietly(reference.log_softmax, x), "log")
    assert_matches_reference(lse, quietly(reference.logsumexp, x), "log")
    expected_p, expected_i = quietly(reference.softmax_topk, x, 3)
    np.testing.assert_array_equal(top_i, expected_i)
    assert_matches_reference(top_p, expected_p, "probability")
    local_loss, local_grad = fastsoftmax.cross_entropy(
        logits,
        target,
        weight=weight,
        label_smoothing=0.1,
        reduction="none",
        return_grad=True,
        backend=host_backend,
    )
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(loss, local_loss, rtol=rtol)
    np.testing.assert_allclose(grad, local_grad, rtol=rtol, atol=rtol / N_CLASSES)


# --- the default backend ----------------------------------------------------------


@pytest.mark.parametrize("layout", ["rows", "ragged"])
def test_default_backend(layout):
    x = special_logits(np.float32)
    logits, target, _ = cross_entropy_problem(np.float32)
    p, lse, (top_p, top_i), loss = dask.compute(
        fsd.softmax(lazy(x, layout)),
        fsd.logsumexp(lazy(x, layout)),
        fsd.softmax_topk(lazy(x, layout), 2),
        fsd.cross_entropy(lazy(logits, layout), target, reduction="none"),
        scheduler="threads",
    )
    assert_matches_reference(p, quietly(reference.softmax, x), "probability")
    assert_matches_reference(lse, quietly(reference.logsumexp, x), "log")
    expected_p, expected_i = quietly(reference.softmax_topk, x, 2)
    np.testing.assert_array_equal(top_i, expected_i)
    assert_matches_reference(top_p, expected_p, "probability")
    expected_loss, _ = quietly(reference.cross_entropy, logits, target, reduction="none")
    assert_close_scaled(loss, expected_loss, 10.0, np.float32, 1e-5)


# --- graphs: lazy, never rechunked, never a whole-input task ---------------------


def poisoned(shape, chunks):
    """A Dask array whose every block raises when computed."""
    return da.zeros(shape, chunks=chunks).map_blocks(_explode, dtype=np.float64)


def _explode(block):
    raise RuntimeError("computed")


@pytest.mark.parametrize("chunks", [(5, 11), (14, 4)])
def test_building_a_graph_computes_nothing(chunks):
    x = poisoned((N_ROWS, N_CLASSES), chunks)
    target = poisoned((N_ROWS,), chunks[0]).astype(np.int64)
    results = [
        fsd.softmax(x),
        fsd.log_softmax(x, temperature=2.0),
        fsd.logsumexp(x, keepdims=True),
        *fsd.softmax_topk(x, 3),
        *fsd.cross_entropy(
            x, target, weight=np.ones(N_CLASSES), label_smoothing=0.1, return_grad=True
        ),
    ]
    assert all(isinstance(r, da.Array) for r in results)
    with pytest.raises(RuntimeError, match="computed"):
        results[0].compute(scheduler="sync")


def test_a_split_class_axis_is_never_rechunked():
    x = da.from_array(special_logits(), chunks=LAYOUTS["ragged"])
    target = da.from_array(np.zeros(N_ROWS, dtype=int), chunks=(LAYOUTS["ragged"][0],))
    graphs = [
        fsd.softmax(x).__dask_graph__(),
        fsd.logsumexp(x).__dask_graph__(),
        fsd.softmax_topk(x, 3)[0].__dask_graph__(),
        fsd.cross_entropy(x, target, return_grad=True)[1].__dask_graph__(),
    ]
    for graph in graphs:
        assert not [name for name in graph.layers if "rechunk" in name]


def test_many_class_chunks_merge_through_the_combine_step():
    x = special_logits()
    xd = da.from_array(x, chunks=(7, 2))  # six class chunks
    with dask.config.set(split_every=2):
        lse = fsd.logsumexp(xd)
        top_p, top_i = fsd.softmax_topk(xd, 5)
        loss = fsd.cross_entropy(
            xd, np.arange(N_ROWS) % N_CLASSES, reduction="none", label_smoothing=0.3
        )
    for result in (lse, top_p, loss):
        assert any(
            name.startswith("fastsoftmax-merge-states-partial")
            for name in result.__dask_graph__().layers
        )
    lse, top_p, top_i, loss = dask.compute(lse, top_p, top_i, loss)
    assert_matches_reference(lse, quietly(reference.logsumexp, x), "log")
    expected_p, expected_i = quietly(reference.softmax_topk, x, 5)
    np.testing.assert_array_equal(top_i, expected_i)
    assert_matches_reference(top_p, expected_p, "probability")
    expected_loss, _ = quietly(
        reference.cross_entropy,
        x,
        np.arange(N_ROWS) % N_CLASSES,
        reduction="none",
        label_smoothing=0.3,
    )
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-12)


# Shape and chunks of the "no task holds the whole input" problem: 24 chunks of
# 24 kB in a 576 kB input, split along both axes.
BIG_SHAPE, BIG_CHUNKS = (240, 300), (60, 50)
CHUNK_BYTES = 60 * 50 * 8


def big_problem_results(x):
    target = da.random.default_rng(8).integers(
        0, BIG_SHAPE[1], size=BIG_SHAPE[0], chunks=BIG_CHUNKS[0]
    )
    weight = np.linspace(0.5, 1.5, BIG_SHAPE[1])
    return [
        fsd.softmax(x, backend="numpy"),
        fsd.log_softmax(x, temperature=0.5, backend="numpy"),
        fsd.logsumexp(x, backend="numpy"),
        *fsd.softmax_topk(x, 5, backend="numpy"),
        *fsd.cross_entropy(
            x, target, weight=weight, label_smoothing=0.1, return_grad=True, backend="numpy"
        ),
    ]


def big_input():
    return da.random.default_rng(7).standard_normal(BIG_SHAPE, chunks=BIG_CHUNKS)


class TaskSizes(Callback):
    """Records, per task of a local scheduler, the bytes of its result and its inputs."""

    def __init__(self):
        super().__init__()
        self.results = {}
        self.inputs = {}

    def _pretask(self, key, dsk, state):
        self.inputs[key] = sum(sizeof(state["cache"][d]) for d in state["dependencies"][key])

    def _posttask(self, key, result, dsk, state, worker_id):
        self.results[key] = sizeof(result)


def largest_graph_literal(results):
    """Bytes of the largest task in the graphs, literals (embedded data) included."""
    graph = dict(dask.base.collections_to_expr(results).__dask_graph__())
    return max(len(pickle.dumps(task)) for task in graph.values())


def largest(sizes):
    """The largest size among tasks, leaving out the final gathering of each result.

    ``compute()`` ends with one task per collection that concatenates its chunks
    into the NumPy array handed back; that is the caller's copy, not a task of
    the plan.
    """
    kept = [
        size for key, size in sizes.items() if not dask.utils.key_split(key).startswith("finalize")
    ]
    assert len(kept) > 24  # every input chunk went through a task
    return max(kept)


def test_no_task_holds_the_whole_input_threads():
    results = big_problem_results(big_input())
    assert largest_graph_literal(results) < CHUNK_BYTES / 4
    sizes = TaskSizes()
    with sizes:
        dask.compute(*results, scheduler="threads")
    assert largest(sizes.results) <= CHUNK_BYTES
    # A second-pass task reads one chunk plus its rows' small states.
    assert largest(sizes.inputs) <= 1.5 * CHUNK_BYTES

    # The check catches a plan that gathers whole rows (here 6 chunks' worth).
    sizes = TaskSizes()
    with sizes:
        fsd.softmax(big_input().rechunk({1: -1})).compute(scheduler="threads")
    assert largest(sizes.results) > 4 * CHUNK_BYTES


class LargestResults(SchedulerPlugin):
    """Records the size of every task result and of its inputs, on the scheduler."""

    name = "fastsoftmax-task-sizes"

    def __init__(self):
        self.results = {}
        self.inputs = {}

    async def start(self, scheduler):
        self.scheduler = scheduler

    def transition(self, key, start, finish, *args, **kwargs):
        task = self.scheduler.tasks.get(key)
        if finish == "memory" and task is not None:
            self.results[key] = task.nbytes
            self.inputs[key] = sum(dep.nbytes for dep in task.dependencies)


def test_no_task_holds_the_whole_input_on_a_local_cluster(client):
    client.register_plugin(LargestResults())
    try:
        dask.compute(*big_problem_results(big_input()), scheduler=client)
        results, inputs = client.run_on_scheduler(
            lambda dask_scheduler: (
                dask_scheduler.plugins[LargestResults.name].results,
                dask_scheduler.plugins[LargestResults.name].inputs,
            )
        )
    finally:
        client.unregister_scheduler_plugin(LargestResults.name)
    assert largest(results) <= CHUNK_BYTES
    assert largest(inputs) <= 1.5 * CHUNK_BYTES


# --- dtypes, empty arrays, other inputs -----------------------------------------


@pytest.mark.parametrize("layout", ["rows", "classes"])
def test_result_dtypes(layout):
    x = np.random.default_rng(6).normal(size=(N_ROWS, N_CLASSES))
    cases = [
        (x.astype(np.float16), {}, np.float16),
        (np.round(x * 3).astype(np.int32), {}, np.float64),
        ((x > 0), {}, np.float64),
        (x, {"dtype": np.float32}, np.float32),
        (x.astype(np.float32), {"dtype": np.float64}, np.float64),
        (x.astype(">f8"), {}, np.float64),
    ]
    for data, options, dtype in cases:
        xd = lazy(data, layout)
        p = fsd.softmax(xd, **options)
        lse = fsd.logsumexp(xd, **options)
        assert p.dtype == dtype and lse.dtype == dtype
        p, lse = dask.compute(p, lse)
        assert p.dtype == dtype and lse.dtype == dtype
        local = fastsoftmax.softmax(data, **options)
        np.testing.assert_allclose(p, local, rtol=2e-3 if dtype == np.float16 else 1e-6)


def test_empty_arrays():
    no_rows = da.zeros((0, 10), chunks=(5, 4))
    assert fsd.softmax(no_rows).compute().shape == (0, 10)
    assert fsd.logsumexp(no_rows).compute().shape == (0,)
    assert fsd.softmax_topk(no_rows, 2)[1].compute().shape == (0, 2)
    loss = fsd.cross_entropy(no_rows, np.zeros(0, dtype=int), reduction="sum").compute()
    assert loss == 0 and type(loss) is np.float64
    assert np.isnan(fsd.cross_entropy(no_rows, np.zeros(0, dtype=int)).compute())
    no_classes = da.zeros((3, 0), chunks=(2, 0))
    assert fsd.softmax(no_classes).compute().shape == (3, 0)
    np.testing.assert_array_equal(fsd.logsumexp(no_classes).compute(), [-INF, -INF, -INF])


def test_numpy_input_is_wrapped_with_whole_rows():
    x = special_logits()
    p = fsd.softmax(x, axis=0)
    assert p.numblocks[0] == 1
    assert_matches_reference(p.compute(), quietly(reference.softmax, x.T).T, "probability")
    loss = fsd.cross_entropy(x[3:6], [0, 2, 1], reduction="none")
    expected, _ = quietly(reference.cross_entropy, x[3:6], [0, 2, 1], reduction="none")
    np.testing.assert_allclose(loss.compute(), expected, rtol=1e-13)


# --- errors -----------------------------------------------------------------------


def error_cases():
    x = np.zeros((4, 6))
    xd = da.from_array(x, chunks=(2, 3))
    t = np.zeros(4, dtype=int)
    td = da.from_array(t, chunks=2)
    # (local call, the same call through fastsoftmax.dask); both raise at once
    return {
        "temperature": (
            lambda: fastsoftmax.softmax(x, temperature=0),
            lambda: fsd.softmax(xd, temperature=0),
        ),
        "axis": (lambda: fastsoftmax.log_softmax(x, axis=2), lambda: fsd.log_softmax(xd, axis=2)),
        "complex": (
            lambda: fastsoftmax.logsumexp(x.astype(complex)),
            lambda: fsd.logsumexp(xd.astype(complex)),
        ),
        "dtype": (lambda: fastsoftmax.softmax(x, dtype=int), lambda: fsd.softmax(xd, dtype=int)),
        "backend": (
            lambda: fastsoftmax.softmax(x, backend="fortran"),
            lambda: fsd.softmax(xd, backend="fortran"),
        ),
        "k too large": (lambda: fastsoftmax.softmax_topk(x, 7), lambda: fsd.softmax_topk(xd, 7)),
        "k zero": (lambda: fastsoftmax.softmax_topk(x, 0), lambda: fsd.softmax_topk(xd, 0)),
        "k float": (lambda: fastsoftmax.softmax_topk(x, 1.5), lambda: fsd.softmax_topk(xd, 1.5)),
        "reduction": (
            lambda: fastsoftmax.cross_entropy(x, t, reduction="avg"),
            lambda: fsd.cross_entropy(xd, td, reduction="avg"),
        ),
        "smoothing": (
            lambda: fastsoftmax.cross_entropy(x, t, label_smoothing=1.5),
            lambda: fsd.cross_entropy(xd, td, label_smoothing=1.5),
        ),
        "target shape": (
            lambda: fastsoftmax.cross_entropy(x, t[:3]),
            lambda: fsd.cross_entropy(xd, td[:3]),
        ),
        "probability shape": (
            lambda: fastsoftmax.cross_entropy(x, x[:, :5]),
            lambda: fsd.cross_entropy(xd, xd[:, :5]),
        ),
        "bool target": (
            lambda: fastsoftmax.cross_entropy(x, t > 0),
            lambda: fsd.cross_entropy(xd, td > 0),
        ),
        "weight shape": (
            lambda: fastsoftmax.cross_entropy(x, t, weight=np.ones(5)),
            lambda: fsd.cross_entropy(xd, td, weight=np.ones(5)),
        ),
        "weight nan": (
            lambda: fastsoftmax.cross_entropy(x, t, weight=np.full(6, NAN)),
            lambda: fsd.cross_entropy(xd, td, weight=np.full(6, NAN)),
        ),
        "0-d logits": (
            lambda: fastsoftmax.cross_entropy(np.float64(1.0), t),
            lambda: fsd.cross_entropy(da.from_array(np.float64(1.0)), td),
        ),
        "no classes": (
            lambda: fastsoftmax.cross_entropy(np.zeros((4, 0)), t),
            lambda: fsd.cross_entropy(da.zeros((4, 0)), td),
        ),
    }


@pytest.mark.parametrize("case", list(error_cases()))
def test_cheap_errors_are_raised_when_the_graph_is_built(case):
    local_call, dask_call = error_cases()[case]
    with pytest.raises(Exception) as local:
        local_call()
    with pytest.raises(type(local.value)) as lazy_error:
        dask_call()
    assert str(lazy_error.value) == str(local.value)


@pytest.mark.parametrize("layout", ["rows", "classes", "ragged"])
def test_bad_target_raises_at_compute_time_with_the_local_message(layout):
    logits, target, _ = cross_entropy_problem(np.float64)
    target[9] = -1
    with pytest.raises(ValueError) as local:
        fastsoftmax.cross_entropy(logits, target)
    loss, grad = fsd.cross_entropy(lazy(logits, layout), target, return_grad=True)
    for result in (loss, grad):
        with pytest.raises(ValueError) as lazy_error:
            result.compute(scheduler="threads")
        assert (
            str(lazy_error.value)
            == str(local.value)
            == ("target[9] = -1 is outside [0, 11) and is not ignore_index (-100)")
        )


def test_bad_target_of_an_n_dimensional_batch_names_its_whole_index():
    logits = np.zeros((4, 6, 3))
    target = np.zeros((4, 6), dtype=int)
    target[3, 4] = 7
    with pytest.raises(ValueError) as local:
        fastsoftmax.cross_entropy(logits, target)
    loss = fsd.cross_entropy(da.from_array(logits, chunks=(2, 4, 2)), target)
    with pytest.raises(ValueError) as lazy_error:
        loss.compute()
    assert str(lazy_error.value) == str(local.value)
    assert "target[3, 4] = 7" in str(local.value)


def test_class_chunks_of_unknown_size():
    x = special_logits()
    columns = np.arange(N_CLASSES) % 3 != 1
    # Columns picked by a lazy mask: the class axis has chunks of unknown size.
    unknown = da.from_array(x, chunks=(7, 4))[:, da.from_array(columns, chunks=4)]
    assert math.isnan(unknown.chunks[1][0]) and unknown.numblocks[1] == 3
    p, lse = dask.compute(fsd.softmax(unknown), fsd.logsumexp(unknown))
    assert_matches_reference(p, quietly(reference.softmax, x[:, columns]), "probability")
    assert_matches_reference(lse, quietly(reference.logsumexp, x[:, columns]), "log")
    # k and the class ids need the number of classes.
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        fsd.softmax_topk(unknown, 2)
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        fsd.cross_entropy(unknown, np.zeros(N_ROWS, dtype=int))


# --- packaging and the recipe -----------------------------------------------------


def test_import_fastsoftmax_does_not_import_dask():
    code = (
        "import sys, fastsoftmax\n"
        "loaded = sorted(m for m in sys.modules if 'dask' in m)\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def recipe_blocks():
    text = (ROOT / "docs" / "dask.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_recipe_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {}
    blocks = [b for b in recipe_blocks() if not b.startswith("import zarr")]
    assert len(blocks) >= 3
    for index, block in enumerate(blocks):
        exec(compile(block, f"docs/dask.md[python {index}]", "exec"), namespace)
    assert "100%" in capsys.readouterr().out  # the progress bar ran to the end


def test_recipe_zarr_block_runs(tmp_path, monkeypatch):
    pytest.importorskip("zarr")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for index, block in enumerate(recipe_blocks()):
        exec(compile(block, f"docs/dask.md[python {index}]", "exec"), namespace)
    assert pathlib.Path("probs.zarr").exists()
