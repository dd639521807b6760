"""The built-in default job: every format on one demo tensor, then DeepSeek's UE8M0 FP8.

A later stage turns this into the end-to-end model demo; today it shows what each
element format keeps of a weight-like tensor, and that the codecs round-trip.
"""

from __future__ import annotations

import numpy as np

from .codec.api import decode, encode
from .formats import FORMATS


def demo_tensor(rows: int = 256, cols: int = 576, seed: int = 0) -> np.ndarray:
    """Weight-like float32 data: normal values whose scale varies per 1x32 block over
    two orders of magnitude, plus a few 100x outliers (what makes block scales matter)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    x *= np.exp(1.2 * rng.standard_normal((rows, cols // 32, 1))).repeat(32, axis=2).reshape(rows, cols)
    x.flat[rng.choice(x.size, 16, replace=False)] *= 100
    return x.astype(np.float32)


def sqnr_db(x: np.ndarray, y: np.ndarray) -> float:
    err = np.sum((x.astype(np.float64) - y) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(np.sum(x.astype(np.float64) ** 2) / err))


def element_roundtrips(x: np.ndarray) -> list[dict]:
    """Each format with one per-tensor power-of-two scale (amax -> the format's max)."""
    rows = []
    amax = float(np.abs(x).max())
    for spec in FORMATS.values():
        if not spec.signed:
            continue  # E8M0 is a scale format, not an element format
        scale = 2.0 ** np.ceil(np.log2(amax / spec.max))
        codes = encode(x / scale, spec, overflow="saturate")
        y = decode(codes, spec).astype(np.float64) * scale
        again = encode(decode(codes, spec), spec, overflow="saturate")
        rows.append({
            "format": spec.name,
            "bits": spec.bits,
            "sqnr_db": round(sqnr_db(x, y), 2),
            "flushed_to_zero": round(float(np.mean((decode(codes, spec) == 0) & (x != 0))), 4),
            "roundtrip_exact": bool(np.array_equal(again, codes)),
        })
    return rows


def run_demo() -> dict:
    x = demo_tensor()
    result = {"tensor": {"shape": list(x.shape), "amax": float(np.abs(x).max())},
              "per_tensor_scale": element_roundtrips(x)}
    try:
        from .quant import dequantize, quantize
    except ImportError:  # block quantization not installed in this build
        return result
    blocks = []
    for preset in ("deepseek-v3.1", "deepseek-v3", "mxfp8", "mxfp4", "nvfp4"):
        q = quantize(x, preset, role="weight")
        y = np.asarray(dequantize(q, dtype=np.float32), np.float64)
        blocks.append({"preset": preset, "sqnr_db": round(sqnr_db(x, y), 2),
                       "scales": int(np.asarray(q.scale_fp32).size)})
    result["block_scaled"] = blocks
    return result
