"""Scalar device functions shared by the row kernels.

A part of a row is summarised by ``(m, s)``: its largest value ``m`` and
``s = sum(exp((x - m) * inv_t))`` in float64. NaN entries make ``s`` NaN, an
entry equal to an infinite ``m`` counts as 1 (never ``inf - inf``), and ``-inf``
entries add nothing once a larger value is seen, so the NaN/inf table of the
contract falls out of `log_normaliser` and `normaliser_is_usable`.
"""

import math

from . import runtime


@runtime.device
def absorb(m, s, v, inv_t):
    """Add one value `v` to the summary ``(m, s)``."""
    if v > m:
        return v, s * math.exp((m - v) * inv_t) + 1.0
    if v == m:
        return m, s + 1.0
    return m, s + math.exp((v - m) * inv_t)


@runtime.device
def merge(m1, s1, m2, s2, inv_t):
    """Combine two summaries; symmetric, so every thread gets the same bits."""
    if m2 > m1:
        m1, s1, m2, s2 = m2, s2, m1, s1
    if m1 == m2:
        return m1, s1 + s2
    return m1, s1 + s2 * math.exp((m2 - m1) * inv_t)


@runtime.device
def term(v, m, inv_t):
    """``exp((v - m) * inv_t)`` for a value `v` already counted in the maximum `m`."""
    if v == m:
        return 1.0
    return math.exp((v - m) * inv_t)


@runtime.device
def normaliser_is_usable(m, s):
    """True when a row's softmax is defined: finite maximum and no NaN."""
    return math.isfinite(m) and s == s


@runtime.device
def log_normaliser(m, s):
    """``m + log(s)``: logsumexp of the row (-inf, +inf or NaN by the table)."""
    if math.isfinite(m):
        return m + math.log(s)
    # -inf (all -inf), +inf (a +inf entry) or NaN (a NaN entry): s - s is 0
    # unless s is NaN.
    return m + (s - s)


@runtime.device
def ranks_before(v1, i1, v2, i2):
    """True when ``(v1, i1)`` comes before ``(v2, i2)``: larger value, then lower index.

    A negative index marks an empty slot, which comes after everything.
    """
    if i2 < 0:
        return i1 >= 0
    if i1 < 0:
        return False
    return v1 > v2 or (v1 == v2 and i1 < i2)
