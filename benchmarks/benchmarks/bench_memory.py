"""Peak resident memory of the calls that allocate their result.

asv reports the process's peak RSS, which includes the interpreter, the inputs
and whatever each implementation loads (Numba with LLVM adds about 125 MB,
PyTorch more): track one implementation across commits, and read differences
between implementations with that in mind. With ``out=`` fastsoftmax
allocates nothing the size of the input, so only the allocating calls are here:
softmax, and cross_entropy with its gradient. Host memory only: the cuda
backend is not measured.
"""

from . import common
from .implementations import build

# Rows of the small input that compiles the kernels before the real input
# exists, so compiler memory does not count as the call's.
WARMUP_ROWS = 4


class PeakMemory:
    """Base: a subclass names `op`; setup builds the call without running it."""

    op = None
    params = [common.SHAPES, common.DTYPES, common.IMPLEMENTATIONS]
    param_names = ["shape", "dtype", "impl"]
    timeout = common.TIMEOUT

    def setup(self, shape, dtype, impl):
        if impl == "cuda":
            raise NotImplementedError("peak host memory says nothing about GPU memory")
        rows, classes = common.shape_of(shape)
        build(self.op, impl, (WARMUP_ROWS, classes), dtype, "new")()
        self.call = build(self.op, impl, (rows, classes), dtype, "new")


class SoftmaxMemory(PeakMemory):
    op = "softmax"

    def peakmem_softmax_alloc(self, shape, dtype, impl):
        self.call()


class CrossEntropyMemory(PeakMemory):
    op = "cross_entropy"

    def peakmem_cross_entropy_grad(self, shape, dtype, impl):
        self.call()
