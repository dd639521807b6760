"""transformers on a CPU: block-FP8 checkpoints dequantized while loading, block size read off the scale grid.

Without a GPU, `from_pretrained` of a `quant_method: "fp8"` checkpoint sets `dequantize=True`
(FineGrainedFP8HfQuantizer.validate_environment) and runs `Fp8Dequantize._dequantize_one` on every
(weight, weight_scale_inv) pair (`transformers/integrations/finegrained_fp8.py`, 5.8 to 5.25.0, the
version installed here): the block is **inferred** as (rows // scale_rows, cols // scale_cols), not
taken from `weight_block_size`, then `(w.float() * s).to(param dtype)`. A ceil grid does not invert:
- rows or cols not divisible by the grid (576 x 576 with a 5 x 5 grid, every SmolLM2 attention
  projection): `ValueError: Weight shape (576, 576) not divisible by scale grid (5, 5)`, and
  `from_pretrained` ends in `RuntimeError: We encountered some issues during automatic conversion`;
- divisible but ragged (192 x 256 with a 2 x 2 grid): read with 96 x 128 blocks, silently wrong.
compressed-tensors checkpoints go through compressed-tensors' own decompression (pads to whole blocks,
multiplies, crops): exact, then the model dtype. The param dtype is the model's (`dtype="auto"`: config).
"""

from __future__ import annotations

from .base import Action, Context, Engine, Step, WeightInfo, fail, is_fp8_block


class TransformersCpu(Engine):
    name = "transformers-cpu"
    summary = (
        "transformers 5.8-5.25 from_pretrained on a CPU: block-FP8 weights dequantized to the model dtype, "
        "the block size inferred from the scale grid (fails or misreads ragged shapes)"
    )
    source = (
        "transformers 5.25.0: integrations/finegrained_fp8.py Fp8Dequantize._dequantize_one; "
        "quantizers/quantizer_finegrained_fp8.py validate_environment (CPU -> dequantize=True); "
        "compressed-tensors: quantization/lifecycle/forward.py dequantize (block padding)"
    )
    reads = ("fp8", "compressed-tensors")

    def decide(self, w: WeightInfo, ctx: Context) -> Step:
        s = w.scheme
        if not is_fp8_block(s) or len(w.shape) != 2:
            return fail(
                f"{self.name} is modelled for 2-D block-FP8 weights; this one is {s.element.name} in "
                f"{s.block} blocks, shape {list(w.shape)}"
            )
        to = f"dequantized to {ctx.dtype.value}"
        if ctx.quant_method != "fp8":
            return Step(Action.DEQUANTIZE, f"{to} by compressed-tensors (ceil grid handled)", dtype=ctx.dtype)
        (n, k), (gn, gk) = w.shape, s.block.grid(tuple(w.shape))
        if n % gn or k % gk:
            return fail(
                f"Weight shape ({n}, {k}) not divisible by scale grid ({gn}, {gk}): from_pretrained "
                "fails for the whole model (RuntimeError: ... automatic conversion of the weights)"
            )
        bm, bk = n // gn, k // gk
        # an axis with one block decodes the same whatever its inferred extent
        if all(g == 1 or b == want for g, b, want in zip((gn, gk), (bm, bk), s.block.size)):
            return Step(Action.DEQUANTIZE, to, dtype=ctx.dtype)
        return Step(
            Action.DEQUANTIZE,
            f"{to} WRONG: read with {bm}x{bk} blocks instead of {s.block} (block size inferred from the scale grid)",
            dtype=ctx.dtype,
            reads_as=s.with_(block=f"{bm}x{bk}"),
        )
