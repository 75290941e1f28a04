"""Kernel backends: one module per backend, loaded lazily by ``fastsoftmax._dispatch``.

Every backend module exposes the same small protocol. The public API has already
validated everything, chosen the compute dtype and moved the class axis last, so a
kernel never validates and never allocates arrays the size of its input.

Module-level attributes
-----------------------
``availability() -> (available: bool, reason: str, version: str | None)``
    Cheap, compiles nothing, never raises. ``reason`` is ``""`` when available.

Host kernels (backends ``numpy``, ``c``, ``numba``, ``numba-parallel``)
----------------------------------------------------------------------
All array arguments are NumPy arrays of the compute dtype (float32 or float64,
native byte order, aligned). Two-dimensional arguments are ``(rows, C)`` with a unit
stride along the class axis and any row stride (a multiple of the item size,
possibly negative); one-dimensional arguments are contiguous. ``out`` may be the
very same array as an input (in place); it never partly overlaps one. There is at
least one row and ``C >= 1`` (the API answers empty inputs itself). Kernels
release the GIL where they can and are safe to call from many threads at once.

``softmax(x, out, inv_temperature)``
    ``out = exp((x - max) * inv_temperature) / sum(...)`` per row.
``log_softmax(x, out, inv_temperature)``
    ``out = (x - max) * inv_temperature - log(sum(exp(...)))`` per row.
``logsumexp(x, out)``
    ``out`` is one-dimensional ``(rows,)``: ``max + log(sum(exp(x - max)))``.
``softmax_backward(grad, y, out)``
    ``out = y * (grad - sum(grad * y))`` per row.
``log_softmax_backward(grad, logp, out)``
    ``out = grad - exp(logp) * sum(grad)`` per row.
``cross_entropy(logits, target, weight, loss_out, grad_out, ignore_index,
label_smoothing, z_loss, grad_scale)``
    One fused pass per row. ``target`` is either int64 ``(rows,)`` class indices,
    each in ``[0, C)`` or equal to ``ignore_index``, or ``(rows, C)`` probabilities
    of the compute dtype. ``weight`` is ``None`` or a contiguous ``(C,)`` array of
    the compute dtype. ``loss_out`` is ``(rows,)``. ``grad_out`` is ``None``
    (loss only) or ``(rows, C)`` and may be ``logits`` itself. The per-row loss is
    ``(1-eps) * w[y] * (lse - z[y]) + eps/C * sum_j w[j] * (lse - z[j])
    + z_loss * lse**2`` (probability targets: ``sum_j w[j] * t'[j] * (lse - z[j])
    + z_loss * lse**2`` with ``t' = (1-eps) * t + eps/C``); the smoothing term is
    left out when ``eps == 0`` (so a ``-inf`` logit elsewhere cannot turn the loss
    into ``0 * inf``). Compute ``lse - z[j]`` as ``log(s) - (z[j] - max)`` from the
    shifted logits: with logits near 1e30 the direct difference loses the loss to
    cancellation. The gradient row is
    ``grad_scale`` times its derivative. Ignored rows get loss 0 and gradient 0.
``softmax_topk(x, inv_temperature, probs_out, index_out)``
    ``k = probs_out.shape[1]`` (1 <= k <= C); ``index_out`` is int64. The k largest
    probabilities per row ordered by logit (descending), equal logits by lower
    index, from one
    pass that never materialises the full softmax. A row whose softmax is NaN
    gives NaN probabilities and indices ``0..k-1``.

Device backend (``cuda``)
-------------------------
Serves arrays exposing ``__cuda_array_interface__``; see ``cuda_backend``.
"""

# A kernel may use a workspace of a few rows (softmax over long rows keeps its
# exponentials there); all of a call's workspaces together stay under this
# share of the input, since DESIGN.md lets peak memory grow by less than 1 %
# of it when `out=` is given.
WORKSPACE_SHARE = 1 / 128
