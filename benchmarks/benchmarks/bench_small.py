"""Small calls: what one call costs beyond its arithmetic.

32 rows of 100 float32 classes take the kernels about a microsecond; the rest
of a call's time is argument checking, dispatch and the way into the kernel,
which is what a program calling once per small batch pays. Regressions there
show up here, where the large inputs of the other benchmarks hide them.
"""

from . import common
from .implementations import best_output, prepare

SHAPE = (32, 100)
DTYPE = "float32"
OPERATIONS = ["softmax", "log_softmax", "cross_entropy"]


class SmallCall:
    params = [OPERATIONS, common.IMPLEMENTATIONS]
    param_names = ["op", "impl"]

    def setup(self, op, impl):
        self.call = prepare(op, impl, SHAPE, DTYPE, best_output(op, impl))

    def time_small_call(self, op, impl):
        self.call()
