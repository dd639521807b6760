"""The prefill path of the fused linear layers (more than fused.GEMV_ROWS activation rows).

The weight is dequantized into a workspace (cpu/gemm.c decode_rows: slabs of whole rows, at most
WORKSPACE_BYTES, the whole weight where it fits) and each slab multiplied by torch's GEMM into the output's
columns. The workspace is one buffer per calling thread, kept between calls (at most WORKSPACE_BYTES;
release_workspace frees it), so resident memory stays codes plus scales plus that bound.

bf16 activations take a bf16 GEMM wherever the dense rows can be exact bf16 values and torch's bf16 GEMM
is faster than its float32 one here (AVX-512 BF16 / AMX; not on AVX2-only CPUs, where bf16 rows would be
4-8x slower): the scale grid S is split as S = b * c, b exact in bf16 times every element value (at most
8 significant bits together), c one float32 per output column, multiplied into the GEMM's output:
  - power-of-two scales: b = S, c = 1 (the rows are the reference dequantize's, bit for bit);
  - one scale per row or per tensor (per-channel INT8 / FP8): b = 1, c = that scale;
  - a tensor scale times short block scales (NVFP4: E4M3 x float32): b = bf16(S * fp32(1 / t)), c = t,
    accepted only where |b t - S| <= 2u |S| on every block (u = 2^-24).
Against dequantize -> float32 matmul (whose code x scale rounds once, u) the products then differ by at
most 3u |x_k w_k| and the product with c rounds once more: the stated bound's "+ 4" (docs/kernels.md)
covers it. A single c without bias goes into the GEMM as addmm's alpha (oneDNN scales the float32 sums,
then rounds to bf16 once). Otherwise torch's CPU bf16 GEMM has no float32 output, so the output is rounded
to bf16 twice (the GEMM's, then c z + bias in float32): 2^-8 (2 |y_ref| + |b|) in place of 2^-8 (|y_ref| +
|b|) for bf16 activations on these layers (far inside the dequantize-to-bf16 path's 2^-8 sum |x_k w_k|).
SCALED_BF16 = False runs them on float32 rows instead (2-3x slower on AVX-512 BF16). Other scales
(DeepSeek-V3's arbitrary float32 block scales, Q8_0's fp16 ones) take float32 rows and a float32 GEMM.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..codec.native import lut256
from ..cpu import gemm

# The most dense rows one call holds at a time, in slabs of equal size, in a buffer per thread kept between
# calls (_workspace: a fresh one per call paid its page faults each time). AVX-512 BF16 + AMX Xeon,
# 7168->2048 at M = 512, bf16 rows, one thread, CPU time (shared machine, +-10%): 4 slabs of 7.3 MB
# 20.6-23.6 ms against one slab of 29 MB 22.9-25.1 (bf16 nn.Linear 18.5-20.5). AMD Zen 4 before (a fresh
# buffer per call): one 29 MB slab 73.2 ms, slabs of 16 / 8 / 4 MB 75.6 / 76.4 / 78.3 (nn.Linear 69.6);
# float32 rows (AVX2) in slabs of 16-30 MB 174-176 ms, one 59 MB slab 222.
WORKSPACE_BYTES = 32 << 20
U = 2.0**-24
SCALED_BF16 = True  # bf16 GEMMs for layers whose split has an output factor c (two bf16 roundings)
bf16_gemm: bool | None = None  # whether bf16 activations may take a bf16 GEMM; None: measure once (tests set it)


@functools.cache
def _measured_bf16_gemm_fast() -> bool:
    """Whether torch's bf16 GEMM beats its float32 one on this CPU (measured once: about 70 ms, mostly
    oneDNN's first-call set-up; the two differ by 2-8x either way: AVX-512 BF16 / AMX vs AVX2-only CPUs)."""
    gen = torch.Generator().manual_seed(0)  # leaves the global random stream alone
    a, b = torch.randn(256, 1024, generator=gen), torch.randn(256, 1024, generator=gen)

    def best(x, w):
        torch.nn.functional.linear(x, w)
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            torch.nn.functional.linear(x, w)
            ts.append(time.perf_counter() - t0)
        return min(ts)

    with torch.inference_mode():
        return best(a.bfloat16(), b.bfloat16()) < best(a, b)


def bf16_gemm_fast() -> bool:
    return _measured_bf16_gemm_fast() if bf16_gemm is None else bf16_gemm


_held = threading.local()  # .buf: this thread's workspace, kept between calls (at most WORKSPACE_BYTES)


def _workspace(n: int, dtype: torch.dtype) -> torch.Tensor:
    """n elements of this thread's workspace: one buffer kept between calls, grown to the largest slab asked
    for (at most WORKSPACE_BYTES), since a fresh one each call costs its page faults again."""
    nbytes = n * dtype.itemsize
    buf = getattr(_held, "buf", None)
    if buf is None or buf.numel() < nbytes:
        _held.buf = buf = None  # the old one freed first
        _held.buf = buf = torch.empty(max(nbytes, 64), dtype=torch.uint8)
    return buf[:nbytes].view(dtype)


def release_workspace() -> None:
    """Free this thread's prefill workspace (the next prefill call allocates it again)."""
    _held.buf = None


@dataclass(frozen=True)
class Split:
    """S = b * c (see the module docstring). kind: 'exact' (b = S), 'rows' (b = 1, c = S per row block) or
    'tensor' (b = bf16(S * inv_t), c = t)."""

    kind: str
    t: float = 1.0
    inv_t: float = 1.0


def _sig_bits(v: np.ndarray) -> int:
    """The most significant bits any of these float32 values has."""
    m = np.abs(v[np.isfinite(v) & (v != 0)]).astype(np.float32).view(np.uint32) & 0x7FFFFF
    if m.size == 0:
        return 0
    tz = np.array([(int(x) & -int(x)).bit_length() - 1 if x else 23 for x in np.unique(m)])
    return int(24 - tz.min())


def _tensor_b(scale: np.ndarray, inv_t: np.ndarray) -> np.ndarray:
    """b = bf16(S * inv_t) as float32: the float32 product rounded to nearest even bf16, as the prefill call
    computes it with torch (finite values)."""
    u = (np.float32(scale) * np.float32(inv_t)).view(np.uint32)
    return (((u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16) << 16).view(np.float32)


def split(scale: np.ndarray, spec, bf16_exact: bool) -> Split | None:
    """How the float32 scale grid (N blocks x K blocks) splits for a bf16 GEMM, or None (float32 rows).

    bf16_exact: every code's value times its scale is a bf16 value (fused._bf16_exact)."""
    if bf16_exact:
        return Split("exact")
    vals = lut256(spec)[: spec.ncodes]
    vals = vals[np.isfinite(vals)]
    bits = _sig_bits(vals)
    s = np.ascontiguousarray(scale, np.float32)
    if bits > 8 or not np.isfinite(s).all() or s.size == 0:
        return None
    if s.shape[1] == 1:
        return Split("rows")
    room = 8 - bits  # significant bits b may have
    nz = np.abs(s[s != 0]).astype(np.float64)
    if room == 0 or nz.size == 0:
        return None
    # t candidates: the first scale over each `room`-bit significand, and two float32 ulps either side
    base = np.float32(nz[0] / (1 + np.arange(1 << (room - 1)) / (1 << (room - 1))))
    cands = [base]
    for d in (0, np.inf):
        x = base
        for _ in range(2):
            x = np.nextafter(x, np.float32(d))
            cands.append(x)
    cands = np.unique(np.concatenate(cands))
    s64 = s.astype(np.float64)
    sample = s64.ravel()[:: max(1, s.size // 512)]
    vmin, vmax = np.abs(vals[vals != 0]).min(), np.abs(vals).max()

    def err(t: np.ndarray, grid: np.ndarray) -> np.ndarray:
        """Per candidate t (C, 1): max |b t - S| / |S| over the grid (inf where b is not `room` bits or
        leaves bf16's normal range)."""
        b = _tensor_b(grid, np.float32(1 / np.float64(t))).astype(np.float64)
        ab = np.abs(b)
        bad = (
            (b.view(np.uint64) & ((1 << (53 - room)) - 1)).any(1)
            | ((b == 0) != (grid == 0)).any(1)
            | (np.where(b == 0, np.inf, ab).min(1) * vmin < 2.0**-126)
            | (ab.max(1) * vmax > 2.0**127)
        )
        e = (np.abs(b * np.float64(t) - grid) / np.where(grid == 0, 1, np.abs(grid))).max(1)
        return np.where(bad, np.inf, e)

    e = err(cands[:, None], sample[None])
    for i in np.argsort(e, kind="stable"):  # the best on a sample of blocks first, then the whole grid
        if e[i] > 2 * U:
            break
        t = cands[i : i + 1, None]
        if err(t, s64.reshape(1, -1))[0] <= 2 * U:
            return Split("tensor", float(t[0, 0]), float(np.float32(1 / np.float64(t[0, 0]))))
    return None


class Prefill:
    """One weight's prefill: `g` (cpu.gemm.Gemv with the weight's fields), its codes, float32 scale grid and
    element spec; the Split for bf16 GEMMs is found on the first bf16 call (None: float32 rows only)."""

    def __init__(self, g, codes: torch.Tensor, scale: torch.Tensor, spec, shape: tuple[int, int], bf16_exact):
        """bf16_exact(scale grid) -> whether every code's value times its scale is a bf16 value."""
        self.g, self.codes, self.scale, self.spec, self.shape = g, codes, scale, spec, shape
        self.bf16_exact = bf16_exact
        self._split = (None, None)

    @property
    def split(self) -> Split | None:
        """The Split of the scale grid as it is now (found again after writes into it)."""
        v = -1 if self.scale.is_inference() else self.scale._version  # inference tensors have no counter
        if self._split[0] != v:
            s = self.scale.numpy()
            self._split = v, split(s, self.spec, self.bf16_exact(s))
        return self._split[1]

    def _bf16_parts(self, sp: Split):
        """(Gemv whose scale grid is b, b's buffer (kept alive for the call), c: None, a float or N floats,
        decode_rows' smul: b = bf16(S * smul) taken in the decoder where not 0)."""
        if sp.kind == "exact":
            return self.g, None, None, 0.0
        if sp.kind == "tensor":
            return self.g, None, sp.t, sp.inv_t  # = _tensor_b, in C
        g = gemm.Gemv.from_buffer_copy(self.g)
        b = torch.ones_like(self.scale)
        c = self.scale[:, 0].repeat_interleave(self.g.bm)[: self.shape[0]].contiguous()
        g.sgrid = b.data_ptr()
        return g, b, c, 0.0

    def __call__(self, x2: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """x2 (M, K) contiguous float32 or bf16 -> (M, N) in x2's dtype."""
        n, k = self.shape
        sp = self.split if x2.dtype == torch.bfloat16 and bf16_gemm_fast() else None
        b16 = sp is not None and (sp.kind == "exact" or SCALED_BF16)
        wdt = torch.bfloat16 if b16 else torch.float32
        g, keep, c, smul = self._bf16_parts(sp) if b16 else (self.g, None, None, 0.0)
        alpha = c if isinstance(c, float) and bias is None else None  # the GEMM scales its float32 sums
        xw = x2.to(wdt)
        most = max(16, WORKSPACE_BYTES // (k * (2 if b16 else 4)) // 16 * 16)
        per = -(-n // -(-n // most))  # slabs of equal size, a multiple of 16 rows
        rows = -(-per // 16) * 16
        buf = _workspace(min(rows, n) * k, wdt)
        y = torch.empty((x2.shape[0], n), dtype=wdt)
        for n0 in range(0, n, rows):
            n1 = min(n, n0 + rows)
            w = buf[: (n1 - n0) * k].view(n1 - n0, k)
            gemm.decode_rows(g, n0, n1, w.data_ptr(), b16, smul=smul)
            if alpha is not None:
                torch.addmm(y[:, n0:n1], xw, w.t(), beta=0, alpha=alpha, out=y[:, n0:n1])
            elif c is None and bias is not None:
                torch.addmm(bias[n0:n1].to(wdt), xw, w.t(), out=y[:, n0:n1])
            else:
                torch.mm(xw, w.t(), out=y[:, n0:n1])
        del buf, keep
        if c is not None and alpha is None:  # the output's factor and the bias in float32, rounded to bf16 once
            cv = c if isinstance(c, torch.Tensor) else torch.full((n,), c, dtype=torch.float32)
            if bias is None:  # an N-vector (a 1-element tensor would take a slow mixed-dtype broadcast)
                y.mul_(cv)
            else:
                torch.addcmul(bias.to(torch.float32), y, cv, out=y)
        return y.to(x2.dtype)
