"""Fused weight-only linear layers on the C kernels (cpu/gemm.c): no dense copy of the weight.

Decode (at most GEMV_ROWS activation rows): the GEMV decodes codes to float32 in registers and folds
each block's scale into the block's partial sums; bf16 activations of AMX_ROWS / FOLD_ROWS rows and more
take AMX, or on AVX-512 BF16 CPUs without it the folded BF16 route, where the scale grid splits as
S = b c (nn/prefill.py): b folded into the decoded bf16 weights, c times the output. Prefill (more rows,
nn/prefill.py): slabs of rows of the weight are dequantized into a workspace freed after the call
(float32, or exact bf16 rows with the scales' non-bf16 part applied to the output) and multiplied by
torch's GEMM, so resident memory stays codes plus scales.

Both equal the dequantized layer (dequantize, then a float32 matmul) up to float32 reassociation: for
an output y = sum_k x_k w_k over K terms, |y - y_ref| <= (2K + 4) u sum_k |x_k w_k| (u = 2^-24), plus
bf16's rounding of the output and the bias, 2^-8 (|y_ref| + |b|), where the input is bf16 (docs/kernels.md;
twice 2^-8 |y_ref| where the prefill scales a bf16 GEMM's output: nn/prefill.py).

`plan` picks the decoder for a scheme and checks it against the element's value table on every code;
what it cannot take (blocks along K narrower than 16 and not whole rows, codes whose value is Inf or
NaN) runs the dequantize-then-matmul path of FP8Linear instead.
"""

from __future__ import annotations

import ctypes
from contextlib import contextmanager

import numpy as np
import torch

from ..codec.native import lut256
from ..cpu import gemm
from ..formats import Kind
from ..quant.scheme import Scheme
from . import prefill

GEMV_ROWS = 8  # activation rows up to which the GEMV runs
AMX_ROWS = 3  # bf16 activation rows from which the GEMV takes the AMX route where it can (gemm_amx.h)
# bf16 activation rows from which it takes the folded BF16 route (gemm_bf16.h: fs_range); at M = 2 the
# BF16 route was faster for 4-bit codes (7168->2048 MXFP4 0.76 vs 0.86 ms, one thread, shared EPYC Zen 4)
FOLD_ROWS = 3
_DTYPES = (torch.float32, torch.bfloat16)
_AMX_DECODERS = (gemm.DECODER_ID[gemm.Decoder.FLOAT], gemm.DECODER_ID[gemm.Decoder.NIB])
_on = True
_fold_on = True


@contextmanager
def folded(on: bool):
    """Allow (or not) the GEMV's folded BF16 route inside the block (tests, benchmarks): on AVX-512 BF16
    CPUs without AMX (or with AMX switched off), bf16 activations of FOLD_ROWS to GEMV_ROWS rows, the AMX
    route's scale split folded into the decoded bf16 weights (vdpbf16ps; gemm_bf16.h)."""
    global _fold_on
    before, _fold_on = _fold_on, on
    try:
        yield
    finally:
        _fold_on = before


@contextmanager
def disabled():
    """FP8Linear runs its dequantize-then-matmul path inside the block (tests, benchmarks)."""
    global _on
    before, _on = _on, False
    try:
        yield
    finally:
        _on = before


def enabled() -> bool:
    return _on and gemm.available()


def _float_decoder(spec) -> dict | None:
    """gemv_t fields of the arithmetic decoder of a sign-bit float format of 8 (FLOAT) or 6 (FP6) bits."""
    if spec.kind is not Kind.FLOAT or not spec.subnormals or spec.sign_bit != 1 << (spec.bits - 1):
        return None
    shift = 23 - spec.mbits  # where the magnitude's lowest bit goes
    common = dict(keep=0x80000000 | ((spec.sign_bit - 1) << shift), fmul=np.float32(2.0 ** (127 - spec.bias)))
    if spec.bits == 8:
        return dict(dec=gemm.Decoder.FLOAT, lsh=shift, rsh=0, **common)
    if spec.bits == 6:
        return dict(dec=gemm.Decoder.FP6, lsh=32 - 6, rsh=32 - 6 - shift, **common)
    return None


def _decoded(d: dict, spec, fmul: np.float32) -> np.ndarray:
    """float32 values the arithmetic decoder gives for every code (NumPy, as the kernel computes them)."""
    c = np.arange(spec.ncodes, dtype=np.uint32)
    if d["dec"] is gemm.Decoder.FLOAT:
        t = (c.astype(np.int8).astype(np.int32).view(np.uint32) << np.uint32(d["lsh"])) & np.uint32(d["keep"])
    else:
        t = ((c << np.uint32(d["lsh"])).view(np.int32) >> np.int32(d["rsh"])).view(np.uint32) & np.uint32(d["keep"])
    return t.view(np.float32) * fmul


def _bf16_route(dec, spec, values: np.ndarray, bn: int, k: int) -> dict | None:
    """gemv_t fields of the AVX-512 BF16 route (gemm_bf16.h), or None where it does not apply: every
    finite value must be a bf16 value, and the kernel's decoder (emulated here) must give it."""
    if dec not in (gemm.Decoder.FLOAT, gemm.Decoder.NIB) or not (bn % 32 == 0 or bn == 16 or bn >= k):
        return None
    fin = np.isfinite(values)
    bits = values.astype(np.float32).view(np.uint32)
    if (bits[fin] & 0xFFFF).any():
        return None
    want = (bits >> 16).astype(np.int64)
    if dec is gemm.Decoder.NIB:
        return dict(bf_tab=want[np.arange(32) & 15])
    m, sh = spec.mbits, 7 - spec.mbits
    f = dict(
        bf_sh=sh,
        bf_keep=0x8000 | (0x7F << sh),
        bf_rebias=(127 - spec.bias) << 7,
        bf_expmask=(0x7F & ~((1 << m) - 1)) << sh,
        bf_tab=(np.arange(32) * np.float32(2.0 ** (1 - spec.bias - m))).astype(np.float32).view(np.uint32) >> 16,
    )
    u = np.arange(256).astype(np.uint8).view(np.int8).astype(np.int64) & 0xFFFF  # the sign-extended code
    t = (u << sh) & 0xFFFF
    v = np.where(
        t & f["bf_expmask"],
        ((t & f["bf_keep"]) + f["bf_rebias"]) & 0xFFFF,
        f["bf_tab"][u & 31].astype(np.int64) | (u & 0x8000),
    )
    return f if np.array_equal(v[fin], want[fin]) else None


def plan(codes: np.ndarray, packed: bool, scale: np.ndarray, scheme: Scheme, shape: tuple[int, int]):
    """(cpu.gemm.Gemv with the weight's fields filled, None) or (None, why the fused kernels do not apply).

    codes: as the layer holds them (FP4 two per byte and FP6 four in three bytes where `packed`);
    scale: the float32 scale grid of `scheme.block` over `shape` (N, K)."""
    n, k = shape
    spec = scheme.element
    if not gemm.available():
        return None, "the C kernels are not built here (or FP8PORT_NATIVE=0)"
    if n == 0 or k == 0:
        return None, "an empty weight"
    bm, bn = scheme.block.extents(shape)
    if bn < k and bn % 16:
        return None, f"blocks {bm}x{bn}: the kernels need blocks along K of a multiple of 16 elements (or whole rows)"
    lut = lut256(spec)
    fields = dict(dec=gemm.Decoder.GATHER, lsh=0, rsh=0, keep=0, fmul=np.float32(1))
    values = lut[: spec.ncodes]
    if packed and spec.bits == 4:
        fields["dec"] = gemm.Decoder.NIB
    elif packed and spec.bits == 6:
        fields.update(_float_decoder(spec) or {})
        if fields["dec"] is not gemm.Decoder.FP6:
            return None, f"packed {spec.name} codes have no arithmetic decoder"
    elif spec.bits <= 4:
        fields["dec"] = gemm.Decoder.TAB16
    elif spec.kind is Kind.INT and spec.bits == 8:
        fields.update(dec=gemm.Decoder.INT8, fmul=values[1])
    elif spec.bits == 8 and _float_decoder(spec):
        fields.update(_float_decoder(spec))
    special = np.flatnonzero(~np.isfinite(values))  # Inf / NaN codes: the weight must hold none
    if special.size and (packed or np.isin(codes, special).any()):
        return None, f"the weight holds {spec.name} codes whose value is not finite"
    d = fields["dec"]
    if d in (gemm.Decoder.FLOAT, gemm.Decoder.FP6):
        got = _decoded(fields, spec, fields["fmul"])
    elif d is gemm.Decoder.INT8:
        got = np.arange(256, dtype=np.uint8).view(np.int8).astype(np.float32) * fields["fmul"]
    else:
        got = values
    fin = np.isfinite(values)
    if not np.array_equal(got[fin].view(np.uint32), values[fin].view(np.uint32)):
        fields.update(dec=gemm.Decoder.GATHER, lsh=0, rsh=0, keep=0, fmul=np.float32(1))
        if packed:
            return None, f"packed {spec.name} codes have no decoder the kernels check out"
    g = gemm.Gemv(
        N=n,
        K=k,
        row_bytes=codes.shape[-1],
        bm=bm,
        bn=bn,
        dec=gemm.DECODER_ID[fields["dec"]],
        lsh=fields["lsh"],
        rsh=fields["rsh"],
        keep=fields["keep"],
        fmul=fields["fmul"],
    )
    g.tab16[: min(16, spec.ncodes)] = values[:16].tolist()
    bf = _bf16_route(fields["dec"], spec, values, bn, k)
    if bf is not None:
        g.bf16_ok = 1
        g.bf_tab[:] = bf.pop("bf_tab").tolist()
        for name, v in bf.items():
            setattr(g, name, v)
    return g, None


def _amx_plan(g: gemm.Gemv, sp, scale: torch.Tensor, values: np.ndarray, n: int):
    """(a copy of the plan g with the AMX route's fields, the buffers it points to) for the scale grid's
    split sp (nn/prefill.py: S = b c), or (None, None) where the route does not apply: every code's value
    times b must be a normal bf16 value (or zero), and b a positive power of two for GM_FLOAT, whose
    decoder adds b's exponent."""
    dec = list(gemm.Decoder)[g.dec]
    if sp is None or not g.bf16_ok or dec not in (gemm.Decoder.FLOAT, gemm.Decoder.NIB):
        return None, None
    crow, c = None, 1.0
    if sp.kind == "exact":
        b = scale
    elif sp.kind == "rows":
        b, crow = torch.ones_like(scale), scale[:, 0].repeat_interleave(g.bm)[:n].contiguous()
    else:
        b, c = (scale * torch.tensor(sp.inv_t, dtype=torch.float32)).bfloat16().float(), sp.t
    bb = b.numpy()
    vals = np.abs(values[np.isfinite(values)]).astype(np.float64)
    vals = vals[vals != 0]
    if dec is gemm.Decoder.FLOAT:
        u = bb.view(np.uint32)
        e = (u >> 23) & 0xFF
        if (u & 0x807FFFFF).any() or not ((e >= 1) & (e <= 254)).all():
            return None, None
    ab = np.abs(bb[bb != 0]).astype(np.float64)
    if vals.size and ab.size and (ab.min() * vals.min() < 2.0**-126 or ab.max() * vals.max() >= 2.0**127):
        return None, None
    a = gemm.Gemv.from_buffer_copy(g)
    a.amx_ok, a.amx_c, a.amx_sgrid = 1, c, b.data_ptr()
    a.amx_crow = None if crow is None else crow.data_ptr()
    return a, (b, crow)


def _bf16_exact(scale: np.ndarray, spec) -> bool:
    """Whether every code's value times its scale is a bf16 value: power-of-two normal scales and
    element values with at most 8 significant bits."""
    b = np.ascontiguousarray(scale, np.float32).view(np.uint32)
    e = (b >> 23) & 0xFF
    vals = lut256(spec)[: spec.ncodes]
    vals = vals[np.isfinite(vals)]
    as_bf16 = (vals.view(np.uint32) & 0xFFFF) == 0
    return bool(((b & 0x807FFFFF) == 0).all() and ((e >= 1) & (e <= 254)).all() and as_bf16.all())


class FusedWeight:
    """A layer's codes and scales with the kernels' plan; calling it runs the layer on x."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, scheme: Scheme, shape: tuple[int, int], packed: bool):
        self.codes, self.scale, self.shape = codes, scale, shape
        self.lut, self.ncodes = lut256(scheme.element), scheme.element.ncodes
        self.g, self.why = plan(codes.numpy(), packed, scale.numpy(), scheme, shape)
        if self.g is not None:
            self.g.codes, self.g.sgrid, self.g.lut = codes.data_ptr(), scale.data_ptr(), self.lut.ctypes.data
        self.bf16_exact = self.g is not None and _bf16_exact(scale.numpy(), scheme.element)
        if self.g is not None:
            self.prefill = prefill.Prefill(
                self.g, codes, scale, scheme.element, shape, lambda s: _bf16_exact(s, scheme.element)
            )
        self._bias = (None, None)
        if self.g is not None:  # the decode call's prepared plan (_gemv)
            self._addr, self._run, self._state = ctypes.addressof(self.g), gemm.runner(), None
            self._amx_able = bool(self.g.bf16_ok) and self.g.dec in _AMX_DECODERS
            self._amx = (self, 0, None)  # (the split it was made for, plan address or 0, what it holds)

    @classmethod
    def build(cls, codes, scale, scheme, shape, packed) -> FusedWeight:
        fw = cls(codes.contiguous(), scale.to(torch.float32).contiguous(), scheme, shape, packed)
        fw.src = codes, scale
        return fw

    def holds(self, codes: torch.Tensor, scale: torch.Tensor) -> bool:
        """Whether this plan was made from these buffers (a layer's buffers may be replaced; the kernels
        read them in place, so values written into the same buffers need no new plan, except codes
        whose value is not finite: set the layer's plan to None after writing such)."""
        return codes is self.src[0] and scale is self.src[1]

    def takes(self, x: torch.Tensor, buffers: dict) -> bool:
        """The per-call check of FP8Linear's weight-only fast path: what its full path checks, cheaply (the
        tier and thread counts are read again only when cpu.forced or a fork changed them). buffers: the
        layer's _buffers (its attributes cost a Module.__getattr__ each)."""
        if gemm.plan_state() != self._state:
            self._refresh()
        return (
            _on
            and self._tier >= 0
            and x.dtype in _DTYPES
            and x.is_cpu
            and x.shape[-1] == self.shape[1]
            and not (x.requires_grad and torch.is_grad_enabled())
            and buffers["codes"] is self.src[0]
            and buffers["scale_fp32"] is self.src[1]
        )

    def runs(self, dtype: torch.dtype) -> bool:
        """Whether the kernels take activations of this dtype (on the CPU) for this weight."""
        return self.g is not None and dtype in _DTYPES

    def _bias32(self, bias):
        if bias is None:
            return None
        key = (bias.data_ptr(), bias._version)
        if self._bias[0] != key:
            self._bias = key, bias.detach().to(torch.float32).contiguous()
        return self._bias[1]

    def __call__(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x (..., K) float32 or bf16 -> (..., N) in x's dtype."""
        n, k = self.shape
        m = x.numel() // k
        if m <= GEMV_ROWS and x.is_contiguous() and x.shape[-1] == k:
            return self._gemv(x, m, bias)
        x2 = x.reshape(-1, k)
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        if x2.shape[0] > GEMV_ROWS:
            return self._prefill(x2, bias).reshape(*x.shape[:-1], n)
        return self._gemv(x2, x2.shape[0], bias).reshape(*x.shape[:-1], n)

    def _gemv(self, x: torch.Tensor, m: int, bias) -> torch.Tensor:
        """The GEMV of x's m contiguous rows: one C call on the prepared plan, which only x, y and the bias
        change (the plan is never written, so threads share it)."""
        y = torch.empty(*x.shape[:-1], self.shape[0], dtype=x.dtype)
        if m:
            if gemm.plan_state() != self._state:
                self._refresh()
            flags = (x.dtype is torch.bfloat16) | gemm._bf16_dot_on << 1
            addr = self._addr
            if flags & 1 and self._amx_able:
                # the AMX route where the CPU has it, else the folded BF16 route: both on the split's plan
                on_amx = m >= AMX_ROWS and gemm._amx_on
                on_fold = m >= FOLD_ROWS and _fold_on and gemm._bf16_dot_on
                if on_amx or on_fold:
                    amx = self._amx_now()  # held for the call: another thread may replace self._amx
                    if amx[1]:
                        addr, flags = amx[1], flags | on_amx << 2 | on_fold << 3
            b = None if bias is None else self._bias32(bias).data_ptr()
            if self._run(addr, x.data_ptr(), y.data_ptr(), m, flags, self._tier, self._threads[m], b):
                raise MemoryError("fp8port: no memory for the activations of a fused linear layer")
        return y

    def _amx_now(self) -> tuple:
        """(split, address of the AMX route's plan or 0 where the route does not apply, what the plan
        points to) for the scale grid as it is now: made again when a write into the scales changes
        their split."""
        sp, amx = self.prefill.split, self._amx
        if amx[0] is not sp:
            a, held = _amx_plan(self.g, sp, self.scale, self.lut[: self.ncodes], self.shape[0])
            amx = self._amx = (sp, 0 if a is None else ctypes.addressof(a), (a, held))
        return amx

    def _refresh(self):
        """Read the tier and the thread count per row count once (again when cpu.forced or a fork changed
        them), not on every call: FP8PORT_ISA is read here."""
        self._state = gemm.plan_state()
        self._tier = gemm._tier_now()
        n, k = self.shape
        self._threads = [gemm.gemv_threads(n * k * m) for m in range(GEMV_ROWS + 1)]

    def _prefill(self, x2: torch.Tensor, bias) -> torch.Tensor:
        return self.prefill(x2, bias)  # nn/prefill.py
