"""quantize / dequantize: inputs in, QuantizedTensor out; names parsed once here."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..arrays import OUT_DTYPES, dtype_name, is_torch, to_numpy, to_torch, torch_module
from ..backends import Backend
from ..codec import fast as codec_fast
from ..codec import reference as codec_reference
from ..codec.policy import Rounding
from ..errors import Fp8portError, UnsupportedInputError
from ..formats import Kind
from ..names import NamedEnum
from . import devices, fast, integer, reference
from . import storage as st
from .presets import Preset, Role, get_preset
from .scheme import ScaleStorage, Scheme
from .tensor import Framework, QuantizedTensor


class BackendError(Fp8portError, ValueError):
    """backend='fast' asked for a scheme or input the fused kernels do not cover."""


class NonFinite(NamedEnum):
    __label__ = "non-finite policy"
    ERROR = "error"  # raise NonFiniteError naming the first NaN/Inf
    PROPAGATE = "propagate"  # quantize anyway; NaN/Inf follow the scale rule (T14)


_NP_IN = {
    np.dtype(np.float64): "float64",
    np.dtype(np.float32): "float32",
    np.dtype(np.float16): "float16",
    np.dtype(ml_dtypes.bfloat16): "bfloat16",
}


def _ingest(x):
    """(framework, source dtype name, bf16 bits (uint16) or float32 array)."""
    if isinstance(x, np.generic):
        x = np.asarray(x)
    if isinstance(x, np.ndarray):
        name = _NP_IN.get(x.dtype)
        if name is None:
            raise UnsupportedInputError(
                f"cannot quantize a NumPy array of dtype {x.dtype}; valid: {', '.join(_NP_IN.values())}"
            )
        if name == "bfloat16":
            return Framework.NUMPY, name, np.ascontiguousarray(x).view(np.uint16)
        return Framework.NUMPY, name, np.asarray(x, dtype=np.float32)
    if type(x).__module__.startswith("torch"):
        torch = torch_module()
        valid = {
            torch.float64: "float64",
            torch.float32: "float32",
            torch.float16: "float16",
            torch.bfloat16: "bfloat16",
        }
        if not isinstance(x, torch.Tensor) or x.dtype not in valid:
            raise UnsupportedInputError(
                f"cannot quantize a torch tensor of dtype {getattr(x, 'dtype', type(x))}; valid: "
                + ", ".join(valid.values())
            )
        if x.device.type != "cpu":
            raise UnsupportedInputError(f"tensor on {x.device}: the NumPy/Numba paths need CPU tensors")
        x = x.detach().contiguous()
        if x.dtype == torch.bfloat16:
            return Framework.TORCH, "bfloat16", x.view(torch.int16).numpy().view(np.uint16)
        return Framework.TORCH, valid[x.dtype], x.numpy().astype(np.float32, copy=False)
    raise UnsupportedInputError(
        f"cannot quantize {type(x).__name__}; pass a NumPy array or a torch tensor "
        "of float64, float32, float16 or bfloat16"
    )


def _as_f32(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint16:
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def resolve_scheme(preset_or_scheme, role) -> tuple[Scheme, Role]:
    role = Role.parse(role)
    if isinstance(preset_or_scheme, Scheme):
        return preset_or_scheme, role
    preset = preset_or_scheme if isinstance(preset_or_scheme, Preset) else get_preset(preset_or_scheme)
    return preset.scheme(role), role


def _writable(a, what: str, shape, dtypes) -> np.ndarray:
    """NumPy view of a caller's output array, checked: shape, dtype, C-contiguous, writable."""
    arr = to_numpy(a) if is_torch(a) else a
    if not isinstance(arr, np.ndarray):
        raise UnsupportedInputError(f"{what} must be a NumPy array or a CPU torch tensor, not {type(a).__name__}")
    if tuple(arr.shape) != tuple(shape) or arr.dtype not in dtypes:
        raise UnsupportedInputError(
            f"{what} has shape {tuple(arr.shape)} and dtype {arr.dtype}; "
            f"need shape {tuple(shape)} and dtype {' or '.join(map(str, dtypes))}"
        )
    if not (arr.flags.c_contiguous and arr.flags.writeable):
        raise UnsupportedInputError(f"{what} must be C-contiguous and writable")
    return arr


def _check_out(out, arr, scheme, framework) -> QuantizedTensor:
    if not isinstance(out, QuantizedTensor):
        raise UnsupportedInputError(f"out= takes a QuantizedTensor, not {type(out).__name__}")
    if out.scheme != scheme or out.framework is not framework or tuple(out.shape) != tuple(arr.shape):
        raise UnsupportedInputError(
            f"out= holds {out.framework.value} {out.shape} under {out.scheme.name!r}; this call makes "
            f"{framework.value} {tuple(arr.shape)} under {scheme.name!r}"
        )
    if out.tensor_scale is not None:
        raise UnsupportedInputError("out= cannot hold an NVFP4 tensor (its per-tensor scale is a number)")
    return out


def quantize(
    x, preset_or_scheme, *, role="weight", nonfinite="error", backend="auto", out: QuantizedTensor | None = None
) -> QuantizedTensor:
    """Block-scale `x` with a preset name (e.g. 'deepseek-v3.1', 'mxfp8') or a Scheme.

    role: 'weight' or 'activation' (DeepSeek presets: 128x128 vs 1x128 blocks).
    nonfinite: 'error' (default; NonFiniteError names the first NaN/Inf) or 'propagate'.
    backend: 'auto' (fused kernels where they cover the scheme), 'reference', 'fast'.
    out: a QuantizedTensor from an earlier call of the same shape and scheme whose arrays are
        overwritten (no allocation: for loops over same-shaped tensors); it is returned.
    float64 and float16 inputs are rounded to float32 first (all scale arithmetic is float32).
    """
    scheme, role = resolve_scheme(preset_or_scheme, role)
    policy = NonFinite.parse(nonfinite)
    be = Backend.parse(backend)
    dev = devices.for_tensor(x)  # tensors on a GPU go to its registered kernels (Triton)
    if dev is not None and be is not Backend.REFERENCE and dev.unsupported_reason(scheme) is None:
        return dev.quantize(x, scheme, role=role, nonfinite=policy.value)
    framework, src, arr = _ingest(x)
    scheme.block.extents(arr.shape)  # a block that cannot be applied fails here, on both paths
    why = fast.unsupported_reason(scheme) if arr.size else "empty input"
    if be is Backend.FAST and why:
        raise BackendError(f"backend='fast' cannot run scheme {scheme.name!r}: {why}; use backend='auto'")
    tensor_scale = None
    codes_out = grids_out = None
    if out is not None:
        out = _check_out(out, arr, scheme, framework)
        codes_out = _writable(out.codes, "out.codes", arr.shape, (np.dtype(np.uint8),))
        grids_out = (to_numpy(out.scale_fp32), to_numpy(out.scale))
    done = fast.quantize(arr, scheme, codes_out, grids_out) if be is not Backend.REFERENCE and why is None else None
    if done is not None:
        codes, s, stored, tensor_scale, bad = done
        if bad and policy is NonFinite.ERROR:
            reference.check_finite(_as_f32(arr))
        if stored is None:
            stored = st.store(s, scheme.storage)
        elif scheme.storage is ScaleStorage.E4M3_TENSOR:
            stored = stored.view(ml_dtypes.float8_e4m3fn)
        else:
            stored = stored.view(ml_dtypes.float8_e8m0fnu)
    elif be is not Backend.REFERENCE and integer.covers(scheme, arr.shape) and np.isfinite(x32 := _as_f32(arr)).all():
        codes, stored, s = integer.quantize(x32, scheme)
    else:  # the reference's scale and apply steps; with `auto`, the codec's fused element encoder
        codes, stored, s, tensor_scale = reference.quantize(
            _as_f32(arr), scheme, check=policy is NonFinite.ERROR, encoder=None if be is Backend.REFERENCE else _encode
        )
    if out is not None:
        if codes.ctypes.data != codes_out.ctypes.data:  # the reference path wrote elsewhere
            np.copyto(codes_out, codes)
        for into, grid in ((to_numpy(out.scale), stored), (to_numpy(out.scale_fp32), s)):
            if into.ctypes.data != grid.ctypes.data:  # the kernels wrote the scales elsewhere
                np.copyto(into, grid)
        return QuantizedTensor(
            codes=out.codes,
            scale=out.scale,
            scale_fp32=out.scale_fp32,
            shape=out.shape,
            scheme=scheme,
            role=role,
            src_dtype=src,
            framework=framework,
        )
    if framework is Framework.TORCH:
        codes, stored, s = to_torch(codes), to_torch(stored), to_torch(s)
    return QuantizedTensor(
        codes=codes,
        scale=stored,
        scale_fp32=s,
        shape=tuple(arr.shape),
        scheme=scheme,
        role=role,
        src_dtype=src,
        framework=framework,
        tensor_scale=None if tensor_scale is None else float(tensor_scale),
    )


def _encode(y: np.ndarray, spec, rules) -> np.ndarray:
    """Element codes of float32 `y` by the codec's fused kernel (bit for bit its reference, which stochastic
    rounding keeps); it forms INT codes in 8 bits, so a narrower INT keeps its low bits (two's complement)."""
    if rules.rounding is Rounding.STOCHASTIC:
        return codec_reference.encode(y.astype(np.float64), spec, rules)
    codes, bad = codec_fast.encode(y, spec, rules)
    if bad is not None and bad.any():
        codec_reference.raise_first(y, bad.astype(bool), spec, "value")
    return codes & np.uint8((1 << spec.bits) - 1) if spec.kind is Kind.INT and spec.bits < 8 else codes


def dequantize(q: QuantizedTensor, dtype=None, *, backend="auto", out=None):
    """Values code * scale_fp32 (float32 product), cast to `dtype` (default: the input's dtype).

    out: an array (or CPU tensor) of q's shape and that dtype to write into, returned."""
    if not isinstance(q, QuantizedTensor):
        raise UnsupportedInputError(f"dequantize takes a QuantizedTensor, not {type(q).__name__}")
    name = dtype_name(dtype if dtype is not None else q.src_dtype)
    be = Backend.parse(backend)
    dev = devices.for_tensor(q.codes)
    if dev is not None and be is not Backend.REFERENCE:
        return dev.dequantize(q, dtype)
    codes, s = to_numpy(q.codes), to_numpy(q.scale_fp32)
    use_fast = be is not Backend.REFERENCE and codes.size > 0
    if be is Backend.FAST and not use_fast:
        raise BackendError("backend='fast' dequantizes non-empty tensors only")
    dst = None if out is None else _writable(out, "out", q.shape, (np.dtype(OUT_DTYPES[name]),))
    direct = dst is not None and name in ("bfloat16", "float32")  # the kernels write these
    if use_fast:
        res = fast.dequantize(
            codes,
            s,
            q.scheme,
            to_bf16=name == "bfloat16",
            out=dst.view(np.uint16 if name == "bfloat16" else np.uint32) if direct else None,
        )
        res = res.view(ml_dtypes.bfloat16) if name == "bfloat16" else res.astype(OUT_DTYPES[name], copy=False)
    else:
        res = reference.dequantize(codes, s, q.scheme).astype(OUT_DTYPES[name])
    if dst is not None:
        if not (use_fast and direct):
            np.copyto(dst, res)
        return out
    if q.framework is Framework.TORCH:
        return to_torch(res)
    return res
