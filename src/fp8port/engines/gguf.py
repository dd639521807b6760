"""llama.cpp's converter with `--outtype q8_0`: block FP8 dequantized to float32, then GGUF Q8_0.

`convert_hf_to_gguf.py` (ggml-org/llama.cpp, commit a458664f) `ModelBase.dequant_model` replaces every
`quant_method: "fp8"` weight (and compressed-tensors float-quantized ones) by `dequant_simple`:
`weight.float() * scale` with the scale repeated over `weight_block_size` and cropped. The float32
weight is then written as Q8_0 by gguf-py's `gguf.quants.Q8_0.quantize_blocks`: per 32 consecutive
values along a row, d = amax / 127 (float32), q = round-half-away(x * (1 / d)) as int8, d stored as
float16; llama.cpp multiplies q by the float16 d. A row length that is not a multiple of 32 cannot be
Q8_0 and falls back to F16 (`prepare_tensors`). q / k row permutations for RoPE move whole rows and
do not change these values.

Q8_0 is written here in NumPy from that description (tests check it against `gguf.quants` byte for
byte); it moves onto the GGUF helper's `q8_0` scheme once that lands.
"""

from __future__ import annotations

import numpy as np

from ..quant import QuantizedTensor
from .base import Action, Context, Dense, Engine, Held, Step, WeightInfo, fail, fp32_values, held_dense, is_fp8_block

QK8_0 = 32


def q8_0_blocks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes, float16 scales per block) of a float32 array whose last axis is a multiple of 32."""
    blocks = np.asarray(x, np.float32).reshape(-1, QK8_0)
    d = np.max(np.abs(blocks), axis=1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    v = blocks * inv
    a = np.abs(v)
    f = np.floor(a)
    q = np.sign(v) * (f + (a - f >= np.float32(0.5)))  # ties away from zero, exact in float32
    return q.astype(np.int8), d.astype(np.float16)


def q8_0_values(x: np.ndarray) -> np.ndarray:
    """What llama.cpp computes from a Q8_0 tensor made of `x`: int8 code x float16 scale, float32."""
    q, d = q8_0_blocks(x)
    return (q.astype(np.float32) * d.astype(np.float32)).reshape(np.shape(x))


class GgufQ8_0(Engine):
    name = "gguf-q8_0"
    summary = "llama.cpp convert_hf_to_gguf --outtype q8_0: block FP8 dequantized to float32, then Q8_0 (1x32, fp16 d)"
    source = (
        "llama.cpp commit a458664f: convert_hf_to_gguf.py ModelBase.dequant_model (dequant_simple), "
        "prepare_tensors (F16 fallback); gguf-py 0.19.0 gguf/quants.py Q8_0.quantize_blocks / dequantize_blocks"
    )
    reads = ("fp8", "compressed-tensors")

    def decide(self, w: WeightInfo, ctx: Context) -> Step:
        s = w.scheme
        if not is_fp8_block(s):
            return fail(
                f"{self.name} is modelled for block-FP8 weights; this one is {s.element.name} in {s.block} blocks"
            )
        k = int(w.shape[-1])
        if k % QK8_0:
            return Step(
                Action.DEQUANTIZE, f"row length {k} is not a multiple of {QK8_0}: written as F16", dtype=Dense.FLOAT16
            )
        return Step(
            Action.DEQUANTIZE, "dequantized to float32, then Q8_0 (int8 per 32, float16 scale)", dtype=Dense.FLOAT32
        )

    def dequantize(self, step: Step, q: QuantizedTensor, ctx: Context) -> Held:
        x = fp32_values(q)
        if step.dtype is Dense.FLOAT16:
            return held_dense(x.astype(np.float16))
        return held_dense(q8_0_values(x), nbytes=x.size // QK8_0 * (QK8_0 + 2))  # int8 codes + fp16 d per block
