"""What a checkpoint is: layout, detected preset, scale storage, sizes, and consumer warnings."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from .folder import Checkpoint
from .layouts import Layout, all_powers_of_two, detect, quantized_weights, reader_scheme


def _transformers_warning(name, shape, block) -> str | None:
    """transformers 5.8-5.24 dequantizes on CPU with block = rows // scale_rows (interop-probe §2)."""
    (n, k), (bm, bn) = shape, block
    if n % bm == 0 and k % bn == 0:
        return None
    gn, gk = math.ceil(n / bm), math.ceil(k / bn)
    if n % gn == 0 and k % gk == 0:
        return (f"{name} {list(shape)}: transformers 5.8-5.24 would read it with {n // gn}x{k // gk} blocks "
                f"instead of {bm}x{bn} and load WRONG weights silently (dequantize on CPU)")
    return (f"{name} {list(shape)}: transformers 5.8-5.24 fails to load it on CPU ('not divisible by scale grid "
            f"({gn}, {gk})'); fp8port dequant, vLLM and compressed-tensors read it correctly")


def _detect_preset(ckpt: Checkpoint, layout: Layout, pow2: bool, scale_dtypes: set) -> str | None:
    qc = ckpt.quantization_config
    if layout is Layout.FP8PORT:
        return qc.get("preset")
    if layout in (Layout.DEEPSEEK, Layout.COMPRESSED_TENSORS):
        return "deepseek-v3.1" if (pow2 or "F8_E8M0" in scale_dtypes) else "deepseek-v3"
    return None


def inspect(path, check_scales: bool = True) -> dict:
    """A JSON-able description. check_scales reads every scale tensor (small) to test powers of two."""
    ckpt = Checkpoint.open(path)
    layout = detect(ckpt)
    pairs = quantized_weights(ckpt, layout)
    scales = set(pairs.values())
    dtypes = Counter(info.dtype for _, info in ckpt.tensors.values())
    size = {d: 0 for d in dtypes}
    for _, info in ckpt.tensors.values():
        size[info.dtype] += info.nbytes
    out = {
        "path": str(ckpt.root),
        "files": [f.name for f in ckpt.files],
        "tensors": len(ckpt.tensors),
        "parameters": int(sum(math.prod(i.shape) for n, (_, i) in ckpt.tensors.items() if n not in scales)),
        "bytes": int(sum(size.values())),
        "dtypes": {d: {"tensors": c, "bytes": size[d]} for d, c in sorted(dtypes.items())},
        "layout": layout.value,
        "quantization_config": ckpt.quantization_config or None,
        "warnings": [],
    }
    if layout is Layout.ASCEND:
        from .ascend import inspect_info

        out.update(inspect_info(ckpt))
        return out
    if layout is Layout.DENSE:
        out.update(preset=None, quantized=0)
        return out
    scheme = reader_scheme(ckpt, layout)
    scale_dtypes = {ckpt.info(s).dtype for s in scales}
    pow2 = None
    if check_scales and scales:
        pow2 = all(all_powers_of_two(ckpt.read(s).astype(np.float32)) for s in scales
                   if ckpt.info(s).dtype in ("F32", "BF16", "F16")) if scale_dtypes - {"F8_E8M0"} else True
    dense = [n for n in ckpt.tensors if n not in pairs and n not in scales]
    out.update(
        preset=_detect_preset(ckpt, layout, bool(pow2), scale_dtypes),
        quantized=len(pairs),
        element=scheme.element.name,
        block=str(scheme.block),
        scale_storage=sorted(scale_dtypes),
        scales_all_powers_of_two=pow2,
        dense_tensors=len(dense),
        dense_examples=dense[:8],
    )
    if layout is Layout.DEEPSEEK:
        by_shape: dict = {}
        for w in pairs:
            by_shape.setdefault(ckpt.info(w).shape, []).append(w)
        for shape, names in by_shape.items():
            msg = _transformers_warning(names[0], shape, scheme.block.size)
            if msg:
                more = f" (and {len(names) - 1} more of this shape)" if len(names) > 1 else ""
                out["warnings"].append(msg + more)
        if ckpt.quantization_config.get("scale_fmt") == "ue8m0" and pow2 is False:
            out["warnings"].append("config says scale_fmt ue8m0 but some scales are not powers of two")
    if layout is Layout.COMPRESSED_TENSORS:
        for w in pairs:
            if ckpt.info(w).shape[1] % scheme.block.size[1]:
                out["warnings"].append(f"{w} {list(ckpt.info(w).shape)}: compressed-tensors' dynamic group-128 "
                                       "activation quantizer needs K % 128 == 0; load with dequantize=True")
    return out
