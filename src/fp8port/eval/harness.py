"""The reference model and the swaps: put FP8Linear modules in, run, put the originals back.

One float32 copy of the model serves every preset and mode: quantized layers replace the
nn.Linear modules for one forward pass and are then removed, so no preset pays for a copy of
the embeddings, and the sensitivity scan can swap a single layer.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import layouts
from ..checkpoint.folder import Checkpoint
from ..errors import CheckpointError
from ..nn.load import set_module


def load_reference(model_path: Path):
    """(model in float32, eval mode; tokenizer) from a dense Hugging Face causal-LM folder, offline.
    Anything else is a typed error (a quantized folder: fp8port eval evaluates it as a checkpoint)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    handler, _ = layouts.detect(Checkpoint.open(model_path))
    if handler.name is not layouts.LayoutName.DENSE:
        raise CheckpointError(
            f"{model_path} is a {handler.name.value} checkpoint where a dense model is needed "
            "(fp8port eval evaluates a quantized folder as a checkpoint)"
        )
    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(model_path)
        # float32: the reference is the checkpoint's values exactly (BF16 widens without rounding)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    except (ValueError, OSError, KeyError, TypeError) as e:  # not a causal LM, no tokenizer, a broken config
        raise CheckpointError(
            f"{model_path}: transformers cannot load it as a causal LM with its tokenizer "
            f"({' '.join(str(e).split())[:300]})"
        ) from None
    return model, tok


@contextlib.contextmanager
def swapped(model: nn.Module, replacements: dict[str, nn.Module]):
    """Modules replaced by name for the duration of the block, restored afterwards."""
    originals = {n: model.get_submodule(n) for n in replacements}
    try:
        for n, m in replacements.items():
            set_module(model, n, m)
        yield model
    finally:
        for n, m in originals.items():
            set_module(model, n, m)


@torch.inference_mode()
def log_probs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """float32 log-probabilities of every next token, [rows, seq_len, vocab]."""
    return torch.log_softmax(model(ids).logits.float(), dim=-1)


@torch.inference_mode()
def capture_inputs(model: nn.Module, ids: torch.Tensor, names: list[str], rows: int = 1) -> tuple[torch.Tensor, dict]:
    """(log-probs of all rows, {linear name: its float32 input over the first `rows` rows,
    [tokens, in_features]}) from one forward pass."""
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for n in names:

        def hook(_mod, args, n=n):
            seen[n] = args[0][:rows].detach().reshape(-1, args[0].shape[-1]).float().clone()

        hooks.append(model.get_submodule(n).register_forward_pre_hook(hook))
    try:
        lp = log_probs(model, ids)
    finally:
        for h in hooks:
            h.remove()
    return lp, seen
