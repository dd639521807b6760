"""compressed-tensors (llm-compressor, vLLM): `quant_method: "compressed-tensors"`, read and written.

One `CTFormat` per compressed-tensors format, in FORMATS (the extension point):

* `float-quantized`: FP8 E4M3 `X.weight` with `X.weight_scale` (the float multiplier, F32 or BF16) per tensor
  ([1]), per output channel ([N, 1]), per 1xG group or per `block_structure` block (ceil grid);
* `nvfp4-pack-quantized`: `X.weight_packed` U8 [N, K/2] (two E2M1 codes per byte, low nibble first),
  `X.weight_scale` F8_E4M3 [N, K/16], `X.weight_global_scale` F32 [1]: a DIVISOR g (value = code * s / g);
  `X.input_global_scale` (static NVFP4 activations, also a divisor) where the scheme has input activations;
* `mxfp4-pack-quantized`: `X.weight_packed` as above, `X.weight_scale` E8M0 bytes as U8 [N, K/32];
* `mxfp8-quantized`: `X.weight` F8_E4M3, `X.weight_scale` E8M0 bytes as U8 [N, K/32].

Written as llm-compressor 0.14 (compressed-tensors 0.19) writes them: the same tensors, and the same
quantization_config where the scheme decides it (docs/layouts-on-disk.md section 1). q/k/v and gate/up
share one NVFP4 global scale (`fused.py`). One format per checkpoint; `mixed-precision` is not written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ...errors import CheckpointError, LayoutError
from ...quant import ScaleStorage, Scheme, get_preset, nvfp4
from ...quant.scheme import BlockKind
from .base import LayoutHandler, LayoutName, StoredWeight, ignored_modules, with_config
from .common import (
    Nvfp4Writer,
    base_name,
    block_tensor,
    cannot_hold,
    check_grid,
    checked,
    code_output,
    fp8_preset,
    grid_weights,
    logical_shape,
    pack_codes,
    read_codes,
    read_scales,
    scale_storage,
)
from .fused import fused_sets

FLOAT_QUANTIZED = "float-quantized"
PLANNED_FORMATS = ("mxfp6-pack-quantized", "mixed-precision")
SCALE = "weight_scale"
GLOBAL = "weight_global_scale"
INPUT_GLOBAL = "input_global_scale"
COMPANIONS = ("input_scale",)  # static FP8 activation scales: part of the weight's module, not a tensor to copy
VERSION = "0.19.0"  # the compressed-tensors release whose config llm-compressor 0.14 writes (and we match)
_STRATEGY = {"block": BlockKind.TILE, "channel": BlockKind.ROW, "tensor": BlockKind.TENSOR, "group": BlockKind.VECTOR}
_CT = "CompressedTensorsConfig(dequantize=True) on CPU (checked here, bit for bit)"
_LOADERS = {  # vLLM / SGLang from their sources and docs, not run here (no GPU)
    FLOAT_QUANTIZED: {
        "vLLM": "FP8 GEMM, or Marlin weight-only on GPUs without FP8",
        "SGLang": "loads it",
        "transformers": _CT,
    },
    "nvfp4-pack-quantized": {
        "vLLM": "CompressedTensorsW4A4Fp4 (Blackwell FP4 GEMM) / W4A16Fp4 (Marlin, older GPUs)",
        "SGLang": "loads it (Blackwell)",
        "transformers": _CT,
    },
    "mxfp4-pack-quantized": {
        "vLLM": "CompressedTensorsW4A4Mxfp4 (emulation or Marlin weight-only)",
        "transformers": _CT,
    },
    "mxfp8-quantized": {"vLLM": "recent releases' MXFP8 linear kernels (unverified here)", "transformers": _CT},
}
_PITFALLS = {
    FLOAT_QUANTIZED: [],
    "nvfp4-pack-quantized": [
        "weight_global_scale g is a DIVISOR (value = code * s / g), the reciprocal of ModelOpt's weight_scale_2: a "
        "reader that multiplies misreads every weight",
        "q/k/v and gate/up must share one global scale: vLLM's fused layers keep one",
    ],
    "mxfp4-pack-quantized": [
        "weight_scale holds E8M0 bytes as U8 (not F8_E8M0); its rule is compressed-tensors' own (ct_mx), not OCP "
        "FLOOR: requantizing with the mxfp4 preset gives other bytes",
        "E2M1 code 8 is -0 here, +0 in ModelOpt, DeepSeek-V4 and ggml (values equal, bits differ)",
    ],
    "mxfp8-quantized": [
        "weight_scale holds E8M0 bytes as U8; ct_mx rounds amax at E2M1's 1 mantissa bit even for FP8, so it never "
        "clips but puts some blocks a binade up (OCP FLOOR: the mxfp8 preset)"
    ],
}


def formats(qc: dict) -> list[str]:
    """Every format the config names (top level and per config group)."""
    groups = qc.get("config_groups")
    groups = groups.values() if isinstance(groups, dict) else ()
    names = [qc.get("format")] + [g.get("format") for g in groups if isinstance(g, dict)]
    return list(dict.fromkeys(repr(f) if not isinstance(f, str) else f for f in names if f is not None))


def _groups(ckpt) -> list[tuple[list, dict, dict | None]]:
    """(targets, weight args, input activation args) per config group, checked."""
    qc = ckpt.quantization_config
    where = ckpt.root / "config.json"
    groups = qc.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise CheckpointError(
            f"{where}: compressed-tensors config has no config_groups (no block_structure "
            "or strategy to read the weights with)"
        )
    out = []
    for gname, g in groups.items():
        args = (g or {}).get("weights") if isinstance(g, dict) else None
        targets = g.get("targets") if isinstance(g, dict) else None
        if not isinstance(args, dict) or not isinstance(targets, list):
            raise CheckpointError(f"{where}: config group {gname!r} needs `targets` and `weights`")
        acts = g.get("input_activations")
        out.append((targets, args, acts if isinstance(acts, dict) else None))
    return out


def _matches(target, module: str) -> bool:
    try:
        return isinstance(target, str) and target.startswith("re:") and re.match(target[3:], module) is not None
    except re.error as e:
        raise CheckpointError(f"config_groups target {target!r} is not a regular expression ({e})") from None


def _group_of(module: str, groups: list[tuple]) -> tuple:
    """The config group whose targets match a module: a "re:" pattern first, else a name or class name."""
    for g in groups:
        if any(_matches(t, module) for t in g[0]):
            return g
    for g in groups:
        if any(isinstance(t, str) and not t.startswith("re:") for t in g[0]):
            return g
    return groups[0]


def _strategy(scheme: Scheme, shape) -> str | None:
    kind = scheme.block.kind
    if kind is BlockKind.VECTOR:
        return "group" if scheme.block.axis % len(shape) == len(shape) - 1 else None
    if kind is BlockKind.ROW:
        return "channel" if scheme.block.axis % len(shape) == len(shape) - 1 else None
    return {BlockKind.TILE: "block", BlockKind.TENSOR: "tensor"}[kind]


def _args(
    num_bits: int, strategy: str, group_size, scale_dtype, block_structure=None, dynamic=False, observer=None
) -> dict:
    """QuantizationArgs as compressed-tensors 0.19 serializes them (every key)."""
    return {
        "actorder": None,
        "block_structure": block_structure,
        "dynamic": dynamic,
        "group_size": group_size,
        "num_bits": num_bits,
        "observer": observer,
        "observer_kwargs": {},
        "scale_dtype": scale_dtype,
        "strategy": strategy,
        "symmetric": True,
        "type": "float",
        "zp_dtype": None,
    }


class CTFormat(LayoutHandler):
    """One compressed-tensors format: reading it, and the writer's part (`fit`, `outputs`, `arrays`, `group`)."""

    name = LayoutName.COMPRESSED_TENSORS
    format = ""

    def takes(self, scheme: Scheme) -> bool:
        """Whether this format is the one that writes schemes of this kind (element, scale storage)."""
        return False

    def fit(self, name: str, shape, scheme: Scheme) -> Scheme:
        """`scheme` as this format stores it, or a typed error (common.cannot_hold) for this tensor."""
        return scheme

    def group(self, schemes: list[Scheme], modules: dict, static_inputs: bool) -> dict:
        """config_groups of the written schemes (modules: the modules written in each; static_inputs:
        the weights carry static input scales)."""
        raise NotImplementedError

    def engines(self) -> dict:
        """{engine: how it loads this format}, for inspect."""
        return _LOADERS[self.format]

    def pitfalls(self) -> list[str]:
        """What trips real readers of this format, for inspect."""
        return _PITFALLS[self.format]


class FloatQuantized(CTFormat):
    """Format `float-quantized`: FP8 E4M3 with float multipliers per tensor / channel / group / block."""

    format = FLOAT_QUANTIZED

    def _build(self, ckpt, args: dict, storage: ScaleStorage) -> Scheme:
        where = ckpt.root / "config.json"
        if args.get("type") != "float" or args.get("num_bits") != 8:
            raise CheckpointError(
                f"{where}: weights of type {args.get('type')!r} with {args.get('num_bits')!r} bits "
                f"are not {FLOAT_QUANTIZED} FP8 (read: float, 8 bits)"
            )
        if args.get("symmetric") is False:
            raise CheckpointError(f"{where}: asymmetric FP8 weights (zero points) are not read")
        strategy = args.get("strategy")
        kind = _STRATEGY.get(strategy) if isinstance(strategy, str) else None
        if kind is BlockKind.TILE:
            bs = args.get("block_structure")
            if not (isinstance(bs, list) and len(bs) == 2 and all(type(b) is int and b > 0 for b in bs)):
                raise CheckpointError(
                    f"{where}: compressed-tensors block_structure {bs!r} is not two positive "
                    "integers (only the FP8 block, channel, group and tensor strategies are read)"
                )
            block = f"{bs[0]}x{bs[1]}"
        elif kind is BlockKind.VECTOR:
            g = args.get("group_size")
            if not (type(g) is int and g > 0):
                raise CheckpointError(f"{where}: group strategy with group_size {g!r}")
            block = f"1x{g}"
        elif kind is None:
            raise CheckpointError(
                f"{where}: compressed-tensors strategy {strategy!r} is not read "
                f"(read: {', '.join(_STRATEGY)}); its config has no block_structure to use"
            )
        else:
            block = kind.value
        return Scheme.build(
            "float8_e4m3fn", "v3_float", block, storage=storage, name=f"compressed-tensors/{strategy}/weight"
        )

    def weights(self, ckpt):
        groups, cache = _groups(ckpt), {}

        def make(w, s):
            info = ckpt.info(w)
            if info.dtype != "F8_E4M3":
                raise CheckpointError(
                    f"{ckpt.tensors[w][0]}: weight {w!r} is {info.dtype}; {FLOAT_QUANTIZED} weights are F8_E4M3"
                )
            storage = scale_storage(ckpt, s, ("F32", "BF16", "F16"), "compressed-tensors")
            args = _group_of(base_name(w), groups)[1]
            key = (repr(args), storage)  # one Scheme object per distinct args: plans pickled to workers share it
            scheme = cache.get(key) or cache.setdefault(key, self._build(ckpt, args, storage))
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
                out["warnings"].append(
                    f"{w.name} {list(w.shape)}: compressed-tensors' dynamic group-128 activation "
                    "quantizer needs K % 128 == 0; load with dequantize=True"
                )
        return out

    # -- writing
    def takes(self, scheme):
        return scheme.element.name == "float8_e4m3fn"

    def fit(self, name, shape, scheme):
        if len(shape) != 2 or _strategy(scheme, shape) is None:
            raise cannot_hold(
                "compressed-tensors",
                scheme,
                "strategies are tensor, channel (one scale per output row), group (1xG along K) and block",
            )
        if scheme.storage is ScaleStorage.E8M0:  # the same powers of two as float multipliers
            scheme = scheme.with_(storage="float32")
        if scheme.storage is not ScaleStorage.FLOAT32 and scheme.storage is not ScaleStorage.BFLOAT16:
            raise cannot_hold("compressed-tensors", scheme, "its scales are float multipliers (F32 or BF16)")
        return scheme

    def outputs(self, name, shape, scheme):
        scale = (1,) if scheme.block.kind is BlockKind.TENSOR else scheme.block.grid(shape)
        return [
            code_output(name, shape, scheme.element),
            (f"{base_name(name)}.{SCALE}", scheme.storage.safetensors, scale),
        ]

    def arrays(self, q, input_scale):
        return [pack_codes(q), np.asarray(q.scale).reshape(self.outputs("w", q.shape, q.scheme)[1][2])]

    def group(self, schemes, modules, static_inputs):
        groups = {}
        for i, s in enumerate(schemes):
            strategy = _strategy(s, (1, 1))
            weights = {
                "num_bits": 8,
                "type": "float",
                "symmetric": True,
                "strategy": strategy,
                "dynamic": False,
                "group_size": s.block.size[0] if strategy == "group" else None,
            }
            if strategy == "block":
                weights["block_structure"] = list(s.block.size)
            acts = (
                {
                    "num_bits": 8,
                    "type": "float",
                    "symmetric": True,
                    "group_size": 128,
                    "strategy": "group",
                    "dynamic": True,
                }
                if strategy == "block"
                else None
            )
            targets = ["Linear"] if len(schemes) == 1 else [f"re:^{re.escape(m)}$" for m in modules[s]]
            groups[f"group_{i}"] = {
                "targets": targets,
                "weights": weights,
                "input_activations": acts,
                "output_activations": None,
                "format": FLOAT_QUANTIZED,
            }
        return groups


@dataclass(frozen=True)
class _Micro:
    """What tells one microscale format from another."""

    format: str
    preset: str  # the scheme a weight of this format is read in
    codes: str  # the code tensor's suffix
    codes_dtype: str  # its safetensors dtype (U8: two E2M1 codes per byte)
    strategy: str  # its weights' strategy in config_groups
    scale_dtype: str  # safetensors dtype of weight_scale
    scale_name: str  # ... as config_groups names it
    group_name: str  # the config group llm-compressor names after its preset (weight-only)


class Microscale(CTFormat):
    """Formats `nvfp4-pack-quantized`, `mxfp4-pack-quantized`, `mxfp8-quantized`: E2M1 / E4M3 codes in
    groups of 16 or 32 along K, an E4M3 or E8M0 (as U8) scale per group, NVFP4's global divisor."""

    def __init__(self, spec: _Micro):
        self.spec, self.format = spec, spec.format

    @property
    def scheme(self) -> Scheme:
        return get_preset(self.spec.preset).weight

    @property
    def nvfp4(self) -> bool:
        return self.scheme.storage is ScaleStorage.E4M3_TENSOR

    def _check_args(self, ckpt, module: str, args: dict) -> None:
        s = self.scheme
        want = {
            "num_bits": s.element.bits,
            "type": "float",
            "strategy": self.spec.strategy,
            "group_size": s.block.size[0],
        }
        bad = {k: args.get(k) for k, v in want.items() if args.get(k) != v}
        if bad or args.get("symmetric") is False:
            raise CheckpointError(
                f"{ckpt.root / 'config.json'}: module {module!r} has weights {bad or args} in a "
                f"{self.format} checkpoint, whose weights are {want} (symmetric)"
            )

    def weights(self, ckpt):
        groups = _groups(ckpt)
        scheme, spec = self.scheme, self.spec
        out = {}
        for s in (n for n in ckpt.tensors if n.endswith("." + SCALE)):
            base = s[: -len(SCALE) - 1]
            codes, where = f"{base}.{spec.codes}", ckpt.tensors[s][0]
            if codes not in ckpt.tensors:
                raise CheckpointError(f"{where}: scale {s!r} has no {spec.codes} tensor {codes!r} ({self.format})")
            self._check_args(ckpt, base, _group_of(base, groups)[1])
            info = ckpt.info(codes)
            if info.dtype != spec.codes_dtype or len(info.shape) != 2:
                raise CheckpointError(
                    f"{where}: {codes!r} is {info.dtype}{list(info.shape)}; {self.format} codes are "
                    f"2-D {spec.codes_dtype}"
                )
            shape = logical_shape(info, scheme.element)
            if ckpt.info(s).dtype != spec.scale_dtype:
                raise CheckpointError(
                    f"{where}: scale {s!r} is {ckpt.info(s).dtype}; {self.format} scales are {spec.scale_dtype}"
                )
            check_grid(ckpt, base + ".weight", s, shape, scheme)
            parts = {"codes": codes, "scale": s}
            if self.nvfp4:
                g = f"{base}.{GLOBAL}"
                if g not in ckpt.tensors or ckpt.info(g).dtype != "F32" or ckpt.info(g).shape not in ((1,), ()):
                    raise CheckpointError(f"{where}: {self.format} weight {base!r} needs an F32 [1] {g!r}")
                parts["tensor_scale"] = g
                if f"{base}.{INPUT_GLOBAL}" in ckpt.tensors:
                    parts[INPUT_GLOBAL] = f"{base}.{INPUT_GLOBAL}"
            out[base + ".weight"] = StoredWeight(base + ".weight", shape, scheme, parts)
        stray = next(
            (
                n
                for n in ckpt.tensors
                if n.endswith("." + spec.codes)
                and n[: -len(spec.codes)] + SCALE not in ckpt.tensors
                and (spec.codes != "weight" or ckpt.info(n).dtype == "F8_E4M3")
            ),
            None,
        )
        if stray:
            raise CheckpointError(
                f"{ckpt.tensors[stray][0]}: {stray!r} has no scale tensor {stray[: -len(spec.codes)] + SCALE!r}"
            )
        return out

    def read(self, ckpt, w):
        codes = read_codes(ckpt, w.parts["codes"], w.shape, w.scheme.element)
        if not self.nvfp4:
            stored, s = read_scales(ckpt, w.parts["scale"], w)
            return block_tensor(codes, stored, s, w)
        g = checked(ckpt, w.parts["tensor_scale"], ckpt.read(w.parts["tensor_scale"]).astype(np.float32).reshape(-1))
        stored = ckpt.read(w.parts["scale"])
        s = checked(ckpt, w.parts["scale"], nvfp4.ct_multiplier(stored.view(np.uint8), g[0]))
        return block_tensor(codes, stored, s, w, tensor_scale=float(g[0]))

    def activation_scheme(self, ckpt, w):
        return get_preset(self.spec.preset).activation

    def describe(self, ckpt, weights):
        out = super().describe(ckpt, weights)
        out.update(preset=self.spec.preset, scales_all_powers_of_two=not self.nvfp4 or None)
        if self.nvfp4:
            g = {n: ckpt.read(w.parts["tensor_scale"]).reshape(-1) for n, w in weights.items()}
            zero_d = [n for n, w in weights.items() if ckpt.info(w.parts["tensor_scale"]).shape == ()]
            if zero_d:
                out["warnings"].append(
                    f"{zero_d[0]} (and {len(zero_d) - 1} more): a 0-d weight_global_scale (as "
                    "compressed-tensors' ModelOpt converter writes) makes compressed-tensors "
                    "compute s / g in the model's dtype: one bf16 rounding more than fp8port's"
                )
            for names in fused_sets(weights):
                if len({float(g[n][0]) for n in names}) > 1:
                    out["warnings"].append(
                        f"{', '.join(names)}: global scales differ within a fused set; vLLM's "
                        "fused layer keeps one (llm-compressor writes them equal)"
                    )
        return out

    # -- writing
    def takes(self, scheme):
        want = self.scheme
        if scheme.element.name != want.element.name:
            return False
        if self.nvfp4:
            return scheme.storage is ScaleStorage.E4M3_TENSOR
        # MXFP8 only in 1x32 groups: other E8M0 FP8 blocks are float-quantized with F32 multipliers
        return scheme.storage is ScaleStorage.E8M0 and (want.element.bits == 4 or scheme.block == want.block)

    def fit(self, name, shape, scheme):
        want = self.scheme
        g = want.block.size[0]
        if scheme.block != want.block:
            raise cannot_hold("compressed-tensors", scheme, f"{self.format} has groups of 1x{g} along K")
        if len(shape) != 2 or shape[-1] % g:
            raise cannot_hold(
                "compressed-tensors",
                scheme,
                f"{self.format} needs 2-D weights with K a multiple of {g}; {name} is {list(shape)}",
            )
        # NVFP4: the tensor scale stored as compressed-tensors' divisor (its rule); MX: codes as they are
        return scheme.with_(scale_rule="ct_nvfp4") if self.nvfp4 else scheme

    def outputs(self, name, shape, scheme):
        base, (n, k) = base_name(name), shape
        out = [
            (f"{base}.{self.spec.codes}", self.spec.codes_dtype, (n, k * scheme.element.bits // 8)),
            (f"{base}.{SCALE}", self.spec.scale_dtype, scheme.block.grid(shape)),
        ]
        if self.nvfp4:
            out.append((f"{base}.{GLOBAL}", "F32", (1,)))
        return out

    def arrays(self, q, input_scale):
        codes = pack_codes(q).reshape(self.outputs("w", q.shape, q.scheme)[0][2])
        out = [codes, np.asarray(q.scale).view(np.uint8).reshape(q.scheme.block.grid(q.shape))]
        if self.nvfp4:
            out.append(np.asarray([q.tensor_scale], np.float32))
        if input_scale is not None:
            out.append(np.asarray([input_scale], np.float32))
        return out

    def group(self, schemes, modules, static_inputs):
        s, spec = self.scheme, self.spec
        weights = _args(s.element.bits, spec.strategy, s.block.size[0], spec.scale_name)
        w4a4 = static_inputs  # NVFP4 with static input scales: compressed-tensors' NVFP4 (W4A4) scheme
        acts = (
            _args(4, "tensor_group", 16, spec.scale_name, dynamic="local", observer="static_minmax") if w4a4 else None
        )
        name = spec.group_name[: -len("A16")] if w4a4 else spec.group_name
        return {
            name: {
                "format": self.format,
                "input_activations": acts,
                "output_activations": None,
                "targets": ["Linear"],
                "weights": weights,
            }
        }


NVFP4 = Microscale(
    _Micro(
        "nvfp4-pack-quantized",
        "ct-nvfp4",
        "weight_packed",
        "U8",
        "tensor_group",
        "F8_E4M3",
        "torch.float8_e4m3fn",
        "NVFP4A16",
    )
)
MXFP4 = Microscale(
    _Micro("mxfp4-pack-quantized", "ct-mxfp4", "weight_packed", "U8", "group", "U8", "torch.uint8", "MXFP4A16")
)
MXFP8 = Microscale(_Micro("mxfp8-quantized", "ct-mxfp8", "weight", "F8_E4M3", "group", "U8", "torch.uint8", "MXFP8A16"))

# The extension point: one CTFormat per compressed-tensors format, reading it and writing the schemes it
# holds (`fit`, asked in this order). A new format is an entry here, removed from PLANNED_FORMATS.
FORMATS: dict[str, CTFormat] = {f.format: f for f in (NVFP4, MXFP4, MXFP8, FloatQuantized())}


class CompressedTensors(LayoutHandler):
    name = LayoutName.COMPRESSED_TENSORS
    summary = (
        "X.weight F8_E4M3 + X.weight_scale (float multiplier); or NVFP4 / MXFP4 X.weight_packed, MXFP8 "
        "X.weight, with X.weight_scale (E4M3 / E8M0 as U8) and NVFP4's X.weight_global_scale divisor"
    )
    loaders = ("compressed-tensors (transformers CompressedTensorsConfig)", "vLLM", "SGLang", "llm-compressor")
    quant_methods = ("compressed-tensors",)
    presets = ("ct-nvfp4", "ct-mxfp4", "ct-mxfp8")

    def detect(self, ckpt):
        why = super().detect(ckpt)
        if why:
            self.format(ckpt)
        return why

    def format(self, ckpt) -> CTFormat:
        """The handler of the checkpoint's format; a typed error for a planned or unknown one."""
        names = formats(ckpt.quantization_config) or [FLOAT_QUANTIZED]
        for f in names:
            if f not in FORMATS:
                what = "is not read yet" if f in PLANNED_FORMATS else "is unknown"
                raise LayoutError(
                    f"{ckpt.root / 'config.json'}: compressed-tensors format {f!r} {what} (read: "
                    f"{', '.join(FORMATS)}; planned: {', '.join(PLANNED_FORMATS)})"
                )
        if len(names) > 1:
            raise LayoutError(
                f"{ckpt.root / 'config.json'}: compressed-tensors formats {names} mixed in one checkpoint are not read"
            )
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
        fmt = self.format(ckpt)
        out = fmt.describe(ckpt, weights)
        out["format"] = fmt.format
        out["loaders"], out["pitfalls"] = fmt.engines(), fmt.pitfalls()
        return out

    def writer(self, request, source):
        return CompressedTensorsWriter(
            self.name, request, source, get_preset(request.preset) if request.preset else None, divisor=True
        )


def _format(scheme: Scheme) -> CTFormat:
    fmt = next((f for f in FORMATS.values() if f.takes(scheme)), None)
    if fmt is None:
        raise cannot_hold(
            "compressed-tensors", scheme, f"its formats ({', '.join(FORMATS)}) hold FP8 E4M3, NVFP4 and MXFP4"
        )
    return fmt


@dataclass
class CompressedTensorsWriter(Nvfp4Writer):
    def hold(self, name, shape, scheme):
        return _format(scheme).fit(name, shape, scheme)

    def outputs(self, name, shape, scheme):
        fmt = _format(scheme)
        out = fmt.outputs(name, shape, scheme)
        if fmt is NVFP4 and self.input_scale(name) is not None:
            out.append((f"{base_name(name)}.{INPUT_GLOBAL}", "F32", (1,)))
        return out

    def arrays(self, name, q):
        return _format(q.scheme).arrays(q, self.inputs.get(name))

    def review(self, jobs):
        super().review(jobs)
        used = {_format(j.scheme).format for j in jobs if j.scheme is not None}
        if len(used) > 1:
            raise LayoutError(
                f"one compressed-tensors format per checkpoint, not {sorted(used)} (mixed-precision is "
                "not written): convert with one --preset, or --exclude what differs"
            )
        if self.inputs and len(self.inputs) != sum(j.scheme is not None for j in jobs):
            raise LayoutError(
                "some NVFP4 weights have static input scales and some do not: compressed-tensors' NVFP4 "
                "scheme holds them for every weight or none"
            )

    def config(self, config, jobs):
        schemes = self.schemes(jobs)
        if not schemes:
            return with_config(config, None)
        fmt = _format(schemes[0])
        modules = {s: [base_name(j.source) for j in jobs if j.scheme == s] for s in schemes}
        return with_config(
            config,
            {
                "config_groups": fmt.group(schemes, modules, bool(self.inputs)),
                "format": fmt.format,
                "global_compression_ratio": None,
                "ignore": ignored_modules(jobs),
                "kv_cache_scheme": None,
                "quant_method": "compressed-tensors",
                "quantization_status": "compressed",
                "transform_config": {},
                "version": VERSION,
            },
        )
