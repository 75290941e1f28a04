"""Forward passes: softmax, log_softmax and logsumexp."""

from . import common
from .implementations import TimeOperation, implementation


class Softmax(TimeOperation):
    op = "softmax"

    def time_softmax(self, shape, dtype, impl, output):
        self.call()


class LogSoftmax(TimeOperation):
    op = "log_softmax"

    def time_log_softmax(self, shape, dtype, impl, output):
        self.call()


class LogSumExp(TimeOperation):
    op = "logsumexp"

    def time_logsumexp(self, shape, dtype, impl, output):
        self.call()


class MaskedSoftmax:
    """softmax where a tenth of the logits are -inf (masked classes).

    A masked class must cost no more than any other: an exp that reached 0
    through an underflowing multiplication took a microcode assist per lane
    on x86 and made such rows 20-80 % slower. Into a preallocated output
    where the implementation takes one.
    """

    params = [["1048576x10", "65536x128", "16384x1000"], common.DTYPES, common.IMPLEMENTATIONS]
    param_names = ["shape", "dtype", "impl"]
    repeat = (3, 10, 5.0)
    warmup_time = 0.0
    timeout = common.TIMEOUT

    def setup(self, shape, dtype, impl):
        imp = implementation(impl)
        if "softmax" not in imp.functions:
            raise NotImplementedError(f"{impl} has no softmax")
        imp.check()
        dims = common.shape_of(shape)
        x = imp.convert(common.masked_logits(dims, dtype))
        out = imp.empty(dims, dtype) if "softmax" in imp.out_ops else None
        self.call = imp.bind(imp.functions["softmax"], [x], out)
        self.call()  # compiles, starts thread pools

    def time_softmax_masked(self, shape, dtype, impl):
        self.call()
