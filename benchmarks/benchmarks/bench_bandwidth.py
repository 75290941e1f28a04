"""Effective bandwidth in GB/s, for the graphs: every operation and implementation.

GB/s is the bytes an operation must read once and write once
(`common.bytes_moved`) over the median time of `CALLS` calls. Each
implementation writes into a preallocated result where it accepts one, so the
figure is the kernel's rather than the allocator's. ``benchmarks/gb_table.py``
prints the same figures as a table without asv.

Higher is better here, while ``asv compare`` and ``asv continuous`` take a larger
value as worse: gate regressions on the ``time_`` benchmarks.
"""

from . import common
from .implementations import OPERATIONS, best_output, measure_gbps, prepare

CALLS = 5


class Bandwidth:
    params = [OPERATIONS, common.SHAPES, common.DTYPES, common.IMPLEMENTATIONS]
    param_names = ["op", "shape", "dtype", "impl"]
    unit = "GB/s"
    timeout = common.TIMEOUT

    def setup(self, op, shape, dtype, impl):
        self.shape = common.shape_of(shape)
        self.call = prepare(op, impl, self.shape, dtype, best_output(op, impl))

    def track_gbps(self, op, shape, dtype, impl):
        return round(measure_gbps(self.call, op, self.shape, dtype, CALLS), 3)
