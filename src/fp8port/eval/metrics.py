"""Fidelity numbers: signal errors, next-token distribution distances, per-tensor code statistics.

Everything about a quantized tensor is read off its data (the input weights, the codes, the
per-block scales and the element format's code table), never by re-deriving the scale rule:
the numbers then describe what a checkpoint actually holds, whichever rule produced it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..formats.spec import Class
from ..quant import QuantizedTensor
from ..quant.metrics import max_abs_error, sqnr_db  # noqa: F401  (re-exported: eval's signal metrics)

# ---- next-token distributions ----------------------------------------------------------------


def kl_divergence(ref_logp: torch.Tensor, logp: torch.Tensor) -> float:
    """Mean over positions of KL(P_ref || P) in nats, from log-probabilities [..., vocab]."""
    ref = ref_logp.double()
    kl = (ref.exp() * (ref - logp.double())).sum(-1)
    return float(kl.mean())


def top1_agreement(ref_logp: torch.Tensor, logp: torch.Tensor) -> float:
    """Fraction of positions whose most likely next token is the same."""
    return float((ref_logp.argmax(-1) == logp.argmax(-1)).double().mean())


def perplexity(logp: torch.Tensor, ids: torch.Tensor) -> float:
    """exp(mean NLL) of each next token: logp[b, t] predicts ids[b, t + 1]."""
    nll = -logp[:, :-1].double().gather(-1, ids[:, 1:, None]).squeeze(-1)
    return float(torch.exp(nll.mean()))


# ---- per-tensor code statistics --------------------------------------------------------------


def expand_scale(q: QuantizedTensor) -> np.ndarray:
    """The per-block dequantization multiplier repeated to one value per element (float64)."""
    s = np.asarray(q.scale_fp32, np.float64)
    ext = q.scheme.block.extents(tuple(q.shape))
    for axis, e in enumerate(ext):
        s = np.repeat(s, e, axis=axis)
    return s[tuple(slice(0, d) for d in q.shape)]


def code_stats(x, q: QuantizedTensor) -> dict:
    """See `analyse`; the statistics only."""
    return analyse(x, q)[0]


def analyse(x, q: QuantizedTensor) -> tuple[dict, np.ndarray]:
    """(statistics, dequantized values as float64) of input `x` and its quantized form `q`.

    Fractions of elements clipped, flushed to zero and stored as subnormals, plus errors.

    clipped: |x / scale| beyond the element format's max before the element is rounded, i.e.
      the element saturated to +-max (or overflowed to Inf / NaN in formats that do that).
    flushed: x non-zero but its code's value is zero (underflow below half the smallest step).
    subnormal: codes in the format's subnormal class.
    """
    x = np.asarray(x, np.float64).reshape(q.shape)
    spec = q.scheme.element
    codes = np.asarray(q.codes).astype(np.intp)
    elem = spec.values[codes]
    scale = expand_scale(q)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(x) / scale
    y = elem * scale
    sub = np.array([c is Class.SUBNORMAL for c in spec.classes])
    n = max(x.size, 1)
    return (
        {
            "sqnr_db": sqnr_db(x, y),
            "max_abs_error": max_abs_error(x, y),
            "clipped": float(np.count_nonzero(ratio > spec.max)) / n,
            "flushed": float(np.count_nonzero((x != 0) & (elem == 0))) / n,
            "subnormal": float(np.count_nonzero(sub[codes])) / n,
        },
        y,
    )


def dequantized(q: QuantizedTensor) -> np.ndarray:
    """code value x block scale, float64 (the same numbers `dequantize` gives, before rounding)."""
    return np.asarray(q.scheme.element.values[np.asarray(q.codes).astype(np.intp)] * expand_scale(q))


# ---- error histogram ---------------------------------------------------------------------------

HIST_EDGES = tuple(round(-7 + 0.25 * i, 2) for i in range(33))  # log10(|err| / rms(x)), -7 .. 1


def error_histogram(x, y) -> tuple[list[int], int]:
    """Counts of log10(|x - y| / rms(x)) over HIST_EDGES, and how many elements are exact.

    Exact elements are counted apart: on weights that already lie on a coarse grid (SmolLM2's
    4-bit source) many FP8 codes are exact, which a log axis cannot show.
    """
    x = np.asarray(x, np.float64).ravel()
    err = np.abs(x - np.asarray(y, np.float64).ravel())
    rms = math.sqrt(float(np.mean(x * x))) or 1.0
    nz = err[err > 0] / rms
    rel = np.clip(np.log10(nz), HIST_EDGES[0], HIST_EDGES[-1] - 1e-9)
    # np.histogram's bins (edges[i] <= x < edges[i + 1]) without sorting the data
    idx = np.searchsorted(np.array(HIST_EDGES), rel, side="right") - 1
    counts = np.bincount(idx, minlength=len(HIST_EDGES) - 1)
    return [int(c) for c in counts], int(err.size - nz.size)
