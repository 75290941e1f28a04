"""Fit the polynomial coefficients of fs_math.h (a maintainer tool, not run at build time).

Run ``python src_c/fit_polynomials.py`` (needs mpmath) to print the
coefficients used by fs_math.h:

- exp: exp(r) = 1 + r + r**2 * q(r) on |r| <= ln(2)/2 (slightly widened, since
  the reduction rounds k), q of degree 4 for float32 and 9 for float64, fitted
  for the smallest relative error of exp(r); degree 3 for the cheaper float32
  exp of the register kernels (fs_expf_nonpositive_short);
- log: log((1 + s) / (1 - s)) = 2 s + s**3 R(s**2) on |s| <= (sqrt 2 - 1) / (sqrt 2 + 1),
  R of degree 2 for float32, fitted for the smallest relative error of the log.

The fits are discrete minimax (Lawson's iteratively reweighted least squares)
on Chebyshev nodes, in 50-digit arithmetic. The printed "max error" is the
approximation error alone, before rounding in float32/float64.
"""

import mpmath as mp

mp.mp.dps = 50


def minimax(f, weight, lo, hi, degree, nodes=600, iterations=60):
    """Coefficients c[0..degree] minimising max |weight(x) (sum c_k x**k - f(x))|."""
    xs = [lo + (hi - lo) * (1 - mp.cos(mp.pi * (i + 0.5) / nodes)) / 2 for i in range(nodes)]
    fs = [f(x) for x in xs]
    ws = [weight(x) for x in xs]
    lawson = [mp.mpf(1) / nodes] * nodes
    for _ in range(iterations):
        normal = mp.matrix(degree + 1, degree + 1)
        rhs = mp.matrix(degree + 1, 1)
        for x, y, w, lw in zip(xs, fs, ws, lawson):
            scale = lw * w * w
            powers = [x**k for k in range(degree + 1)]
            for i in range(degree + 1):
                rhs[i] += scale * powers[i] * y
                for j in range(degree + 1):
                    normal[i, j] += scale * powers[i] * powers[j]
        coefficients = mp.lu_solve(normal, rhs)
        errors = [
            abs(w * (mp.polyval(list(reversed(coefficients)), x) - y))
            for x, y, w in zip(xs, fs, ws)
        ]
        total = sum(lw * e for lw, e in zip(lawson, errors))
        lawson = [lw * e / total for lw, e in zip(lawson, errors)]
    return [coefficients[i] for i in range(degree + 1)], max(errors)


def exp_fit(degree):
    half = mp.log(2) / 2 * mp.mpf("1.0002")

    def q(r):
        return (mp.exp(r) - 1 - r) / r**2 if r != 0 else mp.mpf(1) / 2

    return minimax(q, lambda r: r**2 / mp.exp(r), -half, half, degree)


def log_fit(degree):
    top = ((mp.sqrt(2) - 1) / (mp.sqrt(2) + 1)) ** 2 * mp.mpf("1.0001")

    def big_r(u):
        s = mp.sqrt(u)
        return (mp.log((1 + s) / (1 - s)) - 2 * s) / s**3 if u != 0 else mp.mpf(2) / 3

    # the error of s**3 R relative to log(m) ~ 2 s is u / 2 times the error of R
    return minimax(big_r, lambda u: u / 2, mp.mpf(0), top, degree)


def main():
    for name, (coefficients, error) in (
        ("exp float32: q(r), degree 4", exp_fit(4)),
        ("exp float32, short rows: q(r), degree 3", exp_fit(3)),
        ("exp float64: q(r), degree 9", exp_fit(9)),
        ("log float32: R(u), degree 2", log_fit(2)),
    ):
        print(f"{name}; max relative error {mp.nstr(error, 3)}")
        for k, c in enumerate(coefficients):
            print(f"  c{k} = {mp.nstr(c, 19)}")


if __name__ == "__main__":
    main()
