"""Fused cross-entropy kernels: per-row loss and the gradient from one read of the logits.

Row layout as in ``forward``. The first pass finds the row's log-sum-exp (and,
for probability targets, ``sum_j w[j] * t'[j]``); the second pass, over the
registers and the streamed rest of the row, writes the gradient and adds up
the loss terms that need the whole row (label smoothing, probability targets).
``-log p_j`` is ``log(s) - (z_j - m)`` from the shifted logits, never
``lse - z_j``, which cancels when the logits share a large offset; rows whose
softmax is undefined (NaN, +inf, only -inf) give NaN loss and gradient.
``params`` is the float tuple ``(label_smoothing, z_loss, weight_sum)``; the
gradient is divided by ``divisor[0]``, a device value (the mean's denominator,
else 1; 0 gives infinity, as a mean over no rows does). ``weight`` is only
read when the kernel was built with weights and ``grad`` only written when it
was built with a gradient. Loss terms and row sums are float64; the
per-element gradient is in the compute dtype.
"""

import functools
import math

import numpy as np
from numba import cuda

from . import reduce, rowmath, runtime
from .forward import row_of_thread


@functools.cache
def class_target(ftype, plan, has_weight, has_grad):
    """Kernel ``(logits, target, weight, loss, grad, divisor, ignore_index, params)``."""
    lanes, values, stream = plan.lanes, plan.values, plan.stream
    reducers = reduce.reducers(lanes, plan.block, plan.shuffle, ftype)
    group_merge, group_sum = reducers.merge, reducers.sum
    locate = row_of_thread(lanes, plan.rows_per_block)
    neg_inf = ftype(-math.inf)
    one = ftype(1)
    zero = ftype(0)
    nan = ftype(math.nan)

    @runtime.device
    def class_weight(weight, c):
        if has_weight:
            return ftype(weight[c])
        return one

    @runtime.kernel(plan.block)
    def kernel(logits, target, weight, loss, grad, divisor, ignore_index, params):
        eps, z_loss, weight_sum = params
        grad_scale = 1.0 / divisor[0] if divisor[0] != 0 else math.inf
        n1, n_cols = logits.shape[1], logits.shape[2]
        row, lane, active = locate(logits.shape[0] * n1)
        r0 = row // n1 if active else 0
        r1 = row % n1 if active else 0
        y = np.int64(target[r0, r1]) if active else np.int64(ignore_index)
        # Out-of-range targets are reported by the check kernel; here they
        # only must not be read from.
        kept = active and y != ignore_index and 0 <= y < n_cols
        # Read before the row's threads meet, since grad may be logits itself.
        z_y = ftype(logits[r0, r1, y]) if kept else zero
        w_y = class_weight(weight, y) if kept else one
        cache = cuda.local.array(values, ftype)
        m = neg_inf
        for j in range(values):
            c = lane + j * lanes
            v = neg_inf
            if kept and c < n_cols:
                v = ftype(logits[r0, r1, c])
            cache[j] = v
            if v > m:
                m = v
        s = 0.0
        for j in range(values):
            if kept and lane + j * lanes < n_cols:
                s += rowmath.term(cache[j], m, one)
        if stream:
            c = lane + values * lanes
            while kept and c < n_cols:
                m, s = rowmath.absorb(m, s, ftype(logits[r0, r1, c]), one)
                c += lanes
        m, s = group_merge(m, s, one)
        log_s = math.nan
        inv_s = nan
        if rowmath.normaliser_is_usable(m, s):
            log_s = math.log(s)
            inv_s = ftype(1.0 / s)
        lse = m + log_s

        smooth = eps / n_cols
        # d loss / d z_j = coeff * p_j - smooth * w_j - [j == y] * (1 - eps) * w_y,
        # times grad_scale last (so a mean's gradient is the sum's, scaled).
        coeff = ftype((1.0 - eps) * w_y + smooth * weight_sum + 2.0 * z_loss * lse)
        smooth_w = ftype(smooth)
        hit = ftype((1.0 - eps) * w_y)
        scale = ftype(grad_scale)

        smooth_sum = 0.0
        for j in range(values):
            c = lane + j * lanes
            if active and c < n_cols:
                w = class_weight(weight, c)
                if kept and eps > 0:
                    smooth_sum += w * (log_s - (cache[j] - m))
                if has_grad:
                    g = zero
                    if kept:
                        g = coeff * (math.exp(cache[j] - m) * inv_s) - smooth_w * w
                        if c == y:
                            g -= hit
                        g *= scale
                    grad[r0, r1, c] = g
        if stream and (has_grad or eps > 0):
            c = lane + values * lanes
            while active and c < n_cols:
                w = class_weight(weight, c)
                g = zero
                if kept:
                    z = ftype(logits[r0, r1, c])
                    if eps > 0:
                        smooth_sum += w * (log_s - (z - m))
                    g = coeff * (math.exp(z - m) * inv_s) - smooth_w * w
                    if c == y:
                        g -= hit
                    g *= scale
                if has_grad:
                    grad[r0, r1, c] = g
                c += lanes

        row_loss = (1.0 - eps) * w_y * (log_s - (z_y - m)) + z_loss * lse * lse
        if eps > 0:
            row_loss += smooth * group_sum(smooth_sum)
        if active and lane == 0:
            loss[r0, r1] = row_loss if kept else 0.0

    return kernel


@functools.cache
def probability_target(ftype, plan, has_weight, has_grad):
    """Kernel ``(logits, target, weight, loss, grad, divisor, params)`` for target probabilities."""
    lanes, values, stream = plan.lanes, plan.values, plan.stream
    reducers = reduce.reducers(lanes, plan.block, plan.shuffle, ftype)
    group_merge, group_sum = reducers.merge, reducers.sum
    locate = row_of_thread(lanes, plan.rows_per_block)
    neg_inf = ftype(-math.inf)
    one = ftype(1)
    zero = ftype(0)
    nan = ftype(math.nan)

    @runtime.device
    def weighted_target(weight, t, c, eps, smooth):
        """``w[c] * t'`` with the smoothed target ``t' = (1 - eps) * t + eps / C``."""
        t_smooth = (1.0 - eps) * ftype(t) + smooth
        if has_weight:
            return ftype(ftype(weight[c]) * t_smooth)
        return ftype(t_smooth)

    @runtime.kernel(plan.block)
    def kernel(logits, target, weight, loss, grad, divisor, params):
        eps, z_loss, weight_sum = params
        grad_scale = 1.0 / divisor[0] if divisor[0] != 0 else math.inf
        n1, n_cols = logits.shape[1], logits.shape[2]
        row, lane, active = locate(logits.shape[0] * n1)
        r0 = row // n1 if active else 0
        r1 = row % n1 if active else 0
        smooth = eps / n_cols
        cache_z = cuda.local.array(values, ftype)
        cache_wt = cuda.local.array(values, ftype)
        m = neg_inf
        wt_sum = 0.0
        for j in range(values):
            c = lane + j * lanes
            v = neg_inf
            wt = zero
            if active and c < n_cols:
                v = ftype(logits[r0, r1, c])
                wt = weighted_target(weight, target[r0, r1, c], c, eps, smooth)
                wt_sum += wt
            cache_z[j] = v
            cache_wt[j] = wt
            if v > m:
                m = v
        s = 0.0
        for j in range(values):
            if active and lane + j * lanes < n_cols:
                s += rowmath.term(cache_z[j], m, one)
        if stream:
            c = lane + values * lanes
            while active and c < n_cols:
                m, s = rowmath.absorb(m, s, ftype(logits[r0, r1, c]), one)
                wt_sum += weighted_target(weight, target[r0, r1, c], c, eps, smooth)
                c += lanes
        m, s = group_merge(m, s, one)
        wt_sum = group_sum(wt_sum)
        log_s = math.nan
        inv_s = nan
        if rowmath.normaliser_is_usable(m, s):
            log_s = math.log(s)
            inv_s = ftype(1.0 / s)
        lse = m + log_s
        # d loss / d z_j = (sum_k w_k t'_k + 2 z_loss lse) p_j - w_j t'_j, times grad_scale
        coeff = ftype(wt_sum + 2.0 * z_loss * lse)
        scale = ftype(grad_scale)

        loss_sum = 0.0
        for j in range(values):
            c = lane + j * lanes
            if active and c < n_cols:
                loss_sum += cache_wt[j] * (log_s - (cache_z[j] - m))
                if has_grad:
                    p = math.exp(cache_z[j] - m) * inv_s
                    grad[r0, r1, c] = (coeff * p - cache_wt[j]) * scale
        if stream:
            c = lane + values * lanes
            while active and c < n_cols:
                z = ftype(logits[r0, r1, c])
                wt = weighted_target(weight, target[r0, r1, c], c, eps, smooth)
                loss_sum += wt * (log_s - (z - m))
                if has_grad:
                    grad[r0, r1, c] = (coeff * (math.exp(z - m) * inv_s) - wt) * scale
                c += lanes
        row_loss = group_sum(loss_sum) + z_loss * lse * lse
        if active and lane == 0:
            loss[r0, r1] = row_loss

    return kernel
