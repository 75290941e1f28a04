"""``parallel=True`` drivers: the rows split into one contiguous chunk per thread.

Each chunk runs the serial function of ``kernels`` on its rows, so both
backends share every line of numerical code. Chunk boundaries fall on whole
short-row blocks, so no block is split between threads.
"""

from numba import prange

from . import blocks, kernels
from .jit import helper, parallel_kernel


@helper
def chunk_start(chunk, n_chunks, n_rows, n_classes):
    """First row of `chunk` among `n_chunks` near-equal chunks of `n_rows` rows."""
    align = blocks.BLOCK_ROWS if n_classes <= blocks.SHORT_ROW_MAX else 1
    units = (n_rows + align - 1) // align
    return min(n_rows, (units * chunk // n_chunks) * align)


@helper
def chunk(c, n_chunks, x):
    """``(start, stop)`` rows of chunk `c` of two-dimensional `x`."""
    n_rows, n_classes = x.shape
    return (
        chunk_start(c, n_chunks, n_rows, n_classes),
        chunk_start(c + 1, n_chunks, n_rows, n_classes),
    )


@parallel_kernel
def softmax_unit(x, out, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.softmax_unit(x, out, start, stop)


@parallel_kernel
def softmax_scaled(x, out, t, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.softmax_scaled(x, out, t, start, stop)


@parallel_kernel
def softmax_pipelined_unit(x, out, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.softmax_pipelined_unit(x, out, start, stop)


@parallel_kernel
def softmax_pipelined_scaled(x, out, t, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.softmax_pipelined_scaled(x, out, t, start, stop)


@parallel_kernel
def softmax_rescaled_unit(x, out, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.softmax_rescaled_unit(x, out, start, stop)


@parallel_kernel
def softmax_rescaled_scaled(x, out, t, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.softmax_rescaled_scaled(x, out, t, start, stop)


@parallel_kernel
def softmax_short_unit(x, out, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.softmax_short_unit(x, out, start, stop)


@parallel_kernel
def softmax_short_scaled(x, out, t, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.softmax_short_scaled(x, out, t, start, stop)


@parallel_kernel
def log_softmax_unit(x, out, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.log_softmax_unit(x, out, start, stop)


@parallel_kernel
def log_softmax_scaled(x, out, t, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.log_softmax_scaled(x, out, t, start, stop)


@parallel_kernel
def log_softmax_short_unit(x, out, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.log_softmax_short_unit(x, out, start, stop)


@parallel_kernel
def log_softmax_short_scaled(x, out, t, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.log_softmax_short_scaled(x, out, t, start, stop)


@parallel_kernel
def log_softmax_streamed_unit(x, out, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.log_softmax_streamed_unit(x, out, start, stop)


@parallel_kernel
def log_softmax_pipelined_unit(x, out, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.log_softmax_pipelined_unit(x, out, start, stop)


@parallel_kernel
def logsumexp_short(x, out, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.logsumexp_short(x, out, start, stop)


@parallel_kernel
def logsumexp(x, out, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.logsumexp(x, out, start, stop)


@parallel_kernel
def softmax_backward(grad, y, out, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, grad)
        kernels.softmax_backward(grad, y, out, start, stop)


@parallel_kernel
def log_softmax_backward(grad, logp, out, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, grad)
        kernels.log_softmax_backward(grad, logp, out, start, stop)


@parallel_kernel
def cross_entropy_class(
    logits, target, weight, loss_out, grad_out, ignore_index, eps, z_loss, scale, n_chunks
):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, logits)
        kernels.cross_entropy_class(
            logits, target, weight, loss_out, grad_out, ignore_index, eps, z_loss, scale,
            start, stop,
        )


@parallel_kernel
def cross_entropy_class_short(
    logits, target, weight, loss_out, grad_out, ignore_index, eps, z_loss, scale, n_chunks
):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, logits)
        kernels.cross_entropy_class_short(
            logits, target, weight, loss_out, grad_out, ignore_index, eps, z_loss, scale,
            start, stop,
        )


@parallel_kernel
def cross_entropy_probability(
    logits, target, weight, loss_out, grad_out, eps, z_loss, scale, n_chunks
):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, logits)
        kernels.cross_entropy_probability(
            logits, target, weight, loss_out, grad_out, eps, z_loss, scale, start, stop
        )


@parallel_kernel
def softmax_topk(x, t, values, index, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.softmax_topk(x, t, values, index, start, stop)


@parallel_kernel
def softmax_topk_short_unit(x, values, index, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.softmax_topk_short_unit(x, values, index, start, stop)


@parallel_kernel
def softmax_topk_short_scaled(x, t, values, index, n_chunks):
    for c in prange(n_chunks):
        start, stop = chunk(c, n_chunks, x)
        kernels.softmax_topk_short_scaled(x, t, values, index, start, stop)
