"""Build runnable models from block-scaled checkpoints, or quantize one in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import layouts
from ..checkpoint.folder import Checkpoint
from ..checkpoint.selection import quantizable
from ..errors import CheckpointError, Fp8portError
from .experts import QuantizedExperts
from .linear import FP8Linear, Mode

_TORCH = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "U8": torch.uint8,
    "I8": torch.int8,
    "BOOL": torch.bool,
}


def _to_torch(a: np.ndarray, dtype: str) -> torch.Tensor:
    if dtype == "BF16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(a))


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def load_quantized(path, *, mode="weight-only", dtype=None, model_class=None) -> nn.Module:
    """A transformers model whose quantized linears are FP8Linear modules (codes + scales).

    Reads every layout fp8port reads, including what transformers cannot load itself
    (partial blocks, E8M0 scales, MX / NVFP4 / HiF8). dtype: of the dense parameters
    (default: the checkpoint's). mode: 'weight-only' or 'w8a8'.
    """
    try:
        import transformers
        from accelerate import init_empty_weights
    except ImportError as e:
        raise Fp8portError(
            f"load_quantized needs transformers and accelerate ({e}); pip install 'fp8port[models]'"
        ) from None
    mode = Mode.parse(mode)
    path = Path(path)
    ckpt = Checkpoint.open(path)
    handler, _ = layouts.detect(ckpt)
    weights = handler.weights(ckpt)
    cfg = dict(ckpt.config or {})
    if not cfg:
        raise CheckpointError(f"{path}: no config.json; load_quantized needs the model's config")
    cfg.pop("quantization_config", None)
    config = transformers.AutoConfig.for_model(**cfg)
    dense = [n for n, w in layouts.in_order(ckpt, weights) if w is None]
    dense_dtypes = {ckpt.info(n).dtype for n in dense if ckpt.info(n).dtype in _TORCH}
    dtype = dtype or next((_TORCH[d] for d in ("BF16", "F16", "F32") if d in dense_dtypes), torch.float32)
    cls = model_class or (
        transformers.AutoModelForCausalLM
        if any(a.endswith("ForCausalLM") for a in cfg.get("architectures", []))
        else transformers.AutoModel
    )
    with init_empty_weights(include_buffers=False):  # parameters on meta: no dense copy is ever made
        model = cls.from_config(config, dtype=dtype)
    prefix = _prefix(model, ckpt)
    biases = set()
    for w in weights.values():
        if not w.name.endswith(".weight"):  # a stacked-experts parameter (gpt-oss gate_up_proj [E, H, 2I])
            _set_experts(model, prefix + w.name, handler.read(ckpt, w), dtype, path)
            continue
        mod_name = prefix + w.name[: -len(".weight")]
        try:
            old = model.get_submodule(mod_name)
        except AttributeError:
            raise CheckpointError(
                f"{path}: quantized weight {w.name!r} has no module {mod_name!r} in {type(model).__name__}"
            ) from None
        bias, bname = None, f"{w.name[:-7]}.bias"
        if bname in ckpt.tensors:
            bias = _to_torch(ckpt.read(bname), ckpt.info(bname).dtype).to(dtype)
            biases.add(bname)
        if tuple(w.shape) != (old.out_features, old.in_features):
            raise CheckpointError(
                f"{path}: {w.name!r} is {list(w.shape)} but the model's {mod_name} is "
                f"{[old.out_features, old.in_features]}"
            )
        act = handler.activation_scheme(ckpt, w) if mode is Mode.W8A8 else None
        set_module(model, mod_name, FP8Linear.from_quantized(handler.read(ckpt, w), bias, mode, act))
    state = {prefix + n: _to_torch(ckpt.read(n), ckpt.info(n).dtype) for n in dense if n not in biases}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    left = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if left:
        raise CheckpointError(
            f"{path}: no tensor for {', '.join(left[:5])}" + (f" (+{len(left) - 5} more)" if len(left) > 5 else "")
        )
    if unexpected:
        raise CheckpointError(f"{path}: tensors the model does not have: {', '.join(unexpected[:5])}")
    for p in model.parameters():
        if p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
    return model.eval()


def _set_experts(model: nn.Module, name: str, q, dtype, path) -> None:
    """Replace a model's 3-D experts parameter by QuantizedExperts, and run the experts' eager forward
    (which indexes one expert at a time; the grouped kernels want the whole dense tensor)."""
    parent, _, attr = name.rpartition(".")
    try:
        owner = model.get_submodule(parent)
    except AttributeError:
        owner = None
    param = owner._parameters.get(attr) if owner is not None else None
    if param is None or tuple(param.shape) != tuple(q.shape):
        got = "no such parameter" if param is None else f"the model's is {list(param.shape)}"
        raise CheckpointError(f"{path}: quantized experts {name!r} {list(q.shape)}: {got} in {type(model).__name__}")
    del owner._parameters[attr]
    owner.add_module(attr, QuantizedExperts(q, dtype))
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation("eager")


def _prefix(model: nn.Module, ckpt: Checkpoint) -> str:
    """'' when checkpoint names match the model's, else the base-model prefix to drop/add."""
    names = set(dict(model.named_parameters()))
    sample = next(iter(ckpt.tensors))
    if sample in names or not getattr(model, "base_model_prefix", ""):
        return ""
    p = model.base_model_prefix + "."
    return "" if any(n.startswith(p) for n in ckpt.tensors) else (p if p + sample in names else "")


_DT = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}


def target_linears(model: nn.Module, include=(), exclude=()) -> dict[str, nn.Linear]:
    """The nn.Linear modules a conversion would quantize, by module name, in model order."""
    return {
        name: mod
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear)
        and quantizable(f"{name}.weight", _DT.get(mod.weight.dtype, "?"), tuple(mod.weight.shape), include, exclude)
    }


def quantize_model(model: nn.Module, preset, *, mode="weight-only", include=(), exclude=()) -> nn.Module:
    """Replace (in place) every nn.Linear that a conversion would quantize with an FP8Linear."""
    for name, mod in target_linears(model, include, exclude).items():
        set_module(model, name, FP8Linear.from_linear(mod, preset, mode))
    return model


def resident_bytes(model: nn.Module) -> dict:
    """Bytes held by parameters and buffers, split into FP8Linear layers (and quantized experts) and the rest."""
    fp8 = sum(m.resident_bytes() for m in model.modules() if isinstance(m, (FP8Linear, QuantizedExperts)))
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return {"total": total, "fp8_layers": fp8, "dense": total - fp8}
