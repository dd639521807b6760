"""Test oracle: DeepSeek-V4's own FP4-expert handling, transcribed (never shipped in src/).

Source: deepseek-ai's DeepSeek-V4 `inference/convert.py` and `inference/model.py`, read in two copies
that agree byte for byte: Mockingjay1316/deepseek-v4-flash-spark@0825add42734731a285e30f657b0ccfc5bad74c9
(a copy of DeepSeek-V4-Flash's inference/) and Nicooo-Wang/DeepSeek-V4-Pro-code@0ec3a03c2fc34f29b2e72696ceaed9ae7a373aeb
(DeepSeek-V4-Pro's). The official repositories are on model hubs, not reachable here.

What the source does, and what is transcribed below with the same torch operations in the same order:
* checkpoint: routed experts `layers.L.ffn.experts.E.w{1,2,3}.weight` are I8 [out, in/2], two E2M1 codes
  per byte, the low nibble the even column; `.scale` F8_E8M0 [out, in/32]. Its FP4 table maps code 8
  (-0) to +0.0.
* `cast_e2m1fn_to_e4m3fn` (convert.py, used with --expert-dtype fp8): per 128x128 tile, t = max(scales
  in tile) / 2^6; each 1x32 block's values times scale / t, cast to float8_e4m3fn; tile scale t cast to
  float8_e8m0fnu.
* `model.py` Linear with float4_e2m1fn_x2 weights and its fp4_gemm: value = fp4(code) * 2^(e - 127)
  per 1x32 block along K, in float32.
"""

from __future__ import annotations

import torch

FP4_VALUES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def unpack_i8(packed: torch.Tensor) -> torch.Tensor:
    """I8 [out, in/2] -> float32 E2M1 values [out, in] (low nibble = even column)."""
    table = torch.tensor(FP4_VALUES, dtype=torch.float32)
    b = packed.view(torch.uint8)
    return torch.stack([table[(b & 0x0F).long()], table[((b >> 4) & 0x0F).long()]], dim=-1).flatten(1)


def dequantize_fp4(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float32 weights of an FP4 expert, as model.py's fp4 path computes them."""
    x = unpack_i8(packed)
    return x * scale.float().repeat_interleave(32, dim=1)


def cast_fp4_to_fp8(packed: torch.Tensor, scale: torch.Tensor, tile: int = 128):
    """(float8_e4m3fn [out, in], float8_e8m0fnu [out/tile, in/tile]) as convert.py makes them."""
    out_dim, in_dim = packed.shape[0], packed.shape[1] * 2
    assert out_dim % tile == 0 and in_dim % tile == 0
    assert tuple(scale.shape) == (out_dim, in_dim // 32)
    x = unpack_i8(packed)
    bo, bi = out_dim // tile, in_dim // tile
    x = x.view(bo, tile, bi, tile).transpose(1, 2)
    s = scale.float().view(bo, tile, bi, -1).transpose(1, 2).flatten(2)
    t = s.amax(dim=-1, keepdim=True) / 2**6
    offset = (s / t).unflatten(-1, (tile, -1)).repeat_interleave(32, dim=-1)
    x = (x * offset).transpose(1, 2).reshape(out_dim, in_dim)
    return x.to(torch.float8_e4m3fn), t.squeeze(-1).to(torch.float8_e8m0fnu)


def dequantize_fp8(w: torch.Tensor, scale: torch.Tensor, tile: int = 128) -> torch.Tensor:
    """float32 weights of an FP8 weight with tile x tile E8M0 scales (code * scale per tile)."""
    s = scale.float().repeat_interleave(tile, 0)[: w.shape[0]].repeat_interleave(tile, 1)[:, : w.shape[1]]
    return w.float() * s
