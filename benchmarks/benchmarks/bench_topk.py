"""The top-5 softmax probabilities per row and their class indices."""

from . import common
from .implementations import TimeOperation


class SoftmaxTopK(TimeOperation):
    op = "softmax_topk"
    # softmax_topk has no out= argument anywhere: only the allocating variant.
    params = [common.SHAPES, common.DTYPES, common.IMPLEMENTATIONS]
    param_names = ["shape", "dtype", "impl"]

    def time_softmax_topk(self, shape, dtype, impl):
        self.call()
