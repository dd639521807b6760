"""Signal-to-quantization-noise ratio: the one definition every report uses.

A zero error is +inf (exact), whatever the signal; JSON writers turn non-finite values into null
at the boundary (`fp8port.jsonsafe`), never here.
"""

from __future__ import annotations

import math

import numpy as np


def ratio_db(signal: float, noise: float) -> float:
    """10 log10(signal / noise) from summed squares: +inf when noise is 0, -inf when only the signal is."""
    if noise == 0:
        return math.inf
    return -math.inf if signal == 0 else 10 * math.log10(signal / noise)


def sqnr_db(x, y) -> float:
    """10 log10(sum x^2 / sum (x - y)^2) in float64: x the reference, y its approximation.

    Returns +inf when y equals x, -inf when x is all zero but y is not.
    """
    x = np.asarray(x, np.float64)
    return ratio_db(float(np.sum(x * x)), float(np.sum((x - np.asarray(y, np.float64)) ** 2)))


def max_abs_error(x, y) -> float:
    """max |x - y| in float64 (0 for empty arrays)."""
    return float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0.0))
