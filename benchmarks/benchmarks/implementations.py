"""Every implementation the suite compares, behind one way of calling it.

An implementation maps each operation it offers to a function
``f(*inputs, out=None)``: the inputs come from the cached makers in `common`,
converted to the implementation's own array type, and ``out`` (when the
implementation accepts one for that operation) is a preallocated result. `build`
binds everything into a zero-argument call, or raises NotImplementedError for
what cannot run here (asv reports it as skipped); `prepare` also makes one
untimed call, so what asv times is warm.

The fastsoftmax backends are called through the public API with ``backend=``
named, so the suite covers whichever backends this build has. The peers are
``numpy-naive`` (whole-array max, exp, sum, divide, as a user would write it),
``scipy`` (``scipy.special``) and ``torch`` (PyTorch on the CPU, when importable).
"""

import functools
import importlib
import warnings

import fastsoftmax as fs
import numpy as np

from . import common

OPERATIONS = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "softmax_backward",
    "cross_entropy",
    "softmax_topk",
]


def inputs(op, shape, dtype):
    """The NumPy inputs of one operation, from the cached makers."""
    if op == "softmax_backward":
        return common.upstream_grad(shape, dtype), common.probabilities(shape, dtype)
    if op == "cross_entropy":
        return common.logits(shape, dtype), common.class_targets(*shape)
    return (common.logits(shape, dtype),)


def result_shape(op, shape):
    """Shape of the array an ``out=`` argument receives."""
    return shape[:1] if op == "logsumexp" else shape


class Implementation:
    """A table of functions ``op -> f(*inputs, out=None)`` and how to feed them.

    ``out_ops`` lists the operations whose function accepts a preallocated
    ``out``. Subclasses convert NumPy inputs to their own arrays and say why
    they cannot run here.
    """

    out_ops = frozenset()

    def __init__(self, name, functions):
        self.name = name
        self.functions = functions

    def check(self):
        """Raise NotImplementedError when this implementation cannot run here."""

    def convert(self, array):
        return array

    def empty(self, shape, dtype):
        return common.scratch(shape, dtype)

    def bind(self, function, args, out):
        return functools.partial(function, *args, out=out)


class Peer(Implementation):
    """A NumPy-array implementation that needs one importable module."""

    def __init__(self, name, functions, module, out_ops=()):
        super().__init__(name, functions)
        self.module = module
        self.out_ops = frozenset(out_ops)

    def check(self):
        try:
            importlib.import_module(self.module)
        except ImportError as exc:
            raise NotImplementedError(f"{self.module} is not importable: {exc}") from None


class FastSoftmax(Implementation):
    """One fastsoftmax backend, named explicitly in every call."""

    out_ops = frozenset(OPERATIONS) - {"softmax_topk"}

    def __init__(self, backend):
        b = {"backend": backend}
        super().__init__(
            backend,
            {
                "softmax": functools.partial(fs.softmax, **b),
                "log_softmax": functools.partial(fs.log_softmax, **b),
                "logsumexp": functools.partial(fs.logsumexp, **b),
                "softmax_backward": functools.partial(fs.softmax_backward, **b),
                "cross_entropy": lambda x, t, out=None: fs.cross_entropy(
                    x, t, return_grad=True, grad_out=out, **b
                ),
                "softmax_topk": lambda x, out=None: fs.softmax_topk(x, common.TOPK, **b),
            },
        )

    def check(self):
        # A one-element call loads only this backend and raises RuntimeError,
        # with the reason, when it cannot run here; backends() would probe all
        # of them, importing Numba and its CUDA layer in every benchmark process.
        try:
            fs.logsumexp(np.zeros((1, 1)), backend=self.name)
        except RuntimeError as exc:
            raise NotImplementedError(str(exc)) from None
        fs.set_num_threads(common.threads())


class FastSoftmaxCuda(FastSoftmax):
    """The cuda backend on device-resident arrays; each call waits for the GPU."""

    def check(self):
        super().check()
        import numba

        if numba.config.ENABLE_CUDASIM:
            raise NotImplementedError("the CUDA simulator is not benchmarked")

    def convert(self, array):
        from numba import cuda

        return cuda.to_device(array)

    def empty(self, shape, dtype):
        from numba import cuda

        return cuda.device_array(shape, dtype=np.dtype(dtype))

    def bind(self, function, args, out):
        from numba import cuda

        def call():
            result = function(*args, out=out)
            cuda.synchronize()
            return result

        return call


class Torch(Peer):
    """PyTorch on the CPU, with the library's thread count."""

    def __init__(self):
        super().__init__(
            "torch",
            TORCH_FUNCTIONS,
            "torch",
            out_ops=["softmax", "log_softmax", "logsumexp", "softmax_backward"],
        )

    def check(self):
        super().check()
        import torch

        torch.set_num_threads(common.threads())

    def convert(self, array):
        import torch

        with warnings.catch_warnings():
            # The inputs are read-only on purpose; torch never writes them here.
            warnings.filterwarnings("ignore", "The given NumPy array is not writable")
            return torch.from_numpy(array)

    def empty(self, shape, dtype):
        return self.convert(common.scratch(shape, dtype))


# numpy-naive: the textbook whole-array expressions, one full pass per step.


def _naive_softmax(x, out=None):
    z = np.subtract(x, x.max(axis=-1, keepdims=True), out=out)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def _naive_log_softmax(x, out=None):
    z = np.subtract(x, x.max(axis=-1, keepdims=True), out=out)
    z -= np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return z


def _naive_logsumexp(x, out=None):
    m = x.max(axis=-1, keepdims=True)
    return np.add(np.log(np.exp(x - m).sum(axis=-1)), m[:, 0], out=out)


def _naive_softmax_backward(grad, y, out=None):
    gy = np.multiply(grad, y, out=out)
    result = np.subtract(grad, gy.sum(axis=-1, keepdims=True), out=gy)
    result *= y
    return result


def _naive_cross_entropy(x, target, out=None):
    rows = np.arange(target.shape[0])
    logp = _naive_log_softmax(x, out=out)
    loss = -logp[rows, target].mean()
    grad = np.exp(logp, out=logp)
    grad[rows, target] -= 1
    grad /= target.shape[0]
    return loss, grad


def _naive_softmax_topk(x, out=None):
    p = _naive_softmax(x)
    top = np.argpartition(p, -common.TOPK, axis=-1)[:, -common.TOPK :]
    probs = np.take_along_axis(p, top, axis=-1)
    order = np.argsort(-probs, axis=-1, kind="stable")
    return np.take_along_axis(probs, order, axis=-1), np.take_along_axis(top, order, axis=-1)


NAIVE_FUNCTIONS = {
    "softmax": _naive_softmax,
    "log_softmax": _naive_log_softmax,
    "logsumexp": _naive_logsumexp,
    "softmax_backward": _naive_softmax_backward,
    "cross_entropy": _naive_cross_entropy,
    "softmax_topk": _naive_softmax_topk,
}


def _scipy_special(name):
    def call(x, out=None):
        import scipy.special

        return getattr(scipy.special, name)(x, axis=-1)

    return call


# scipy.special has no backward pass, loss or top-k, and no out= arguments.
SCIPY_FUNCTIONS = {name: _scipy_special(name) for name in ("softmax", "log_softmax", "logsumexp")}


# torch: the public functions a PyTorch user calls; the gradients are the ones
# autograd runs.


def _torch_softmax_backward(grad, y, out=None):
    import torch

    if out is None:
        return torch._softmax_backward_data(grad, y, -1, y.dtype)
    return torch.ops.aten._softmax_backward_data.out(grad, y, -1, y.dtype, grad_input=out)


def _torch_cross_entropy(x, target, out=None):
    import torch

    x = x.detach().requires_grad_()
    loss = torch.nn.functional.cross_entropy(x, target)
    loss.backward()
    return loss, x.grad


def _torch_rowwise(name):
    def call(x, out=None):
        import torch

        function = getattr(torch, name)
        return function(x, -1) if out is None else function(x, -1, out=out)

    return call


def _torch_softmax_topk(x, out=None):
    import torch

    return torch.softmax(x, -1).topk(common.TOPK, dim=-1)


TORCH_FUNCTIONS = {
    "softmax": _torch_rowwise("softmax"),
    "log_softmax": _torch_rowwise("log_softmax"),
    "logsumexp": _torch_rowwise("logsumexp"),
    "softmax_backward": _torch_softmax_backward,
    "cross_entropy": _torch_cross_entropy,
    "softmax_topk": _torch_softmax_topk,
}


@functools.cache
def implementation(name):
    """The Implementation called `name` (one of common.IMPLEMENTATIONS)."""
    if name == "cuda":
        return FastSoftmaxCuda(name)
    if name in common.BACKENDS:
        return FastSoftmax(name)
    if name == "numpy-naive":
        return Peer(name, NAIVE_FUNCTIONS, "numpy", out_ops=set(NAIVE_FUNCTIONS) - {"softmax_topk"})
    if name == "scipy":
        return Peer(name, SCIPY_FUNCTIONS, "scipy.special")
    if name == "torch":
        return Torch()
    raise ValueError(f"unknown implementation {name!r}")


def build(op, impl, shape, dtype, output):
    """A zero-argument call of `op` by `impl`, not yet run.

    Raises NotImplementedError when `impl` is unavailable here, lacks `op`, or
    has no ``out`` argument for it and `output` is ``"out"``.
    """
    imp = implementation(impl)
    if op not in imp.functions:
        raise NotImplementedError(f"{impl} has no {op}")
    if output == "out" and op not in imp.out_ops:
        raise NotImplementedError(f"{impl}'s {op} takes no preallocated output")
    imp.check()
    args = [imp.convert(a) for a in inputs(op, shape, dtype)]
    out = imp.empty(result_shape(op, shape), dtype) if output == "out" else None
    return imp.bind(imp.functions[op], args, out)


@functools.lru_cache(maxsize=1)
def prepare(op, impl, shape, dtype, output):
    """`build`, then one untimed call: Numba compiles and thread pools start here.

    Cached, so asv's setup (run again before every sample) reuses the warm call.
    """
    call = build(op, impl, shape, dtype, output)
    call()
    return call


def best_output(op, impl):
    """``"out"`` where `impl` accepts a preallocated result for `op`, else ``"new"``."""
    return "out" if op in implementation(impl).out_ops else "new"


def measure_gbps(call, op, shape, dtype, repeat):
    """Effective GB/s of a prepared call: bytes that must move over the median time."""
    return common.gigabytes_per_second(op, shape, dtype, common.median_seconds(call, repeat))


class TimeOperation:
    """Base of the timing classes: a subclass names `op` and one ``time_`` method.

    Parameters are the shape, the dtype, the implementation and whether the
    result is allocated by the call or written into a preallocated ``out``.
    """

    op = None
    params = [common.SHAPES, common.DTYPES, common.IMPLEMENTATIONS, common.OUTPUTS]
    param_names = ["shape", "dtype", "impl", "output"]
    # Every input is tens of megabytes: a few samples per round are enough.
    # setup already made one untimed call, so asv's own warm-up is not needed.
    repeat = (3, 10, 5.0)
    warmup_time = 0.0
    timeout = common.TIMEOUT

    def setup(self, shape, dtype, impl, output="new"):
        self.call = prepare(self.op, impl, common.shape_of(shape), dtype, output)
