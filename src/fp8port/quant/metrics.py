"""Signal-to-quantization-noise ratio: the one definition every report uses.

A zero error is +inf (exact), whatever the signal; JSON writers turn non-finite values into null
at the boundary (`fp8port.jsonsafe`), never here.
"""

from __future__ import annotations

import math

import numpy as np


def ratio_db(signal: float, noise: float) -> float:
    """10 log10(signal / noise) from summed squares.

    Returns +inf when noise is 0, -inf when only the signal is (or only the noise is infinite),
    NaN when the ratio is undefined (a NaN, or both infinite).
    """
    if math.isnan(signal) or math.isnan(noise) or (math.isinf(signal) and math.isinf(noise)):
        return math.nan
    if noise == 0:
        return math.inf
    if signal == 0 or math.isinf(noise):
        return -math.inf
    if math.isinf(signal):
        return math.inf
    # a difference of logs: signal / noise can under- or overflow when both are finite
    return 10 * (math.log10(signal) - math.log10(noise))


def sqnr_db(x, y) -> float:
    """10 log10(sum x^2 / sum (x - y)^2) in float64: x the reference, y its approximation.

    Returns +inf when y equals x, -inf when x is all zero but y is not.
    """
    x = np.asarray(x, np.float64)
    d = x - np.asarray(y, np.float64)
    # scaled by the largest magnitude so that squares of values near the float64 max stay finite
    m = max(float(np.max(np.abs(x), initial=0.0)), float(np.max(np.abs(d), initial=0.0)))
    if math.isfinite(m) and m > 0:
        x, d = x / m, d / m
    return ratio_db(float(np.sum(x * x)), float(np.sum(d * d)))


def max_abs_error(x, y) -> float:
    """max |x - y| in float64 (0 for empty arrays)."""
    return float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0.0))
