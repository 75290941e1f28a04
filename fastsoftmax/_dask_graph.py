"""Pieces of the Dask graphs built by ``fastsoftmax.dask``.

Input wrapping, the checks that need only chunks, blockwise index labels, and
`merged_states`: the first pass of every class-split plan, a blockwise map of a
chunk to its per-row states followed by a Dask reduction (with a combine
step) that merges them over the class chunks.
"""

import math
from functools import partial

import dask.array as da
import numpy as np

from . import _checks, _dask_states, _dispatch, _host


def as_dask(x, name, class_axis):
    """`x` as a Dask array without empty chunks; another array gets `class_axis` whole."""
    if isinstance(x, da.Array):
        return without_empty_chunks(x)
    array = _host.as_host_array(x, name)
    axis = _checks.normalize_axis(class_axis, array.ndim)
    return da.from_array(
        array, chunks=tuple(-1 if i == axis else "auto" for i in range(array.ndim))
    )


def without_empty_chunks(x):
    """`x` with its chunks of size zero merged away (no data moves).

    Dask's alignment of blockwise arguments drops such chunks from some arrays
    and not others, which breaks the graphs. An axis of length zero keeps one
    empty chunk; axes of unknown chunk sizes are left alone.
    """
    chunks = tuple(
        c if any(math.isnan(n) for n in c) else (tuple(n for n in c if n) or (0,)) for c in x.chunks
    )
    return x if chunks == x.chunks else x.rechunk(chunks)


def check_known_chunks(x, name, axes):
    """ValueError when `x` has chunks of unknown size along one of `axes`."""
    for axis in axes:
        if any(math.isnan(c) for c in x.chunks[axis]):
            raise ValueError(
                f"{name} has unknown chunk sizes along axis {axis}; call "
                f"{name}.compute_chunk_sizes() first"
            )


def check_backend(backend):
    """Check a backend name as the local functions will when the tasks run."""
    _dispatch.choose(backend, 0)


def meta(ndim, dtype):
    """An empty array that tells Dask a result's dimensions and dtype."""
    return np.empty((0,) * ndim, dtype=dtype)


def is_split(x, axis):
    """True when `axis` spans more than one chunk."""
    return x.numblocks[axis] > 1


def class_last(x, axis):
    return x if axis == x.ndim - 1 else da.moveaxis(x, axis, -1)


def class_back(x, axis):
    return x if axis == x.ndim - 1 else da.moveaxis(x, -1, axis)


class Indices:
    """Blockwise index labels of an array whose class axis is last."""

    def __init__(self, ndim):
        self.block = tuple(range(ndim))
        self.rows = self.block[:-1]
        self.classes = (ndim - 1,)
        self.spare = (ndim,)  # a label contracted away, e.g. a whole weight vector


def pair(value, index):
    """A blockwise ``(argument, index)`` pair; a non-Dask value takes no index."""
    return (value, index) if isinstance(value, da.Array) else (value, None)


def class_ids(x):
    """The class index of every column of `x` (class axis last), chunked like it."""
    return da.arange(x.shape[-1], chunks=(x.chunks[-1],))


def merged_states(state_of_chunk, dtype, x, *aligned, inv_temperature=1.0):
    """Per-row states of `x` (class axis last): per chunk, and merged over the chunks.

    ``state_of_chunk(x_block, *aligned_blocks)`` returns a block's states of
    structured dtype `dtype`, with the class axis kept at length 1; `aligned`
    are further blockwise ``(argument, index)`` pairs. Returns the chunks'
    states (one block per block of `x`, each one column wide) and their merge,
    of the batch shape and chunked like `x`'s rows.
    """
    ix = Indices(x.ndim)
    per_chunk = da.blockwise(
        state_of_chunk,
        ix.block,
        x,
        ix.block,
        *aligned,
        adjust_chunks={ix.classes[0]: 1},
        dtype=dtype,
        meta=meta(x.ndim, dtype),
        token="fastsoftmax-chunk-states",
    )
    merge = partial(_dask_states.merge, inv_temperature=inv_temperature)
    merged = da.reduction(
        per_chunk,
        _dask_states.keep,
        merge,
        combine=merge,
        axis=x.ndim - 1,
        dtype=dtype,
        meta=meta(x.ndim - 1, dtype),
        name="fastsoftmax-merge-states",
    )
    return per_chunk, merged


def second_pass(function, x, per_chunk, merged, *aligned, dtype, token):
    """Map `function` over the blocks of `x` with their own and their rows' states.

    ``function(x_block, *aligned_blocks, chunk_states, row_states)``; the
    chunks' states pair with `x`'s blocks one to one, though their class chunks
    are one column wide, so the arrays are not aligned by size.
    """
    ix = Indices(x.ndim)
    return da.blockwise(
        function,
        ix.block,
        x,
        ix.block,
        *aligned,
        per_chunk,
        ix.block,
        merged,
        ix.rows,
        align_arrays=False,
        dtype=dtype,
        meta=meta(x.ndim, dtype),
        token=token,
    )


def from_states(function, states, dtype, *aligned, x_ndim, new_classes=None, token):
    """Map `function` over merged `states` (and aligned blocks) to a result.

    The result has the batch dimensions and, with `new_classes`, a last axis
    of that length in one chunk.
    """
    ix = Indices(x_ndim)
    index = ix.rows if new_classes is None else ix.block
    return da.blockwise(
        function,
        index,
        states,
        ix.rows,
        *aligned,
        new_axes=None if new_classes is None else {ix.classes[0]: new_classes},
        dtype=dtype,
        meta=meta(len(index), dtype),
        token=token,
    )
