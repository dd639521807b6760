"""On-disk layouts of block-scaled weights: how each names, types and describes them.

DEEPSEEK            X.weight F8_E4M3 + X.weight_scale_inv (F32 multiplier, or F8_E8M0 bytes,
                    DeepSeek-V4 style); config quant_method "fp8" (transformers, vLLM, SGLang).
COMPRESSED_TENSORS  X.weight F8_E4M3 + X.weight_scale (the same multiplier, another name);
                    config quant_method "compressed-tensors", format "float-quantized".
FP8PORT             every other preset (MX, NVFP4, HiF8, E1M2): X.weight codes in the element's
                    safetensors dtype (packed F4/F6, else U8/I8), X.weight_scale in its storage
                    dtype, X.weight_tensor_scale (F32, NVFP4 only); config quant_method "fp8port"
                    naming the preset, and the scheme in full, so that a reader needs nothing else.
ASCEND              msModelSlim's AscendV1: quant_model_description.json gives each tensor's
                    type (int8 per channel, MXFP8/MXFP4 1x32, FLOAT); see checkpoint/ascend.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from ..codec.packing import pack, unpack
from ..errors import CheckpointError
from ..names import NamedEnum
from ..quant import QuantizedTensor, Role, Scheme, ScaleStorage, get_preset
from ..quant.tensor import Framework
from ..quant import storage as scale_store
from .folder import DESCRIPTION


class Layout(NamedEnum):
    __label__ = "layout"
    DENSE = "dense"
    DEEPSEEK = "deepseek"
    COMPRESSED_TENSORS = "compressed-tensors"
    FP8PORT = "fp8port"
    ASCEND = "ascend"


class ScaleDtype(NamedEnum):
    """How the DeepSeek layout stores its power-of-two scales."""

    __label__ = "scale dtype"
    __aliases__ = {"f32": ("float32", "fp32"), "e8m0": ("float8_e8m0fnu", "ue8m0")}
    F32 = "f32"  # V3 / V3.1 checkpoints
    E8M0 = "e8m0"  # one byte, DeepSeek-V4 style (power-of-two presets only)


_CODE_DTYPE = {"float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "float4_e2m1fn": "F4",
               "float6_e2m3fn": "F6_E2M3", "float6_e3m2fn": "F6_E3M2", "int8": "I8"}
_SCALE_DTYPE = {ScaleStorage.FLOAT32: "F32", ScaleStorage.BFLOAT16: "BF16", ScaleStorage.E8M0: "F8_E8M0",
                ScaleStorage.E4M3_TENSOR: "F8_E4M3"}
SCALE_NAME = {Layout.DEEPSEEK: "weight_scale_inv", Layout.COMPRESSED_TENSORS: "weight_scale",
              Layout.FP8PORT: "weight_scale"}
TENSOR_SCALE = "weight_tensor_scale"


def grid(shape, scheme: Scheme) -> tuple[int, ...]:
    ext = scheme.block.extents(shape)
    return tuple(math.ceil(d / e) if d else 0 for d, e in zip(shape, ext))


@dataclass(frozen=True)
class Target:
    """What a conversion writes for quantized weights."""

    layout: Layout
    preset: str
    scheme: Scheme  # the weight scheme (scale storage already adjusted)

    @classmethod
    def choose(cls, preset_name: str, layout=None, scale_dtype=None) -> "Target":
        preset = get_preset(preset_name)
        scheme = preset.weight
        fp8 = preset.name in ("deepseek-v3", "deepseek-v3.1")
        lay = Layout.parse(layout) if layout else (Layout.DEEPSEEK if fp8 else Layout.FP8PORT)
        if lay in (Layout.DEEPSEEK, Layout.COMPRESSED_TENSORS) and not fp8:
            raise CheckpointError(f"layout {lay.value} holds FP8 128x128 presets (deepseek-v3, deepseek-v3.1); "
                                  f"{preset.name} is written in the fp8port layout")
        if lay is Layout.DENSE:
            raise CheckpointError("layout 'dense' is what `fp8port dequant` writes; convert needs a quantized layout")
        if scale_dtype is not None and ScaleDtype.parse(scale_dtype) is ScaleDtype.E8M0:
            if lay is not Layout.DEEPSEEK or not scheme.scale_rule.power_of_two:
                raise CheckpointError("--scale-dtype e8m0 needs the deepseek layout and a power-of-two preset "
                                      "(deepseek-v3.1)")
            scheme = scheme.with_(storage="e8m0")
        return cls(lay, preset.name, scheme)

    def entries(self, name: str, shape: tuple[int, ...]) -> list[tuple[str, str, tuple[int, ...]]]:
        """(tensor name, safetensors dtype, shape) of everything written for weight `name`."""
        base = name[: -len(".weight")]
        el, st = self.scheme.element, self.scheme.storage
        logical = tuple(shape)
        code_dtype = _CODE_DTYPE.get(el.name, "U8")
        if el.bits < 8 and code_dtype == "U8":  # no safetensors dtype (E1M2): packed bytes
            shape = tuple(shape[:-1]) + (shape[-1] * el.bits // 8,)
        out = [(name, code_dtype, tuple(shape)),
               (f"{base}.{SCALE_NAME[self.layout]}", _SCALE_DTYPE[st], grid(logical, self.scheme))]
        if st is ScaleStorage.E4M3_TENSOR:
            out.append((f"{base}.{TENSOR_SCALE}", "F32", ()))
        return out

    def arrays(self, q: QuantizedTensor) -> list[np.ndarray]:
        """The arrays of `entries`, in order, from a NumPy QuantizedTensor."""
        el = self.scheme.element
        codes = np.asarray(q.codes)
        if el.bits < 8:
            codes = pack(codes.reshape(-1), el)  # safetensors F4/F6: packed over the flat tensor
        out = [codes, np.asarray(q.scale)]
        if self.scheme.storage is ScaleStorage.E4M3_TENSOR:
            out.append(np.asarray([q.tensor_scale], np.float32).reshape(()))
        return out

    def quantization_config(self, ignored: list[str]) -> dict:
        if self.layout is Layout.DEEPSEEK:
            qc = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                  "weight_block_size": list(self.scheme.block.size)}
            if self.preset == "deepseek-v3.1":
                qc["scale_fmt"] = "ue8m0"
            return qc
        if self.layout is Layout.COMPRESSED_TENSORS:
            return {
                "quant_method": "compressed-tensors", "format": "float-quantized",
                "quantization_status": "compressed", "ignore": ignored, "kv_cache_scheme": None,
                "global_compression_ratio": None, "moe_sparsity_config": None,
                "config_groups": {"group_0": {
                    "targets": ["Linear"],
                    "weights": {"num_bits": 8, "type": "float", "symmetric": True, "group_size": None,
                                "strategy": "block", "block_structure": list(self.scheme.block.size),
                                "dynamic": False},
                    "input_activations": {"num_bits": 8, "type": "float", "symmetric": True,
                                          "group_size": 128, "strategy": "group", "dynamic": True},
                    "output_activations": None, "format": None}},
            }
        return {"quant_method": "fp8port", "format_version": 1, "preset": self.preset,
                "weight_scheme": self.scheme.describe(), "ignored": ignored,
                "packing": {"float4": "two codes per byte, element 0 in the low nibble",
                            "float6": "bitstream: 4 codes in 3 bytes, little-endian 24-bit words"}}


# ---- reading ---------------------------------------------------------------------------


def detect(ckpt) -> Layout:
    if (ckpt.root / DESCRIPTION).is_file():  # what vLLM-Ascend and SGLang detect by (ascend-layout.md §3)
        return Layout.ASCEND
    qc = ckpt.quantization_config
    method = qc.get("quant_method")
    if method == "fp8port":
        return Layout.FP8PORT
    if method == "compressed-tensors":
        return Layout.COMPRESSED_TENSORS
    names = set(ckpt.tensors)
    if any(n.endswith(".weight_scale_inv") for n in names):
        return Layout.DEEPSEEK
    if method == "fp8" or any(n.endswith(".weight_scale") for n in names):
        return Layout.COMPRESSED_TENSORS if not method else Layout.DEEPSEEK
    return Layout.DENSE


def _block_size(ckpt, layout: Layout) -> tuple[int, int]:
    qc = ckpt.quantization_config
    if layout is Layout.COMPRESSED_TENSORS:
        for g in (qc.get("config_groups") or {}).values():
            bs = ((g or {}).get("weights") or {}).get("block_structure")
            if bs:
                return tuple(bs)
        raise CheckpointError(f"{ckpt.root / 'config.json'}: compressed-tensors config has no block_structure "
                              "(only the FP8 block format is read)")
    bs = qc.get("weight_block_size", [128, 128])
    if not (isinstance(bs, list) and len(bs) == 2 and all(isinstance(b, int) and b > 0 for b in bs)):
        raise CheckpointError(f"{ckpt.root / 'config.json'}: weight_block_size {bs!r} is not two positive integers")
    return tuple(bs)


def reader_scheme(ckpt, layout: Layout) -> Scheme:
    """The scheme that describes the checkpoint's weights (enough to dequantize them)."""
    if layout is Layout.FP8PORT:
        qc = ckpt.quantization_config
        try:
            scheme = get_preset(qc["preset"]).weight
        except KeyError:
            raise CheckpointError(f"{ckpt.root / 'config.json'}: fp8port quantization_config has no preset") from None
        stored = qc.get("weight_scheme", {})
        if stored and stored.get("storage") != scheme.storage.value:
            scheme = scheme.with_(storage=stored["storage"])
        return scheme
    bm, bn = _block_size(ckpt, layout)
    return Scheme.build("float8_e4m3fn", "v3_float", f"{bm}x{bn}", storage="float32",
                        name=f"{layout.value}/weight")


def quantized_weights(ckpt, layout: Layout | None = None) -> dict[str, str]:
    """weight name -> its scale tensor name, for every quantized weight."""
    layout = layout or detect(ckpt)
    if layout is Layout.DENSE:
        return {}
    if layout is Layout.ASCEND:
        from . import ascend

        return {w: ascend.scale_of(w, t) for w, t in ascend.weights(ckpt).items()}
    suffix = "." + SCALE_NAME[layout]
    out = {}
    for n in ckpt.tensors:
        if n.endswith(suffix):
            w = n[: -len(suffix)] + ".weight"
            if w not in ckpt.tensors:
                raise CheckpointError(f"{ckpt.tensors[n][0]}: scale {n!r} has no weight {w!r}")
            out[w] = n
    for n, (f, info) in ckpt.tensors.items():
        if n not in out and n.endswith(".weight") and info.dtype in ("F8_E4M3", "F8_E5M2", "F4", "F6_E2M3", "F6_E3M2"):
            raise CheckpointError(f"{f}: quantized weight {n!r} ({info.dtype}) has no scale tensor "
                                  f"{n[: -len('.weight')] + suffix!r}")
    return out


def logical_shape(info, scheme: Scheme) -> tuple[int, ...]:
    """A weight's element shape (packed U8 codes hold 8/bits elements per byte on the last axis)."""
    if scheme.element.bits < 8 and info.dtype == "U8":
        return tuple(info.shape[:-1]) + (info.shape[-1] * 8 // scheme.element.bits,)
    return tuple(info.shape)


def check_grids(ckpt, pairs: dict[str, str], scheme: Scheme) -> None:
    """Every scale grid fits its weight (from the headers alone, before any data is read)."""
    for name, scale_name in pairs.items():
        info, sinfo = ckpt.info(name), ckpt.info(scale_name)
        want = grid(logical_shape(info, scheme), scheme)
        if sinfo.shape != want:
            raise CheckpointError(f"{ckpt.tensors[scale_name][0]}: scale {scale_name!r} has grid {list(sinfo.shape)}, "
                                  f"but weight {name!r} {list(logical_shape(info, scheme))} in {scheme.block} "
                                  f"blocks needs {list(want)}")


def read_quantized(ckpt, name: str, scale_name: str, layout: Layout, scheme: Scheme) -> QuantizedTensor:
    """A weight and its scales as a NumPy QuantizedTensor, the scale grid checked."""
    f, info = ckpt.tensors[name]
    sf, sinfo = ckpt.tensors[scale_name]
    shape = logical_shape(info, scheme)
    el = scheme.element
    if sinfo.dtype == "F8_E8M0" and scheme.storage is not ScaleStorage.E8M0:
        scheme = scheme.with_(storage="e8m0", scale_rule="ue8m0")
    want = grid(shape, scheme)
    if sinfo.shape != want:
        raise CheckpointError(f"{sf}: scale {scale_name!r} has grid {list(sinfo.shape)}, but weight {name!r} "
                              f"{list(shape)} in {scheme.block} blocks needs {list(want)}")
    raw = ckpt.read(name)
    if el.bits < 8:
        codes = unpack(raw.reshape(-1), el)[: math.prod(shape)].reshape(shape)
    else:
        codes = np.ascontiguousarray(raw).view(np.uint8).reshape(shape)
    allowed = {ScaleStorage.FLOAT32: ("F32", "BF16", "F16", "F8_E8M0"), ScaleStorage.BFLOAT16: ("BF16",),
               ScaleStorage.E8M0: ("F8_E8M0",), ScaleStorage.E4M3_TENSOR: ("F8_E4M3",)}[scheme.storage]
    if sinfo.dtype not in allowed:
        raise CheckpointError(f"{sf}: scale {scale_name!r} is {sinfo.dtype}; {scheme.name} scales are "
                              f"{' or '.join(allowed)}")
    stored = ckpt.read(scale_name)
    tensor_scale = None
    if scheme.storage is ScaleStorage.E4M3_TENSOR:
        tensor_scale = np.float32(ckpt.read(name[: -len(".weight")] + "." + TENSOR_SCALE).reshape(()))
        s = (tensor_scale * np.asarray(stored).astype(np.float32)).astype(np.float32)
    elif sinfo.dtype in ("F32", "BF16", "F16"):
        s = np.asarray(stored).astype(np.float32)
    else:
        s = scale_store.load(stored, ScaleStorage.E8M0)
    if not (np.isfinite(s).all() and (s > 0).all()):
        bad = np.argwhere(~(np.isfinite(s) & (s > 0)))[0]
        raise CheckpointError(f"{sf}: scale {scale_name!r} has {s[tuple(bad)]!r} at block {tuple(int(b) for b in bad)}; "
                              "stored scales must be finite and positive")
    return QuantizedTensor(codes=codes, scale=stored, scale_fp32=s, shape=tuple(shape), scheme=scheme,
                           role=Role.WEIGHT, src_dtype="float32", framework=Framework.NUMPY,
                           tensor_scale=None if tensor_scale is None else float(tensor_scale))


def all_powers_of_two(s: np.ndarray) -> bool:
    s = np.asarray(s, np.float32)
    m, _ = np.frexp(s.astype(np.float64))
    return bool(np.all((m == 0.5) & np.isfinite(s)))


def describe_config(qc: dict) -> str:
    return json.dumps(qc, sort_keys=True) if qc else "none"
