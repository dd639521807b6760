"""Test oracle: triton_kernels' MXFP4 quantizer, re-expressed (never shipped in src/).

Source: triton-lang/triton@7146a7205c89742dbb17b6c18cdeeeb75c60f799,
python/triton_kernels/triton_kernels/numerics_details/mxfp.py, `downcast_to_mxfp_torch` with its default
DequantScaleRoundingMode.ROUND_UP and out_quant_type torch.uint8 (MXFP4). It is what transformers'
Mxfp4 integration (`quantize_to_mxfp4`, for BF16 gpt-oss weights on GPUs) and vLLM call; OpenAI has not
said which rule made its released checkpoint. The torch steps below follow its order, along the last axis:
* per 32 elements (float32): s = amax / 6, then rounded UP to a power of two on the bits:
  (bits + 0x7FFFFF) & 0x7F800000; the scale byte is those bits >> 23 (zero block: byte 0);
* q = x * (1 / s) (0 where s is 0);
* E2M1 from q's bits: subnormal mantissas re-aligned, then ((exponent << 2 | top two mantissa bits) + 1)
  >> 1 clamped to 7, i.e. round to nearest with ties away from zero, saturating; the sign bit kept.
"""

from __future__ import annotations

import torch


def _shr(x: torch.Tensor, n) -> torch.Tensor:
    """Unsigned right shift of int32 bit patterns."""
    return (
        (x >> n) & ((1 << (32 - n)) - 1)
        if isinstance(n, int)
        else torch.where(n >= 32, torch.zeros_like(x), (x >> n.clamp(max=31)) & ((1 << (32 - n.clamp(max=31))) - 1))
    )


def downcast_mxfp4(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E2M1 codes one per byte [..., K], E8M0 bytes [..., K/32]) of x [..., K], K a multiple of 32."""
    src = x.to(torch.float32)
    groups = src.reshape(*src.shape[:-1], -1, 32)
    ds = groups.abs().amax(dim=-1, keepdim=True) / 6.0
    bits = (ds.view(torch.int32) + 0x007FFFFF) & 0x7F800000
    s = bits.view(torch.float32)
    inv = torch.where(s == 0, torch.zeros_like(s), 1.0 / s)
    q = (groups * inv).reshape(src.shape).contiguous().view(torch.int32)
    sign, exp, mant = q & -0x80000000, _shr(q, 23) & 0xFF, q & 0x7FFFFF
    shift = (127 - exp - 1).clamp(min=0)
    mant = torch.where(exp < 127, _shr(0x400000 | _shr(mant, 1), shift), mant)
    exp = torch.maximum(exp, torch.tensor(126)) - 126
    code = torch.minimum(_shr(((exp << 2) | _shr(mant, 21)) + 1, 1), torch.tensor(7))
    codes = (_shr(sign, 28) | code).to(torch.uint8)
    return codes, _shr(bits, 23).squeeze(-1).to(torch.uint8)
