"""The registry of on-disk layouts: detection (with the reason) and lookup by name.

HANDLERS is ordered: the first layout whose `detect` claims a folder (its files or its
quantization_config) wins; a folder without quantization_config is matched by tensor names
(`signature`) only where exactly one layout names tensors so. An unknown quant_method, a
quantized-looking folder nobody claims, and the layouts planned but not yet read are typed errors.
Adding a layout: a module with a LayoutHandler (and its Writer), an entry in HANDLERS, its tests;
see docs/layouts.md.
"""

from __future__ import annotations

from ...errors import LayoutError
from ...quant import get_preset
from ..folder import Checkpoint
from .ascend import Ascend
from .base import (
    Action,
    DenseDtype,
    Job,
    LayoutHandler,
    LayoutName,
    NonFinitePolicy,
    Relayout,
    Source,
    StoredWeight,
    Writer,
    WriteRequest,
    in_order,
)
from .common import QUANTIZED_DTYPES
from .compressed_tensors import CompressedTensors
from .deepseek import DeepSeek
from .deepseek_v4 import DeepSeekV4
from .dense import Dense
from .fp8port import Fp8port
from .gguf import Gguf
from .gpt_oss import GptOss
from .modelopt import ModelOpt


class Planned(LayoutHandler):
    """A layout fp8port knows but does not read yet: recognised, then refused with a typed error.

    files: file names that mark it; config_keys: (key, value) pairs of config.json that mark it
    beside a quantization_config; looks(ckpt) -> a tensor name that marks a folder without config."""

    def __init__(self, name: LayoutName, what: str, quant_methods=(), files=(), config_keys=(), looks=None):
        self.name, self.summary, self.quant_methods = name, what, tuple(quant_methods)
        self.files, self.config_keys, self.looks = files, config_keys, looks

    def refuse(self, where, why: str) -> LayoutError:
        return LayoutError(
            f"{where}: {why}: this is {self.summary}, which fp8port does not read or write yet "
            f"(read: {', '.join(n.value for n in readable())})"
        )

    def detect(self, ckpt):
        qc = ckpt.quantization_config
        why = super().detect(ckpt)
        why = why or next((f"{f} is present" for f in self.files if (ckpt.root / f).is_file()), None)
        why = why or next(
            (f"config.json has {k!r}: {v!r}" for k, v in self.config_keys if qc and (ckpt.config or {}).get(k) == v),
            None,
        )
        if why:
            raise self.refuse(ckpt.root, why)
        return None

    def signature(self, ckpt):
        hit = self.looks(ckpt) if self.looks else None
        if hit:
            raise self.refuse(ckpt.root, f"no quantization_config, but tensors such as {hit!r}")
        return None

    def weights(self, ckpt):
        raise self.refuse(ckpt.root, "asked to read it")


# Order matters: a GGUF file is one by its container, before any layout looks at files beside it; the
# AscendV1 description file next, DeepSeek-V4 before the V3 "fp8" it extends.
HANDLERS: list[LayoutHandler] = [
    Gguf(),
    Ascend(),
    DeepSeekV4(),
    DeepSeek(),
    CompressedTensors(),
    GptOss(),
    ModelOpt(),
    Fp8port(),
    Dense(),
]


def readable() -> list[LayoutName]:
    return [h.name for h in HANDLERS if not isinstance(h, Planned)]


def writable() -> list[LayoutName]:
    return [h.name for h in HANDLERS if type(h).writer is not LayoutHandler.writer and not isinstance(h, Planned)]


def get(name) -> LayoutHandler:
    """The handler of a layout name; a typed error for an unknown name or a planned layout."""
    name = LayoutName.parse(name)
    h = next(h for h in HANDLERS if h.name is name)
    if isinstance(h, Planned):
        raise h.refuse(f"layout {name.value!r}", "named")
    return h


def default_layout(preset: str) -> LayoutName:
    """Where `convert --preset P` writes without --layout: the layout that names P as its own
    (DeepSeek's presets: deepseek; deepseek-v4: deepseek-v4), else fp8port's."""
    own = next((h.name for h in HANDLERS if preset in h.presets), None)  # a layout's own name (deepseek-v4)
    name = own or get_preset(preset).name
    return own or next((h.name for h in HANDLERS if name in h.presets), LayoutName.FP8PORT)


def detect(ckpt: Checkpoint) -> tuple[LayoutHandler, str]:
    """The layout of a checkpoint and why; typed errors where it is unknown, ambiguous or planned."""
    for h in HANDLERS:
        why = h.detect(ckpt)
        if why:
            return h, why
    qc = ckpt.quantization_config
    if qc:
        method = qc.get("quant_method")
        what = f"quant_method {method!r}" if method is not None else "no quant_method"
        methods = [m for h in HANDLERS if not isinstance(h, Planned) for m in h.quant_methods]
        raise LayoutError(
            f"{ckpt.root / 'config.json'}: quantization_config has {what}, which fp8port does not "
            f"know; read: {', '.join(methods)} (layouts {', '.join(n.value for n in readable())})"
        )
    claims = [(h, why) for h in HANDLERS if (why := h.signature(ckpt))]
    if len(claims) == 1:
        return claims[0]
    if claims:
        raise LayoutError(
            f"{ckpt.root}: no quantization_config, and the tensor names fit several layouts "
            f"({', '.join(h.name.value for h, _ in claims)}); add the config.json that came with them"
        )
    odd = next((n for n, (_, i) in ckpt.tensors.items() if i.dtype in QUANTIZED_DTYPES), None)
    if odd is not None:
        raise LayoutError(
            f"{ckpt.root}: tensor {odd!r} is {ckpt.info(odd).dtype}, but there is no quantization_config "
            "to say how it is scaled; add the config.json that came with it"
        )
    return get(LayoutName.DENSE), "no quantization_config and no quantized tensors"


__all__ = [
    "HANDLERS",
    "Action",
    "DenseDtype",
    "Job",
    "LayoutHandler",
    "LayoutName",
    "NonFinitePolicy",
    "Relayout",
    "Source",
    "StoredWeight",
    "WriteRequest",
    "Writer",
    "default_layout",
    "detect",
    "get",
    "in_order",
    "readable",
    "writable",
]
