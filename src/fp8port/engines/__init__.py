"""What each engine does to a held checkpoint when it loads it, as fp8port's own transforms.

Each transform is transcribed from the engine's source (the module docstrings cite file, function and
version) and tested against that transcription (tests/engines). `plan` needs only headers (inspect uses
it); `apply` computes the weights the engine then multiplies by (eval --as, rescale --to ENGINE).

Imports: quant below, checkpoint / eval / cli above (checkpoint.inspect asks the engines).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ..names import NamedEnum
from .ascend import VllmAscend950, VllmAscendA2
from .base import Action, Context, Dense, Engine, Held, Step, WeightInfo
from .deepgemm import SglangSm100, VllmSm100
from .gguf import GgufQ8_0
from .transformers_cpu import TransformersCpu

ENGINES: dict[str, Engine] = {
    e.name: e for e in (VllmSm100(), SglangSm100(), VllmAscend950(), VllmAscendA2(), TransformersCpu(), GgufQ8_0())
}


class EngineName(NamedEnum):
    __label__ = "engine"
    VLLM_SM100 = "vllm-sm100"
    SGLANG_SM100 = "sglang-sm100"
    VLLM_ASCEND_950 = "vllm-ascend-950"
    VLLM_ASCEND_A2 = "vllm-ascend-a2"
    TRANSFORMERS_CPU = "transformers-cpu"
    GGUF_Q8_0 = "gguf-q8_0"


def get(name) -> Engine:
    return ENGINES[EngineName.parse(name).value]


def parse_list(text) -> list[Engine]:
    """'vllm-sm100,vllm-ascend-a2' (or a list of names) -> engines, in the order given, once each."""
    names = [n.strip() for n in text.split(",")] if isinstance(text, str) else list(text)
    return list({e.name: e for e in (get(n) for n in names if n)}.values())


def verdicts(weights: Iterable[WeightInfo], ctx: Context) -> dict:
    """Per engine: whether loading transforms the weights, the count per action, and the first line of
    each distinct reason (what inspect prints)."""
    weights = list(weights)
    out = {}
    for e in ENGINES.values():
        steps = [e.plan(w, ctx) for w in weights]
        fails = [(w.name, s.why) for w, s in zip(weights, steps) if s.action is Action.FAIL]
        out[e.name] = {
            "loads": not fails,
            "transforms": any(s.changes for s in steps),
            "counts": dict(Counter(s.action.value for s in steps)),
            "reasons": dict(Counter(s.why for s in steps)),
            "first_failure": f"{fails[0][0]}: {fails[0][1]}" if fails else None,
        }
    return out


__all__ = [
    "ENGINES",
    "Action",
    "Context",
    "Dense",
    "Engine",
    "EngineName",
    "Held",
    "Step",
    "WeightInfo",
    "get",
    "parse_list",
    "verdicts",
]
