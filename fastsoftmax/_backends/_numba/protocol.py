"""The kernel protocol of ``fastsoftmax._backends`` on top of the row kernels.

`Protocol` turns each protocol call into one call of a named operation over
all rows; the ``run`` function given to it decides how (serially, or split
across threads). Both Numba backends are a `Protocol` with their own ``run``.
"""

import numpy as np

from .. import WORKSPACE_SHARE
from . import kernels, rows
from .blocks import SHORT_ROW_MAX

_INT64 = np.iinfo(np.int64)


def _by_width(name, x):
    """The kernel name for rows of `x`: the ``_short`` variant for short rows."""
    return name + "_short" if x.shape[1] <= SHORT_ROW_MAX else name


def _streams(x, out):
    """Whether log_softmax at ``t = 1`` streams its output: rows long enough and a
    large output (`kernels.log_softmax_streamed_unit`)."""
    return x.shape[1] >= kernels.STREAMED_ROW_MIN and out.nbytes >= kernels.STREAMED_MIN_BYTES


def _pipelines(x, out, threads):
    """Whether softmax takes the ``softmax_pipelined`` kernels: long rows, a large
    output, and enough rows that two workspace rows per thread fit the memory rule."""
    n_rows, n_cols = x.shape
    return (
        n_cols >= kernels.PIPELINED_ROW_MIN
        and out.nbytes >= kernels.STREAMED_MIN_BYTES
        and 2 * threads * n_cols <= x.size * WORKSPACE_SHARE
    )


def _rescales(x, out):
    """Whether softmax takes the ``softmax_rescaled`` kernels (when it has no workspace,
    see `_pipelines`): a large output, and rows too long for L2 but short enough that
    each row's output is still in cache when it is scaled."""
    row_bytes = x.shape[1] * x.itemsize
    return (
        out.nbytes >= kernels.STREAMED_MIN_BYTES
        and rows.RESCALE_MIN_BYTES <= row_bytes <= rows.RESCALE_MAX_BYTES
    )


class Protocol:
    """Protocol functions that forward to ``run(name, rows, args)``.

    ``threads(x)`` is how many threads ``run`` gives a call over `x`.
    """

    def __init__(self, run, threads=lambda x: 1):
        self._run = run
        self._threads = threads

    def _by_temperature(self, name, x, out, inv_temperature):
        """Run ``name + "_unit"`` at ``t = 1``, else ``name + "_scaled"`` with `t`:
        separate kernels, so that a first call compiles only one of them."""
        if inv_temperature == 1.0:
            self._run(name + "_unit", x, (x, out))
        else:
            self._run(name + "_scaled", x, (x, out, float(inv_temperature)))

    def softmax(self, x, out, inv_temperature):
        if _pipelines(x, out, self._threads(x)):
            name = "softmax_pipelined"
        elif _rescales(x, out):
            name = "softmax_rescaled"
        else:
            name = _by_width("softmax", x)
        self._by_temperature(name, x, out, inv_temperature)

    def log_softmax(self, x, out, inv_temperature):
        # streamed stores only at t = 1; rows of PIPELINED_ROW_MIN and more pipelined
        if inv_temperature == 1.0 and _streams(x, out):
            if x.shape[1] >= kernels.PIPELINED_ROW_MIN:
                self._run("log_softmax_pipelined_unit", x, (x, out))
            else:
                self._run("log_softmax_streamed_unit", x, (x, out))
            return
        self._by_temperature(_by_width("log_softmax", x), x, out, inv_temperature)

    def logsumexp(self, x, out):
        self._run(_by_width("logsumexp", x), x, (x, out))

    def softmax_backward(self, grad, y, out):
        self._run("softmax_backward", grad, (grad, y, out))

    def log_softmax_backward(self, grad, logp, out):
        self._run("log_softmax_backward", grad, (grad, logp, out))

    def cross_entropy(
        self, logits, target, weight, loss_out, grad_out, ignore_index, label_smoothing,
        z_loss, grad_scale,
    ):
        options = (float(label_smoothing), float(z_loss), float(grad_scale))
        if target.ndim == 2:
            self._run(
                "cross_entropy_probability",
                logits,
                (logits, target, weight, loss_out, grad_out) + options,
            )
            return
        # An ignore_index outside int64 matches no target (all were checked
        # to lie in [0, C)); -1 matches none either and fits the kernel's type.
        if not _INT64.min <= ignore_index <= _INT64.max:
            ignore_index = -1
        self._run(
            _by_width("cross_entropy_class", logits),
            logits,
            (logits, target, weight, loss_out, grad_out, ignore_index) + options,
        )

    def softmax_topk(self, x, inv_temperature, probs_out, index_out):
        t = float(inv_temperature)
        if x.shape[1] > SHORT_ROW_MAX:  # one kernel: the heap, not the exps, dominates
            self._run("softmax_topk", x, (x, t, probs_out, index_out))
        elif t == 1.0:  # short rows: a kernel per temperature case, as softmax
            self._run("softmax_topk_short_unit", x, (x, probs_out, index_out))
        else:
            self._run("softmax_topk_short_scaled", x, (x, t, probs_out, index_out))

    def export(self, namespace):
        """Bind the protocol functions as module-level names of `namespace`."""
        for name in (
            "softmax",
            "log_softmax",
            "logsumexp",
            "softmax_backward",
            "log_softmax_backward",
            "cross_entropy",
            "softmax_topk",
        ):
            namespace[name] = getattr(self, name)
