"""One function per operation over the rows ``start:stop`` of its arguments.

These are the serial drivers (called over all rows) and the per-thread work of
the parallel ones. Arguments follow the kernel protocol of
``fastsoftmax._backends``: ``(rows, C)`` arrays with unit stride along the class
axis and any row stride, contiguous one-dimensional per-row arrays. The
``*_short`` variants are for rows of at most ``SHORT_ROW_MAX`` classes; callers
pick them in Python, so that a call compiles only the code it runs.

When an output is the very same array as an input (same start address: the
protocol rules out partial overlaps), the row loop hands the one row view to
both parameters. Helpers are optimized on their own before they are inlined,
so a loop over two rows may already carry a runtime overlap check, which the
one view fails: that loop then runs its scalar fallback. Softmax, the most
used in place, has row code of its own for that case (`rows.softmax_in_place`).
"""

from . import blocks, cross_entropy, rows, topk
from .intrinsics import store_fence, unit_stride
from .jit import helper, kernel

# Log-softmax outputs of at least STREAMED_MIN_BYTES in rows of at least
# STREAMED_ROW_MIN classes are written with streaming stores
# (`intrinsics.store_gaps_streaming`): 8 instead of 12 bytes of memory
# traffic per float32 element. Shorter rows gain less than their partial
# lines cost, as in the C backend (see its medium rows).
STREAMED_ROW_MIN = 512
STREAMED_MIN_BYTES = 16 << 20

# Softmax over rows of at least PIPELINED_ROW_MIN classes, into outputs of at
# least STREAMED_MIN_BYTES, is pipelined through a workspace of two rows per
# thread (`rows.softmax_pipelined`) where the workspaces fit the memory rule
# (`fastsoftmax._backends.WORKSPACE_SHARE`), as in the C backend; without
# one, rows of `rows.RESCALE_MIN_BYTES` to `rows.RESCALE_MAX_BYTES` keep their
# exponentials in the output (`rows.softmax_rescaled`). Streamed
# log_softmax over such rows needs no workspace and is always pipelined, as
# the C backend's float32 log_softmax is.
PIPELINED_ROW_MIN = 16384

softmax_short_unit = blocks.softmax_unit
softmax_short_scaled = blocks.softmax_scaled
log_softmax_short_unit = blocks.log_softmax_unit
log_softmax_short_scaled = blocks.log_softmax_scaled
logsumexp_short = blocks.logsumexp
cross_entropy_class_short = blocks.cross_entropy_class
softmax_topk_short_unit = blocks.softmax_topk_unit
softmax_topk_short_scaled = blocks.softmax_topk_scaled


@helper
def softmax_rows(x, out, t, start, stop):
    """Softmax of rows ``start:stop`` at inverse temperature `t`."""
    inplace = x.ctypes.data == out.ctypes.data
    for i in range(start, stop):
        o = unit_stride(out[i])
        if inplace:
            rows.softmax_in_place(o, t)
        else:
            rows.softmax(unit_stride(x[i]), o, t)


@helper
def log_softmax_rows(x, out, t, start, stop):
    """Log-softmax of rows ``start:stop`` at inverse temperature `t`."""
    inplace = x.ctypes.data == out.ctypes.data
    if not inplace and x.shape[1] <= rows.PAIRED_ROW_MAX:
        for i in range(start, stop - 1, 2):
            rows.log_softmax_pair(
                unit_stride(x[i]), unit_stride(x[i + 1]), unit_stride(out[i]),
                unit_stride(out[i + 1]), t,
            )
        start += (stop - start) // 2 * 2
    for i in range(start, stop):
        o = unit_stride(out[i])
        if inplace:
            rows.log_softmax(o, o, t)
        else:
            rows.log_softmax(unit_stride(x[i]), o, t)


# Each operation has a kernel for the common t = 1, compiled with the literal
# (LLVM then drops the temperature from every loop, and the row code that
# remains runs faster: e.g. 0.65 against 0.90 ns per element at 128 classes),
# and one for any t; the caller picks one, so that a first call compiles only
# the code it runs. (Inlined side by side into one kernel, the t = 1 code of
# log_softmax also ran 40 % slower: rows of 1000 float32 classes, 0.56
# against 0.40 ns per element.)


@kernel
def softmax_unit(x, out, start, stop):
    """Softmax of rows ``start:stop`` at ``t = 1``."""
    softmax_rows(x, out, x.dtype.type(1.0), start, stop)


@kernel
def softmax_scaled(x, out, t, start, stop):
    """Softmax of rows ``start:stop`` at inverse temperature `t`."""
    softmax_rows(x, out, t, start, stop)


@kernel
def softmax_pipelined_unit(x, out, start, stop):
    """`softmax_unit` of long rows through a two-row workspace (`rows.softmax_pipelined`)."""
    rows.softmax_pipelined(x, out, x.dtype.type(1.0), start, stop)
    store_fence()


@kernel
def softmax_pipelined_scaled(x, out, t, start, stop):
    """`softmax_scaled` of long rows through a two-row workspace."""
    rows.softmax_pipelined(x, out, t, start, stop)
    store_fence()


@kernel
def softmax_rescaled_unit(x, out, start, stop):
    """`softmax_unit` of long rows too few for a workspace (`rows.softmax_rescaled`)."""
    rows.softmax_rescaled(x, out, x.dtype.type(1.0), start, stop)


@kernel
def softmax_rescaled_scaled(x, out, t, start, stop):
    """`softmax_scaled` of long rows too few for a workspace."""
    rows.softmax_rescaled(x, out, t, start, stop)


@kernel
def log_softmax_unit(x, out, start, stop):
    """Log-softmax of rows ``start:stop`` at ``t = 1``."""
    log_softmax_rows(x, out, x.dtype.type(1.0), start, stop)


@kernel
def log_softmax_scaled(x, out, t, start, stop):
    """Log-softmax of rows ``start:stop`` at inverse temperature `t`."""
    log_softmax_rows(x, out, t, start, stop)


@kernel
def log_softmax_streamed_unit(x, out, start, stop):
    """`log_softmax_unit` with `out` written by streaming stores
    (`rows.log_softmax_unit_streamed`)."""
    for i in range(start, stop):
        rows.log_softmax_unit_streamed(unit_stride(x[i]), unit_stride(out[i]))
    store_fence()


@kernel
def log_softmax_pipelined_unit(x, out, start, stop):
    """`log_softmax_streamed_unit` of rows of `PIPELINED_ROW_MIN` classes and more,
    pipelined (`rows.log_softmax_unit_pipelined`)."""
    if start < stop:
        rows.log_softmax_unit_pipelined(x, out, start, stop)
    store_fence()


@kernel
def logsumexp(x, out, start, stop):
    """Log-sum-exp of rows ``start:stop`` into ``out[start:stop]``."""
    for i in range(start, stop):
        out[i] = rows.logsumexp(unit_stride(x[i]))


@kernel
def softmax_backward(grad, y, out, start, stop):
    """Softmax vector-Jacobian product of rows ``start:stop``."""
    over_grad = grad.ctypes.data == out.ctypes.data
    over_y = y.ctypes.data == out.ctypes.data
    for i in range(start, stop):
        o = unit_stride(out[i])
        if over_grad:
            rows.softmax_backward(o, unit_stride(y[i]), o)
        elif over_y:
            rows.softmax_backward(unit_stride(grad[i]), o, o)
        else:
            rows.softmax_backward(unit_stride(grad[i]), unit_stride(y[i]), o)


@kernel
def log_softmax_backward(grad, logp, out, start, stop):
    """Log-softmax vector-Jacobian product of rows ``start:stop``."""
    over_grad = grad.ctypes.data == out.ctypes.data
    over_logp = logp.ctypes.data == out.ctypes.data
    for i in range(start, stop):
        o = unit_stride(out[i])
        if over_grad:
            rows.log_softmax_backward(o, unit_stride(logp[i]), o)
        elif over_logp:
            rows.log_softmax_backward(unit_stride(grad[i]), o, o)
        else:
            rows.log_softmax_backward(unit_stride(grad[i]), unit_stride(logp[i]), o)


@kernel
def cross_entropy_class(
    logits, target, weight, loss_out, grad_out, ignore_index, eps, z_loss, scale, start, stop
):
    """Cross-entropy of rows ``start:stop`` against class indices."""
    w_total = float(logits.shape[1]) if weight is None else rows.total(weight)
    if grad_out is None:
        for i in range(start, stop):
            y = target[i]
            if y == ignore_index:
                loss_out[i] = 0.0
            else:
                z = unit_stride(logits[i])
                loss_out[i] = cross_entropy.class_target(
                    z, y, weight, w_total, eps, z_loss, scale, None
                )
        return
    inplace = logits.ctypes.data == grad_out.ctypes.data
    for i in range(start, stop):
        y = target[i]
        g = unit_stride(grad_out[i])
        if y == ignore_index:
            loss_out[i] = 0.0
            g[:] = 0.0
        elif inplace:
            loss_out[i] = cross_entropy.class_target(g, y, weight, w_total, eps, z_loss, scale, g)
        else:
            loss_out[i] = cross_entropy.class_target(
                unit_stride(logits[i]), y, weight, w_total, eps, z_loss, scale, g
            )


@kernel
def cross_entropy_probability(
    logits, target, weight, loss_out, grad_out, eps, z_loss, scale, start, stop
):
    """Cross-entropy of rows ``start:stop`` against target probabilities."""
    if grad_out is None:
        for i in range(start, stop):
            loss_out[i] = cross_entropy.probability_target(
                unit_stride(logits[i]), unit_stride(target[i]), weight, eps, z_loss, scale, None
            )
        return
    inplace = logits.ctypes.data == grad_out.ctypes.data
    for i in range(start, stop):
        g = unit_stride(grad_out[i])
        t = unit_stride(target[i])
        if inplace:
            loss_out[i] = cross_entropy.probability_target(g, t, weight, eps, z_loss, scale, g)
        else:
            loss_out[i] = cross_entropy.probability_target(
                unit_stride(logits[i]), t, weight, eps, z_loss, scale, g
            )


@kernel
def softmax_topk(x, t, values, index, start, stop):
    """Top-k softmax of rows ``start:stop``; ``k = values.shape[1]``."""
    for i in range(start, stop):
        topk.softmax_topk(unit_stride(x[i]), t, unit_stride(values[i]), unit_stride(index[i]))
