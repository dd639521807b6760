"""The engines' load-time transforms as their own code computes them, in torch: the oracles of
test_transforms.py. Each function names the file and function it follows; written anew from them.

transformers and gguf-py are installed here, so their tests call the real code instead.
"""

from __future__ import annotations

import torch

E4M3_MAX = 448.0


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def expand_scales(scale: torch.Tensor, shape, block) -> torch.Tensor:
    """A [ceil(N/bm), ceil(K/bk)] scale grid repeated over its blocks and cropped to the weight."""
    (bm, bk), (m, k) = block, shape
    return scale.repeat_interleave(bm, dim=0).repeat_interleave(bk, dim=1)[:m, :k]


# ---- vLLM 0.32.0 --------------------------------------------------------------------------------


def vllm_ceil_to_ue8m0(x: torch.Tensor) -> torch.Tensor:
    """vllm/utils/deep_gemm.py `_ceil_to_ue8m0`: a float log2, ceil, then pow."""
    return torch.pow(2.0, torch.ceil(torch.log2(x.abs())))


def vllm_per_block_cast_to_fp8(x: torch.Tensor, block, use_ue8m0: bool):
    """vllm/utils/deep_gemm.py `per_block_cast_to_fp8`: pad with zeros to whole blocks, amax per block
    (clamped to 1e-4), sf = amax / 448 (UE8M0: rounded up to a power of two), x * (1 / sf) cast to E4M3."""
    m, n = x.shape
    bm, bn = block
    padded = torch.zeros((_cdiv(m, bm) * bm, _cdiv(n, bn) * bn), dtype=x.dtype)
    padded[:m, :n] = x
    view = padded.view(-1, bm, padded.size(1) // bn, bn)
    amax = view.abs().float().amax(dim=(1, 3), keepdim=True).clamp(1e-4)
    sf = amax / E4M3_MAX
    if use_ue8m0:
        sf = vllm_ceil_to_ue8m0(sf)
    q = (view * (1.0 / sf)).to(torch.float8_e4m3fn)
    return q.view_as(padded)[:m, :n].contiguous(), sf.view(view.size(0), view.size(2))


def vllm_requant_weight_ue8m0_inplace(weight: torch.Tensor, scale: torch.Tensor, block=(128, 128)) -> None:
    """vllm/model_executor/layers/quantization/utils/fp8_utils.py `requant_weight_ue8m0_inplace`: per
    matrix, dequantize with the old float32 scales, requantize with UE8M0, write both back in place."""
    w3 = weight.unsqueeze(0) if weight.dim() == 2 else weight.reshape(-1, *weight.shape[-2:])
    s3 = scale.unsqueeze(0) if scale.dim() == 2 else scale.reshape(-1, *scale.shape[-2:])
    for w, s in zip(w3, s3):
        w_dq = w.to(torch.float32) * expand_scales(s.to(torch.float32), w.shape, block)
        q, sf = vllm_per_block_cast_to_fp8(w_dq, list(block), use_ue8m0=True)
        w.copy_(q)
        s.copy_(sf)


# ---- SGLang 0.5.23 ------------------------------------------------------------------------------


def sglang_block_quant_dequant(w: torch.Tensor, s: torch.Tensor, block, dtype) -> torch.Tensor:
    """srt/layers/quantization/fp8_utils.py `block_quant_dequant`: w.float() * expanded scales, to dtype."""
    return (w.to(torch.float32) * expand_scales(s, w.shape, block)).to(dtype)


def sglang_ceil_to_ue8m0(x: torch.Tensor) -> torch.Tensor:
    """fp8_utils.py `ceil_to_ue8m0`: the float32 exponent field, plus one for a non-zero mantissa, in [1, 254]."""
    bits = x.abs().float().view(torch.int32)
    exp = ((bits >> 23) & 0xFF) + ((bits & 0x7FFFFF) != 0).to(torch.int32)
    return (exp.clamp(1, 254) << 23).view(torch.float32)


def sglang_per_block_cast_to_fp8(x: torch.Tensor):
    """fp8_utils.py `per_block_cast_to_fp8` (128 x 128, always UE8M0)."""
    m, n = x.shape
    padded = torch.zeros((_cdiv(m, 128) * 128, _cdiv(n, 128) * 128), dtype=x.dtype)
    padded[:m, :n] = x
    view = padded.view(-1, 128, padded.size(1) // 128, 128)
    amax = view.abs().float().amax(dim=(1, 3), keepdim=True).clamp(1e-4)
    sf = sglang_ceil_to_ue8m0(amax / E4M3_MAX)
    q = (view * (1.0 / sf)).to(torch.float8_e4m3fn)
    return q.view_as(padded)[:m, :n].contiguous(), sf.view(view.size(0), view.size(2))


def sglang_requant_weight_ue8m0(weight: torch.Tensor, scale: torch.Tensor):
    """fp8_utils.py `requant_weight_ue8m0` for a 2-D weight: dequantize to bfloat16, then
    `quant_weight_ue8m0` (per_block_cast_to_fp8). The scales are returned before
    `transform_scale_ue8m0`, which only packs them into DeepGEMM's TMA layout."""
    deq = sglang_block_quant_dequant(weight, scale, (128, 128), torch.bfloat16)
    return sglang_per_block_cast_to_fp8(deq)


# ---- vLLM-Ascend (commit 68d8ef07) and CANN -----------------------------------------------------


def ascend_resolve_block_scales(weight: torch.Tensor, scale_inv: torch.Tensor, bn: int, bk: int, dtype):
    """vllm_ascend/quantization/methods/w8a8/fp8_block.py `resolve_block_scales` (its row chunks do not
    change values): float32 product with the float32 scales, one rounding to the model dtype."""
    return (weight.to(torch.float32) * expand_scales(scale_inv.to(torch.float32), weight.shape, (bn, bk))).to(dtype)


def npu_dynamic_mx_quant_alg0(x: torch.Tensor, group: int = 32):
    """torch_npu.npu_dynamic_mx_quant(x, dst_type=float8_e4m3fn, scale_alg=0) as CANN's aclnnDynamicMxQuant
    documents it: per `group` along the last axis, shared_exp = floor(log2(max |V|)) - emax (8 for E4M3),
    mxscale = 2^shared_exp, P = cast(V / mxscale) rounding to nearest even. Assumed where the document is
    silent: elements beyond 448 clamp to +-448 (OCP MX), an all-zero group gets the lowest scale 2^-127."""
    rows, k = x.shape
    g = x.float().view(rows, k // group, group)
    amax = g.abs().amax(dim=-1, keepdim=True)
    _, e = torch.frexp(amax)  # amax = m * 2^e with m in [0.5, 1): floor(log2 amax) = e - 1, exactly
    shared = torch.where(amax > 0, e - 1 - 8, torch.full_like(e, -127)).clamp(-127, 127)
    scale = torch.ldexp(torch.ones_like(amax), shared)
    q = (g / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).view(rows, k)
    return q, (shared + 127).to(torch.uint8).view(rows, k // group)
