"""Hand kernels rows along the last axis, whatever the caller's layout.

Every row-wise operation works on *operands* that share a leading shape (one
entry per row): inputs and outputs of ``(*lead, width)`` and per-row values of
``(*lead,)``. `run_rows` collapses the leading dimensions into one where the
strides allow it, hands views that a kernel can take directly (kernel dtype,
native byte order, aligned, unit stride along the row) straight to the kernel,
and stages the others through small reused buffers, a block of rows at a time.
So a non-last axis, a foreign byte order, a float16 input or a strided output
costs a bounded buffer, never a copy of the whole input.
"""

import itertools
import math
from dataclasses import dataclass

import numpy as np

# Staging buffers hold this fraction of the input, within the bounds below:
# large enough that per-block overhead is negligible, small enough that peak
# memory stays far below the input's size.
STAGING_FRACTION = 1 / 128
STAGING_MIN_BYTES = 256 * 1024
STAGING_MAX_BYTES = 8 * 1024 * 1024


@dataclass
class Operand:
    """One array of a row-wise call, with the class axis (if any) last.

    ``array`` is the caller's view (``None`` for a per-block scratch output);
    ``dtype`` is the dtype the kernel needs; ``per_row`` is true for operands with
    one value per row; ``width`` is the row length for the others; ``consume``
    receives each block of a scratch output.
    """

    array: np.ndarray | None
    dtype: np.dtype
    output: bool = False
    per_row: bool = False
    width: int = 0
    consume: object = None

    def __post_init__(self):
        if self.array is not None and not self.per_row:
            self.width = self.array.shape[-1]


def class_axis_last(array, axis):
    """`array` with `axis` (already normalised) moved last; the array itself when it is."""
    return array if axis == array.ndim - 1 else np.moveaxis(array, axis, -1)


def _kernel_ready(view, dtype, per_row):
    """True when a kernel can use `view` as it is."""
    if view.dtype != dtype or not view.dtype.isnative or not view.flags.aligned:
        return False
    item = view.itemsize
    if per_row:
        return view.shape[0] <= 1 or view.strides[0] == item
    rows, width = view.shape
    if width > 1 and view.strides[1] != item:
        return False
    return rows <= 1 or view.strides[0] % item == 0


def _collapse_lead(lead, arrays):
    """Merge adjacent leading dimensions whose strides agree in every array.

    Returns the new leading shape and, per array, a view with that leading shape
    (views only: nothing is copied).
    """
    n_lead = len(lead)
    if n_lead == 1:
        return lead, list(arrays)
    keep = [d for d in range(n_lead) if lead[d] != 1]
    groups = []
    for d in keep:
        if groups and all(
            a.strides[groups[-1][-1]] == a.strides[d] * a.shape[d] for a in arrays
        ):
            groups[-1].append(d)
        else:
            groups.append([d])
    new_lead = tuple(math.prod(lead[d] for d in g) for g in groups)
    if new_lead == tuple(lead):
        return new_lead, list(arrays)
    views = []
    for a in arrays:
        lead_strides = tuple(a.strides[g[-1]] for g in groups)
        views.append(
            np.lib.stride_tricks.as_strided(
                a,
                shape=new_lead + a.shape[n_lead:],
                strides=lead_strides + a.strides[n_lead:],
                writeable=a.flags.writeable,
            )
        )
    return new_lead, views


def _block_rows(operands, n_rows, input_bytes, max_block_rows):
    row_bytes = sum(
        op.dtype.itemsize * (1 if op.per_row else max(op.width, 1)) for op in operands
    )
    budget = min(max(input_bytes * STAGING_FRACTION, STAGING_MIN_BYTES), STAGING_MAX_BYTES)
    rows = max(1, int(budget // max(row_bytes, 1)))
    if max_block_rows is not None:
        rows = min(rows, max_block_rows)
    return min(rows, max(n_rows, 1))


def _run_2d(kernel, operands, views, max_block_rows):
    """Run `kernel` over one two-dimensional problem (a 1-D per-row view each)."""
    ready = [
        v is not None and _kernel_ready(v, op.dtype, op.per_row)
        for op, v in zip(operands, views)
    ]
    if all(ready) and max_block_rows is None:
        kernel(*views)
        return
    n_rows = next(v.shape[0] for v in views if v is not None)
    # the buffers' size follows the whole call's input, not this problem's
    input_bytes = sum(op.array.nbytes for op in operands if op.array is not None and not op.output)
    staged = [op for op, r in zip(operands, ready) if not r]
    block = _block_rows(staged, n_rows, input_bytes, max_block_rows)
    buffers = [
        None
        if r
        else np.empty((block,) if op.per_row else (block, op.width), dtype=op.dtype)
        for op, r in zip(operands, ready)
    ]
    for start in range(0, n_rows, block):
        stop = min(start + block, n_rows)
        args = []
        for op, view, buf in zip(operands, views, buffers):
            if buf is None:
                args.append(view[start:stop])
                continue
            part = buf[: stop - start]
            if not op.output:
                np.copyto(part, view[start:stop], casting="unsafe")
            args.append(part)
        kernel(*args)
        for op, view, buf, arg in zip(operands, views, buffers, args):
            if buf is None or not op.output:
                continue
            if view is None:
                op.consume(arg)
            else:
                np.copyto(view[start:stop], arg, casting="unsafe")


def run_rows(kernel, operands, lead, max_block_rows=None):
    """Call ``kernel(*views)`` over every row of `operands`.

    Parameters
    ----------
    kernel : callable
        Takes one array per operand: ``(rows, width)`` or ``(rows,)``, ready for a
        kernel as described in ``fastsoftmax._backends``.
    operands : list of Operand
        Arrays with leading shape `lead`; scratch outputs have ``array=None``.
    lead : tuple of int
        The shared leading shape (every dimension but the class axis).
    max_block_rows : int, optional
        Call the kernel on at most this many rows at a time (needed when a
        scratch output is present).
    """
    n_rows = math.prod(lead)
    if n_rows == 0:
        return
    if len(lead) == 1:  # one two-dimensional problem: nothing to collapse or iterate
        _run_2d(kernel, operands, [op.array for op in operands], max_block_rows)
        return
    real = [op.array for op in operands if op.array is not None]
    new_lead, collapsed = _collapse_lead(lead, real)
    it = iter(collapsed)
    views = [None if op.array is None else next(it) for op in operands]
    if len(new_lead) == 0:
        new_lead = (1,)
        views = [None if v is None else v[np.newaxis] for v in views]
    outer = new_lead[:-1]
    for index in itertools.product(*(range(n) for n in outer)):
        sub = [None if v is None else v[index] for v in views]
        _run_2d(kernel, operands, sub, max_block_rows)
