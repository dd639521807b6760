"""compressed-tensors (llm-compressor, vLLM): `quant_method: "compressed-tensors"`.

Read and written here: format `float-quantized`, FP8 E4M3 weights `X.weight` with `X.weight_scale`
(the float multiplier, F32 or BF16) per tensor ([1]), per output channel ([N, 1]), per 1xG group or
per `block_structure` block (ceil grid). The other formats are a typed error naming the format
until their readers land: add a `CTFormat` to FORMATS (the extension point) and remove it from
PLANNED_FORMATS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...errors import CheckpointError, LayoutError
from ...quant import Scheme, ScaleStorage, get_preset
from ...quant.scheme import BlockKind
from .base import LayoutHandler, LayoutName, StoredWeight, ignored_modules, with_config
from .common import (GridWriter, base_name, block_tensor, cannot_hold, check_grid, fp8_preset, grid_weights,
                     read_codes, read_scales, scale_storage)

FLOAT_QUANTIZED = "float-quantized"
PLANNED_FORMATS = ("nvfp4-pack-quantized", "mxfp4-pack-quantized", "mxfp8-quantized")
SCALE = "weight_scale"
COMPANIONS = ("input_scale",)  # static activation scales: part of the weight's module, not a tensor to copy
_STRATEGY = {"block": BlockKind.TILE, "channel": BlockKind.ROW, "tensor": BlockKind.TENSOR, "group": BlockKind.VECTOR}


def formats(qc: dict) -> list[str]:
    """Every format the config names (top level and per config group)."""
    groups = qc.get("config_groups")
    groups = groups.values() if isinstance(groups, dict) else ()
    names = [qc.get("format")] + [g.get("format") for g in groups if isinstance(g, dict)]
    return list(dict.fromkeys(repr(f) if not isinstance(f, str) else f for f in names if f is not None))


def _groups(ckpt) -> list[tuple[list, dict]]:
    """(targets, weight args) per config group, checked."""
    qc = ckpt.quantization_config
    where = ckpt.root / "config.json"
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise CheckpointError(f"{where}: compressed-tensors config has no config_groups (no block_structure "
                              "or strategy to read the weights with)")
    out = []
    for gname, g in groups.items():
        args = (g or {}).get("weights") if isinstance(g, dict) else None
        targets = g.get("targets") if isinstance(g, dict) else None
        if not isinstance(args, dict) or not isinstance(targets, list):
            raise CheckpointError(f"{where}: config group {gname!r} needs `targets` and `weights`")
        out.append((targets, args))
    return out


def _scheme(ckpt, args: dict, storage: ScaleStorage, cache: dict) -> Scheme:
    """The scheme of a config group's weight args (one object per distinct args and storage)."""
    key = (repr(args), storage)
    if key not in cache:
        cache[key] = _build(ckpt, args, storage)
    return cache[key]


def _build(ckpt, args: dict, storage: ScaleStorage) -> Scheme:
    where = ckpt.root / "config.json"
    if args.get("type") != "float" or args.get("num_bits") != 8:
        raise CheckpointError(f"{where}: weights of type {args.get('type')!r} with {args.get('num_bits')!r} bits "
                              f"are not {FLOAT_QUANTIZED} FP8 (read: float, 8 bits)")
    if args.get("symmetric") is False:
        raise CheckpointError(f"{where}: asymmetric FP8 weights (zero points) are not read")
    strategy = args.get("strategy")
    kind = _STRATEGY.get(strategy) if isinstance(strategy, str) else None
    if kind is BlockKind.TILE:
        bs = args.get("block_structure")
        if not (isinstance(bs, list) and len(bs) == 2 and all(type(b) is int and b > 0 for b in bs)):
            raise CheckpointError(f"{where}: compressed-tensors block_structure {bs!r} is not two positive integers "
                                  "(only the FP8 block, channel, group and tensor strategies are read)")
        block = f"{bs[0]}x{bs[1]}"
    elif kind is BlockKind.VECTOR:
        g = args.get("group_size")
        if not (type(g) is int and g > 0):
            raise CheckpointError(f"{where}: group strategy with group_size {g!r}")
        block = f"1x{g}"
    elif kind is None:
        raise CheckpointError(f"{where}: compressed-tensors strategy {strategy!r} is not read "
                              f"(read: {', '.join(_STRATEGY)}); its config has no block_structure to use")
    else:
        block = kind.value
    return Scheme.build("float8_e4m3fn", "v3_float", block, storage=storage,
                        name=f"compressed-tensors/{strategy}/weight")


def _matches(target, module: str) -> bool:
    try:
        return isinstance(target, str) and target.startswith("re:") and re.match(target[3:], module) is not None
    except re.error as e:
        raise CheckpointError(f"config_groups target {target!r} is not a regular expression ({e})") from None


def _group_of(module: str, groups: list[tuple[list, dict]]) -> dict:
    """The weight args whose targets match a module: a "re:" pattern first, else a name or class name."""
    for targets, args in groups:
        if any(_matches(t, module) for t in targets):
            return args
    for targets, args in groups:
        if any(isinstance(t, str) and not t.startswith("re:") for t in targets):
            return args
    return groups[0][1]


class FloatQuantized(LayoutHandler):
    """Format `float-quantized`: one entry of FORMATS, itself a LayoutHandler."""

    name = LayoutName.COMPRESSED_TENSORS

    def weights(self, ckpt):
        groups, cache = _groups(ckpt), {}

        def make(w, s):
            info = ckpt.info(w)
            if info.dtype != "F8_E4M3":
                raise CheckpointError(f"{ckpt.tensors[w][0]}: weight {w!r} is {info.dtype}; {FLOAT_QUANTIZED} "
                                      "weights are F8_E4M3")
            storage = scale_storage(ckpt, s, ("F32", "BF16", "F16"), "compressed-tensors")
            scheme = _scheme(ckpt, _group_of(base_name(w), groups), storage, cache)
            grid = scheme.block.grid(info.shape)
            tensor = scheme.block.kind is BlockKind.TENSOR
            check_grid(ckpt, w, s, info.shape, scheme, (1,) if tensor and ckpt.info(s).shape == (1,) else grid)
            parts = {"codes": w, "scale": s}
            parts.update({c: f"{base_name(w)}.{c}" for c in COMPANIONS if f"{base_name(w)}.{c}" in ckpt.tensors})
            return StoredWeight(w, tuple(info.shape), scheme, parts)

        return grid_weights(ckpt, SCALE, make)

    def read(self, ckpt, w):
        stored, s = read_scales(ckpt, w.parts["scale"], w)
        return block_tensor(read_codes(ckpt, w.name, w.shape, w.scheme.element), stored, s, w)

    def activation_scheme(self, ckpt, w):
        # compressed-tensors' dynamic FP8 activations: a float amax/448 scale per group (DeepSeek-V3's rule)
        return get_preset("deepseek-v3").activation

    def describe(self, ckpt, weights):
        out = super().describe(ckpt, weights)
        out.update(fp8_preset(ckpt, weights))
        for w in weights.values():
            if w.scheme.block.kind is BlockKind.TILE and w.shape[1] % 128:
                out["warnings"].append(f"{w.name} {list(w.shape)}: compressed-tensors' dynamic group-128 activation "
                                       "quantizer needs K % 128 == 0; load with dequantize=True")
        return out

    def writer(self, request, source):
        return CompressedTensorsWriter(self.name, request, source,
                                       get_preset(request.preset) if request.preset else None, scale_suffix=SCALE)


# The extension point: one LayoutHandler per compressed-tensors format (reading; the writer of the
# format that holds a scheme). A new format is an entry here, removed from PLANNED_FORMATS.
FORMATS: dict[str, LayoutHandler] = {FLOAT_QUANTIZED: FloatQuantized()}


class CompressedTensors(LayoutHandler):
    name = LayoutName.COMPRESSED_TENSORS
    summary = "X.weight F8_E4M3 + X.weight_scale (float multiplier) per tensor / channel / group / block"
    loaders = ("compressed-tensors (transformers CompressedTensorsConfig)", "vLLM", "SGLang", "llm-compressor")
    quant_methods = ("compressed-tensors",)

    def detect(self, ckpt):
        why = super().detect(ckpt)
        if why:
            self.format(ckpt)
        return why

    def format(self, ckpt) -> LayoutHandler:
        """The handler of the checkpoint's format; a typed error for a planned or unknown one."""
        names = formats(ckpt.quantization_config) or [FLOAT_QUANTIZED]
        for f in names:
            if f not in FORMATS:
                what = "is not read yet" if f in PLANNED_FORMATS else "is unknown"
                raise LayoutError(f"{ckpt.root / 'config.json'}: compressed-tensors format {f!r} {what} (read: "
                                  f"{', '.join(FORMATS)}; planned: {', '.join(PLANNED_FORMATS)})")
        if len(names) > 1:
            raise LayoutError(f"{ckpt.root / 'config.json'}: compressed-tensors formats {names} mixed in one "
                              "checkpoint are not read")
        return FORMATS[names[0]]

    def signature(self, ckpt):
        if any(n.endswith((".weight_packed", ".weight_global_scale")) for n in ckpt.tensors):
            return "no quantization_config, but compressed-tensors tensor names (weight_packed, weight_global_scale)"
        return None

    def weights(self, ckpt):
        return self.format(ckpt).weights(ckpt)

    def read(self, ckpt, w):
        return self.format(ckpt).read(ckpt, w)

    def activation_scheme(self, ckpt, w):
        return self.format(ckpt).activation_scheme(ckpt, w)

    def describe(self, ckpt, weights):
        out = self.format(ckpt).describe(ckpt, weights)
        out["loaders"] = dict.fromkeys(self.loaders, "loads it")
        return out

    def writer(self, request, source):
        return FORMATS[FLOAT_QUANTIZED].writer(request, source)


def _strategy(scheme: Scheme, shape) -> str | None:
    kind = scheme.block.kind
    if kind is BlockKind.VECTOR:
        return "group" if scheme.block.axis % len(shape) == len(shape) - 1 else None
    if kind is BlockKind.ROW:
        return "channel" if scheme.block.axis % len(shape) == len(shape) - 1 else None
    return {BlockKind.TILE: "block", BlockKind.TENSOR: "tensor"}[kind]


@dataclass
class CompressedTensorsWriter(GridWriter):
    def hold(self, name, shape, scheme):
        if scheme.element.name != "float8_e4m3fn":
            raise cannot_hold("compressed-tensors", scheme, f"{FLOAT_QUANTIZED} weights are F8_E4M3")
        if len(shape) != 2 or _strategy(scheme, shape) is None:
            raise cannot_hold("compressed-tensors", scheme, "strategies are tensor, channel (one scale per output "
                                                            "row), group (1xG along K) and block")
        if scheme.storage is ScaleStorage.E8M0:  # the same powers of two as float multipliers
            scheme = scheme.with_(storage="float32")
        if scheme.storage is not ScaleStorage.FLOAT32 and scheme.storage is not ScaleStorage.BFLOAT16:
            raise cannot_hold("compressed-tensors", scheme, "its scales are float multipliers (F32 or BF16)")
        return scheme

    def scale_shape(self, shape, scheme):
        return (1,) if scheme.block.kind is BlockKind.TENSOR else scheme.block.grid(shape)

    def config(self, config, jobs):
        schemes = self.schemes(jobs)
        if not schemes:
            return with_config(config, None)
        modules = {s: [base_name(j.source) for j in jobs if j.scheme == s] for s in schemes}
        groups = {}
        for i, s in enumerate(schemes):
            strategy = _strategy(s, (1, 1))
            weights = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": strategy, "dynamic": False,
                       "group_size": s.block.size[0] if strategy == "group" else None}
            if strategy == "block":
                weights["block_structure"] = list(s.block.size)
            acts = ({"num_bits": 8, "type": "float", "symmetric": True, "group_size": 128, "strategy": "group",
                     "dynamic": True} if strategy == "block" else None)
            targets = ["Linear"] if len(schemes) == 1 else [f"re:^{re.escape(m)}$" for m in modules[s]]
            groups[f"group_{i}"] = {"targets": targets, "weights": weights, "input_activations": acts,
                                    "output_activations": None, "format": FLOAT_QUANTIZED}
        return with_config(config, {
            "quant_method": "compressed-tensors", "format": FLOAT_QUANTIZED, "quantization_status": "compressed",
            "ignore": ignored_modules(jobs), "kv_cache_scheme": None, "global_compression_ratio": None,
            "config_groups": groups})
