"""How the rows of a call map onto CUDA threads, from the settings of the moment."""

import math
from typing import NamedTuple

from . import reduce, runtime, settings


class RowPlan(NamedTuple):
    """Threads per row, values each keeps in registers, threads per block.

    ``stream`` is true when a row is longer than ``lanes * values``: the rest
    is read twice (an online max/sum pass, then the pass that writes).
    """

    lanes: int
    values: int
    block: int
    stream: bool
    shuffle: bool

    @property
    def rows_per_block(self):
        return self.block // self.lanes

    @property
    def shared_bytes(self):
        return reduce.shared_bytes(self.block, self.shuffle)

    def blocks(self, n_rows):
        return -(-n_rows // self.rows_per_block)


def _power_of_two_at_least(n):
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def row_plan(n_cols, itemsize, cached_arrays=1):
    """The plan for rows of `n_cols` values of `itemsize` bytes.

    Short rows take a group of up to ``ROW_LANES`` threads (a warp or part of
    one) with the whole row in registers, several rows per block; longer rows
    take a block each, ``ROW_CACHE_BYTES`` per thread and per cached array in
    registers.
    """
    shuffle = runtime.use_shuffle()
    if n_cols <= settings.ROW_LANES * settings.LANE_VALUES:
        lanes = min(settings.ROW_LANES, _power_of_two_at_least(n_cols))
        values = _power_of_two_at_least(-(-n_cols // lanes))
        return RowPlan(lanes, values, max(lanes, settings.ROWS_BLOCK), False, shuffle)
    values = max(1, settings.ROW_CACHE_BYTES // (itemsize * cached_arrays))
    lanes = _power_of_two_at_least(-(-n_cols // values))
    lanes = max(settings.ROW_LANES, min(settings.ROW_BLOCK_MAX, lanes))
    return RowPlan(lanes, values, lanes, n_cols > lanes * values, shuffle)


def topk_plan(n_cols):
    """One block of up to ``TOPK_BLOCK`` threads per row, streaming (no cache)."""
    lanes = min(settings.TOPK_BLOCK, _power_of_two_at_least(n_cols))
    return RowPlan(lanes, 0, lanes, True, runtime.use_shuffle())
