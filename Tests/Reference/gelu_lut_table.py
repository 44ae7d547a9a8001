#!/usr/bin/env python3
"""Writes the coefficient table of the int8 path's GELU (Sources/PocketSAMKernels/gelu_lut.h).

GELU(x) = x·Φ(x) with Φ the standard normal CDF. On [-5, 5], Φ is a cubic in u ∈ [0, 1] on each of 32 intervals
of width 10/32 (s = 3.2·x + 16, interval floor(s), u = s − floor(s)), fitted by least squares on 64 Chebyshev nodes
per interval (near-minimax) in float64 and rounded to float32. Needs numpy only (no torch). Prints the worst error
of the float32 evaluation against x·Φ(x) on a dense sweep; the header's comment quotes it.

    python3 Tests/Reference/gelu_lut_table.py > /tmp/table.h
"""
import math
import sys

import numpy as np

N, LO, WIDTH = 32, -5.0, 10.0 / 32


def phi(t):
    return 0.5 * math.erfc(-t / math.sqrt(2.0))


def fit():
    k = np.arange(64)
    u = 0.5 - 0.5 * np.cos((2 * k + 1) * np.pi / 128)
    a = np.vstack([np.ones_like(u), u, u ** 2, u ** 3]).T
    c = np.zeros((4, N))
    for i in range(N):
        y = np.array([phi(LO + (i + v) * WIDTH) for v in u])
        c[:, i] = np.linalg.lstsq(a, y, rcond=None)[0]
    return c.astype(np.float32)


def gelu_lut(x, c):
    """The kernels' float32 arithmetic (each fused multiply-add rounded once)."""
    f = np.float32
    x = f(x)
    t = f(min(max(x, f(-5)), f(5)))
    s = f(np.float64(t) * np.float64(f(3.2)) + 16.0)
    i = min(int(s), N - 1)
    u = f(s - f(i))
    p = c[3, i]
    for j in (2, 1, 0):
        p = f(np.float64(p) * np.float64(u) + np.float64(c[j, i]))
    return 0.0 if x < f(-5) else float(f(x * p))


def main():
    c = fit()
    xs = np.linspace(-8, 8, 200001)
    worst = max(abs(gelu_lut(x, c) - x * phi(x)) / max(1.0, abs(x)) for x in xs)
    print(f"worst |error| / max(1, |x|) on [-8, 8]: {worst:.3g}", file=sys.stderr)
    rows = ",\n".join("    {" + ", ".join(f"{v:.9e}f" for v in c[j]) + "}" for j in range(4))
    print("static const float psam_gelu_lut_c[4][32] = {\n" + rows + "};")


if __name__ == "__main__":
    main()
