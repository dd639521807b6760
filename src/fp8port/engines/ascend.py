"""vLLM-Ascend: block-FP8 checkpoints (`quant_method: "fp8"`) resolved after loading, then MXFP8 on the
Ascend 950 and the model dtype on A2 / A3.

No Ascend matmul reads 128x128 float32 block scales. `AscendFp8BlockLinearMethod.process_weights_after_loading`
(vllm-project/vllm-ascend, `vllm_ascend/quantization/methods/w8a8/fp8_block.py` at commit 68d8ef07) first
resolves every weight with `resolve_block_scales`: `(w.to(float32) * s_expanded).to(model_dtype)`, the
scales kept in float32 for the multiply, so the product is rounded once, to the model dtype (bf16).
- Ascend 950 (`is_950()`): `_mx_quantize` runs `torch_npu.npu_dynamic_mx_quant(resolved,
  dst_type=float8_e4m3fn, scale_alg=0)`: 1x32 blocks along K, E8M0 scale 2^(floor(log2 amax) - 8)
  (CANN aclnnDynamicMxQuant, scale_alg 0), elements rounded to nearest even and clamped: fp8port's
  `mxfp8` weight scheme on the bf16 values. Layers whose K is not a multiple of 32, and `kv_b_proj`
  (which MLA splits into its own weights), stay in the model dtype. MiniMax-M3 uses scale_alg 1
  (`get_dynamic_mx_quant_scale_alg`), not modelled here.
- A2 / A3: the resolved weight is kept in the model dtype and runs the unquantized GEMM.
MXFP8 checkpoints (AscendV1 `W8A8_MXFP8`) run natively on the 950 and are kept.
"""

from __future__ import annotations

from ..quant import QuantizedTensor, get_preset, quantize
from .base import (
    Action,
    Context,
    Engine,
    Held,
    Step,
    WeightInfo,
    dims,
    fail,
    held_quantized,
    is_fp8_block,
    is_mxfp8,
    keep,
    resolve,
)

SOURCE = (
    "vllm-ascend commit 68d8ef07: vllm_ascend/quantization/methods/w8a8/fp8_block.py resolve_block_scales, "
    "_mx_quantize, AscendFp8BlockLinearMethod.process_weights_after_loading; "
    "vllm_ascend/quantization/utils.py get_dynamic_mx_quant_scale_alg; CANN aclnnDynamicMxQuant (scale_alg 0)"
)
MX_GROUP = 32


def _absorbed(name: str) -> bool:
    """kv_b_proj: MLA folds it into its own weights, so vLLM-Ascend keeps it dense (`_is_absorbed_by_attention`)."""
    return name.removesuffix(".weight").endswith("kv_b_proj")


class _VllmAscend(Engine):
    source = SOURCE
    reads = ("fp8", None)  # block FP8 through AscendFp8Config; AscendV1 folders carry no quantization_config

    def _unmodelled(self, w: WeightInfo) -> Step | None:
        if not is_fp8_block(w.scheme) and not is_mxfp8(w.scheme):
            return fail(
                f"{self.name} is modelled for block-FP8 and MXFP8 weights; this one is "
                f"{w.scheme.element.name} in {w.scheme.block} blocks"
            )
        return None

    def dense(self, ctx: Context, why: str) -> Step:
        return Step(Action.DEQUANTIZE, f"resolved to {ctx.dtype.value}: {why}", dtype=ctx.dtype)


class VllmAscend950(_VllmAscend):
    name = "vllm-ascend-950"
    summary = (
        "vLLM-Ascend on the Ascend 950: block-FP8 weights resolved to the model dtype (bf16), then "
        "requantized to MXFP8 (1x32, E8M0, OCP floor rule)"
    )

    def decide(self, w, ctx):
        step = self._unmodelled(w)
        if step is not None:
            return step
        if is_mxfp8(w.scheme):
            return keep("MXFP8 runs natively (npu_quant_matmul, group 32)")
        if ctx.model_type == "minimax_m3":
            return fail("MiniMax-M3 requantizes with scale_alg 1, which fp8port does not model")
        if _absorbed(w.name):
            return self.dense(ctx, "kv_b_proj is absorbed by MLA attention")
        _, k = dims(w)
        if k % MX_GROUP:
            return self.dense(ctx, f"K = {k} is not a multiple of the MXFP8 group {MX_GROUP}")
        return Step(
            Action.REQUANTIZE,
            f"resolved to {ctx.dtype.value}, then MXFP8 (npu_dynamic_mx_quant, scale_alg 0)",
            scheme=get_preset("mxfp8").weight.with_(name=f"{self.name}/weight"),
        )

    def requantize(self, step: Step, q: QuantizedTensor, ctx: Context) -> Held:
        x = resolve(q, ctx.dtype)
        return held_quantized(quantize(x, step.scheme, role="weight", nonfinite="propagate"), x)


class VllmAscendA2(_VllmAscend):
    name = "vllm-ascend-a2"
    summary = "vLLM-Ascend on Atlas A2 / A3: block-FP8 weights resolved to the model dtype (bf16), unquantized GEMM"

    def decide(self, w, ctx):
        step = self._unmodelled(w)
        if step is not None:
            return step
        if is_mxfp8(w.scheme):
            return fail("MXFP8 needs the Ascend 950; A2 / A3 have no MX matmul")
        return self.dense(ctx, "A2 / A3 have no block-FP8 matmul")
