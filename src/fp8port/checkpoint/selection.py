"""Which tensors a conversion quantizes: 2-D linear weights, minus what DeepSeek keeps dense."""

from __future__ import annotations

from fnmatch import fnmatchcase

# Kept in their original dtype by default, as DeepSeek's checkpoints do: embeddings and the
# output head (shared with the embedding in tied models), norms, MoE router gates
# (`mlp.gate.weight`, not `gate_proj`), and the multi-token-prediction head.
KEEP_DENSE = (
    "*embed*",
    "*wte.*",
    "*wpe.*",
    "lm_head.*",
    "*.lm_head.*",
    "*norm*",
    "*.gate.weight",
    "*router*",
    "*shared_head*",
)
FLOAT_DTYPES = ("F32", "F16", "BF16")


def quantizable(name: str, dtype: str, shape: tuple[int, ...], include=(), exclude=()) -> bool:
    """include/exclude: glob patterns over tensor names; exclude wins, include overrides the
    default keep list (but a tensor must still be a floating-point matrix)."""
    if any(fnmatchcase(name, p) for p in exclude):
        return False
    if dtype not in FLOAT_DTYPES or len(shape) != 2 or not name.endswith(".weight"):
        return False
    if any(fnmatchcase(name, p) for p in include):
        return True
    return not any(fnmatchcase(name, p) for p in KEEP_DENSE)
