"""Scale rules on float bits: a power-of-two rule as a step function of the block amax's bits.

Every power-of-two rule that depends on the amax alone (`ScaleRule.fn`; rules added later
included) is monotone in the amax, so within one float32 exponent field f the scale changes at a
few mantissas only. The step form lists them: the scale is sb[f][number of thr[f] <= mantissa],
and `zero` is the scale of an all-zero block. It is found by bisection on the reference's own
`block_scales` (rule, NaN pattern, zero-block choice and storage included), then checked against
it on sampled amax values, so every kernel (C and Numba) computes the reference's scale with one
lookup per block and no rule written twice. Layout: one uint32 array, thr[256][3], sb[256][4], zero.
"""

from __future__ import annotations

import enum
from functools import lru_cache

import numpy as np

from . import reference
from .rules import ScaleRule
from .scheme import Scheme

MANT = 0x7FFFFF
STEPS = 3  # steps per exponent field the kernels look at
SIZE = 256 * STEPS + 256 * (STEPS + 1) + 1


class BitsRule(enum.IntEnum):
    """Rules that a kernel computes from the amax's float bits itself, by number (the Triton kernels'
    RULE argument). The CPU kernels need no numbers: they take every rule as a step table."""

    UE8M0 = 0
    FLOOR = 1

    @classmethod
    def of(cls, rule: ScaleRule) -> BitsRule | None:
        return cls.__members__.get(rule.name)


def covers(scheme: Scheme) -> bool:
    return scheme.scale_rule.power_of_two and scheme.scale_rule.fn is not None


def _scales(bits: np.ndarray, scheme: Scheme) -> np.ndarray:
    with np.errstate(all="ignore"):
        return reference.block_scales(bits.astype(np.uint32).view(np.float32), scheme).view(np.uint32)


def lookup(table: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Scale bits of amax bits `a` (uint32 array) through a step table, as the kernels do."""
    thr = table[: 256 * STEPS].reshape(256, STEPS)
    sb = table[256 * STEPS : -1].reshape(256, STEPS + 1)
    f, m = a >> 23, a & MANT
    got = sb[f, sum((m >= thr[f, k]).astype(np.intp) for k in range(STEPS))]
    return np.where(a == 0, table[-1], got).astype(np.uint32)


@lru_cache(maxsize=64)
def step_table(scheme: Scheme) -> np.ndarray | None:
    """The step form of the scheme's scale rule, or None (not a power-of-two amax rule, more than
    three steps in some exponent field, or not monotone where it was sampled)."""
    if not covers(scheme):
        return None
    f = np.arange(256, dtype=np.int64)
    start = np.maximum(f << 23, 1)  # amax 0 is `zero`
    end = (f << 23) | MANT
    thr = np.full((256, STEPS), 1 << 23, np.uint32)  # above every mantissa: never reached
    sb = np.empty((256, STEPS + 1), np.uint32)
    lo, cur = start, _scales(start, scheme)
    sb[:, 0] = cur
    at_end = _scales(end, scheme)
    for k in range(STEPS):
        more = at_end != cur
        hi = end.copy()
        a = lo.copy()  # invariant: scale(a) == cur, scale(hi) != cur (where `more`)
        for _ in range(24):
            mid = (a + hi) // 2
            same = _scales(mid, scheme) == cur
            a, hi = np.where(same, mid, a), np.where(same, hi, mid)
        thr[more, k] = (hi[more] & MANT).astype(np.uint32)
        lo = np.where(more, hi, lo)
        cur = np.where(more, _scales(hi, scheme), cur)
        sb[:, k + 1] = cur
    if np.any(at_end != cur):
        return None
    table = np.concatenate([thr.ravel(), sb.ravel(), _scales(np.zeros(1, np.int64), scheme)]).astype(np.uint32)
    # spot check: 64 random mantissas per field, and each step's edges
    rng = np.random.default_rng(0)
    sample = (f[:, None] << 23) | rng.integers(0, MANT + 1, (256, 64))
    edges = (f[:, None] << 23) | np.minimum(thr.astype(np.int64), MANT)
    probe = np.concatenate([sample.ravel(), edges.ravel(), np.maximum(edges.ravel() - 1, 0), end, [0]])
    if not np.array_equal(lookup(table, probe.astype(np.uint32)), _scales(probe, scheme)):
        return None
    table.setflags(write=False)
    return table


def affine(table: np.ndarray) -> tuple[int, int, int, int] | None:
    """(d, t, flo, fhi) where the step table says E = f + d + (mantissa >= t) for the amax's exponent
    fields f in [flo, fhi] (the scale 2^E normal): the longest such run, so that kernels compute the
    scales of many blocks at once; None where no field has that form."""
    thr = table[: 256 * STEPS].reshape(256, STEPS).astype(np.int64)
    sb = table[256 * STEPS : -1].reshape(256, STEPS + 1).astype(np.int64)
    f = np.arange(256)
    e0, e1 = (sb[:, 0] >> 23) - 127, (sb[:, 1] >> 23) - 127
    normal = lambda b: ((b & MANT) == 0) & (b >> 23 >= 1) & (b >> 23 <= 254)  # noqa: E731
    one = (thr[:, 1] > MANT) & (thr[:, 2] > MANT)  # at most one step in the field
    ok = one & normal(sb[:, 0]) & ((thr[:, 0] > MANT) | (normal(sb[:, 1]) & (e1 == e0 + 1))) & (f >= 1) & (f <= 254)
    key = np.where(ok, (e0 - f) * (1 << 24) + np.minimum(thr[:, 0], 1 << 23), -1 << 40)
    best, start = (0, 0, 0), 0
    for i in range(1, 257):  # runs of equal (d, t)
        if i == 256 or key[i] != key[start]:
            if key[start] != -1 << 40 and i - start > best[0]:
                best = (i - start, start, i - 1)
            start = i
    if not best[0]:
        return None
    lo, hi = best[1], best[2]
    return int(e0[lo] - lo), int(min(thr[lo, 0], 1 << 23)), lo, hi
