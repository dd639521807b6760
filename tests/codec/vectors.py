"""Adversarial inputs for codec tests: every bf16, random float32 bit patterns, and
every midpoint between adjacent codes of a format with its +-1-ulp neighbours."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from fp8port.formats import FormatSpec


def all_bf16() -> np.ndarray:
    return np.arange(1 << 16, dtype=np.uint16).view(ml_dtypes.bfloat16)


def random_f32(n: int, seed: int = 0) -> np.ndarray:
    """Uniform random bit patterns: every exponent, NaNs and Infs included."""
    bits = np.random.default_rng(seed).integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    return bits.view(np.float32)


def boundaries_f32(spec: FormatSpec) -> np.ndarray:
    """Each finite value, each midpoint between neighbours (and above max, where the
    next value would be), and the float32 neighbours of both, for both signs."""
    v = np.unique(np.abs(spec.values[np.isfinite(spec.values)]))
    top = spec.max + (spec.max - v[-2])  # where the grid would continue past max
    grid = np.append(v, top)
    pts = np.concatenate([grid, (grid[:-1] + grid[1:]) / 2]).astype(np.float32)
    pts = np.concatenate([pts, np.nextafter(pts, np.float32(np.inf)), np.nextafter(pts, np.float32(0))])
    pts = np.concatenate([pts, -pts, np.float32([np.inf, -np.inf, np.nan, -np.nan])])
    return pts


def adversarial_f32(spec: FormatSpec, n_random: int, seed: int = 0) -> np.ndarray:
    return np.concatenate([boundaries_f32(spec), random_f32(n_random, seed)])
