"""Per-row helpers of the fused cross-entropy: loss and gradient in one sweep.

With ``lse`` the row's log-sum-exp, ``p = exp(z - lse)`` and ``eps`` the label
smoothing, a row with class target ``y`` has

    loss = (1 - eps) * w[y] * (lse - z[y]) + eps / C * sum_j w[j] * (lse - z[j])
           + z_loss * lse**2
    grad = scale * (((1 - eps) * w[y] + eps / C * sum(w) + 2 * z_loss * lse) * p
                    - eps / C * w - (1 - eps) * w[y] * onehot(y))

and a row with target probabilities ``t`` has, with ``q = (1 - eps) * t + eps / C``,

    loss = sum_j w[j] * q[j] * (lse - z[j]) + z_loss * lse**2
    grad = scale * ((sum(w * q) + 2 * z_loss * lse) * p - w * q).

Differences ``lse - z[j]`` are taken as ``(m - z[j]) + log(s)``, with ``m`` the
row maximum and ``s`` the sum of ``exp(z - m)``, so no large terms cancel (and
sums of them as ``sum(w) * log(s) + sum_j w[j] (m - z[j])``); ``p`` is
``exp(z - m) / s``, with ``s`` summed across vector lanes where only the loss
is asked for (within about 1e-6 relative in float32) and in chunks of
``rows.LANE_CHUNK`` where the gradient is, as softmax sums it. Rows without a
finite maximum (NaN, ``+inf``, all ``-inf``) take a float64 path that applies
the formulas literally, giving what the float64 reference gives.
"""

import math

import numpy as np

from . import rows
from .elementary import exp, exp_nonpositive, log
from .jit import helper, reduction


@helper
def target_weight(j, w, t, keep, spread):
    """``w[j] * q[j]`` in float64, with unit weights for None and ``q = 1`` without `t`."""
    factor = 1.0 if w is None else float(w[j])
    if t is not None:
        factor *= keep * float(t[j]) + spread
    return factor


@helper
def literal_loss(z, w, t, keep, spread, lse):
    """``sum_j w[j] * q[j] * (lse - z[j])`` in float64, term by term."""
    total = 0.0
    for j in range(z.shape[0]):
        total += target_weight(j, w, t, keep, spread) * (lse - float(z[j]))
    return total


@helper
def literal_gradient(z, w, t, keep, spread, lse, coef, off, g):
    """``g = coef * exp(z - lse) - off * w * q`` in float64, term by term."""
    for j in range(z.shape[0]):
        g[j] = coef * exp(float(z[j]) - lse) - off * target_weight(j, w, t, keep, spread)


@helper
def class_loss(gap, log_s, lse, wy, smooth_gaps, w_total, eps, z_loss, n):
    """Loss of a row with a finite maximum ``m``, against class ``y``.

    ``gap = m - z[y]``, ``lse = m + log_s``; ``smooth_gaps = sum_j w[j] (m - z[j])``
    is only used when ``eps > 0`` (at 0, a -inf logit would give 0 * inf).
    """
    loss = (1.0 - eps) * wy * (gap + log_s)
    if eps > 0.0:
        loss += eps / n * (w_total * log_s + smooth_gaps)
    return loss + z_loss * lse * lse


@helper
def class_coefficient(wy, lse, w_total, eps, z_loss, scale, n):
    """The factor of ``p`` in the gradient of a row against class ``y``."""
    return scale * ((1.0 - eps) * wy + eps / n * w_total + 2.0 * z_loss * lse)


@helper
def class_target(z, y, w, w_total, eps, z_loss, scale, g):
    """Loss of row `z` against class `y`; writes its gradient to `g` unless None.

    Without `g`, the maximum and the sum come from one online pass. With it,
    each exponential is computed once: stored in `g` (which may be `z`) as
    its sum is taken, then scaled there into the gradient. Computing them
    again for the gradient took 1.7x the time of this over 1000 classes where
    the exponential bounds the row (AVX2, float32, 2 threads, 16384 rows: 24.8
    against 14.7 ms).
    """
    n = z.shape[0]
    one = z.dtype.type(1.0)
    if g is None:
        m, s = rows.online_lse(z, one, True)
    else:
        m = rows.row_max_skipping_nan(z)
    if not math.isfinite(m):
        if g is not None:
            m, s = rows.online_lse(z, one, True)
        return literal_class_target(z, y, w, w_total, eps, z_loss, scale, rows.lse_value(m, s), g)
    wy = 1.0 if w is None else float(w[y])
    gap = float(m) - float(z[y])
    # read from z before the exponentials overwrite it (g may be z)
    smooth_gaps = rows.weighted_sum(z, w, m) if eps > 0.0 else 0.0
    if g is not None:
        if g.ctypes.data == z.ctypes.data:
            s = rows.store_exp_in_place(g, m, one)
        else:
            s = rows.store_exp(z, g, m, one)
        if s != s:  # a NaN logit, which the maximum skipped: NaN everywhere
            g[:] = np.nan
            return math.nan
    log_s = log(s)
    lse = float(m) + log_s
    loss = class_loss(gap, log_s, lse, wy, smooth_gaps, w_total, eps, z_loss, n)
    if g is not None:
        a = z.dtype.type(class_coefficient(wy, lse, w_total, eps, z_loss, scale, n) / s)
        b = z.dtype.type(scale * eps / n)
        for j in range(n):
            if w is None:
                g[j] = a * g[j] - b
            else:
                g[j] = a * g[j] - b * w[j]
        g[y] -= z.dtype.type(scale * (1.0 - eps) * wy)
    return loss


@helper
def literal_class_target(z, y, w, w_total, eps, z_loss, scale, lse, g):
    """`class_target` for a row whose maximum is not finite, in float64 as written."""
    n = z.shape[0]
    wy = 1.0 if w is None else float(w[y])
    loss = (1.0 - eps) * wy * (lse - float(z[y]))
    if eps > 0.0:
        loss += eps / n * literal_loss(z, w, None, 1.0, 0.0, lse)
    loss += z_loss * lse * lse
    if lse == math.inf:  # no softmax: NaN, not (lse - z[y]) + z_loss * lse**2 = inf
        loss = math.nan
    if g is not None:
        coefficient = class_coefficient(wy, lse, w_total, eps, z_loss, scale, n)
        literal_gradient(z, w, None, 1.0, 0.0, lse, coefficient, scale * eps / n, g)
        g[y] -= z.dtype.type(scale * (1.0 - eps) * wy)
    return loss


@reduction
def target_sums(z, t, w, keep, spread, m):
    """``sum(w * q)`` and ``sum(w * q * (m - z))`` in float64, ``q = keep * t + spread``."""
    wq = 0.0
    shifted = 0.0
    for j in range(z.shape[0]):
        q = keep * t[j] + spread
        if w is not None:
            q *= w[j]
        wq += q
        shifted += q * (m - z[j])
    return wq, shifted


@helper
def probability_target(z, t, w, eps, z_loss, scale, g):
    """Loss of row `z` against target probabilities `t`; gradient to `g` unless None."""
    n = z.shape[0]
    m, s = rows.online_lse(z, z.dtype.type(1.0), True)
    lse = rows.lse_value(m, s)
    keep = 1.0 - eps
    spread = eps / n
    keep_t = z.dtype.type(keep)
    spread_t = z.dtype.type(spread)
    wq, shifted = target_sums(z, t, w, keep_t, spread_t, m)
    finite = math.isfinite(m)
    if finite:
        loss = wq * log(s) + shifted
    else:
        loss = literal_loss(z, w, t, keep, spread, lse)
    loss += z_loss * lse * lse
    if g is None:
        return loss
    coef = scale * (wq + 2.0 * z_loss * lse)
    if finite:
        a = z.dtype.type(coef / s)
        b = z.dtype.type(scale)
        for j in range(n):
            q = keep_t * t[j] + spread_t
            if w is not None:
                q *= w[j]
            g[j] = a * exp_nonpositive(z[j] - m) - b * q
    else:
        literal_gradient(z, w, t, keep, spread, lse, coef, scale, g)
    return loss
