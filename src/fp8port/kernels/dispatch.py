"""What the API calls for torch tensors on a CUDA device: schemes -> Triton kernel arguments.

`quantize`, `dequantize` and `scaled_matmul` take and return the same objects as
fp8port.quantize / dequantize / nn.scaled_matmul, with every tensor left on the input's device.
`unsupported_reason` / `gemm_unsupported_reason` say why a scheme has no kernel (None: it has),
so a caller can fall back to the CPU paths. Under TRITON_INTERPRET=1 the same functions also
run on CPU tensors (how the tests exercise them).
"""

from __future__ import annotations

import numpy as np

from ..arrays import dtype_name
from ..codec.policy import Overflow, Rounding
from ..errors import NonFiniteError, ShapeError, UnsupportedInputError
from ..quant.presets import Role
from ..quant.rules import ScaleRule
from ..quant.scheme import BlockKind, ScaleStorage, ZeroBlock
from ..quant.steps import BitsRule
from ..quant.tensor import Framework, QuantizedTensor, check_operands
from . import _TritonBackend, interpreting, load

_VEC_SIZES = (16, 32, 64, 128, 256)
_TILE_SIZES = (16, 32, 64, 128)
_MIN_CLAMP = 2.0**-100  # UE8M0 kernels derive the scale from a normal amax (see scale_exponent)


def on_device(x) -> bool:
    """True for a torch tensor on a CUDA (or ROCm, which torch also calls 'cuda') device."""
    return _TritonBackend().on_device(x)


def _runs_here(t) -> bool:
    return t.device.type == "cuda" or interpreting()


def unsupported_reason(scheme) -> str | None:
    """Why the Triton quantize kernels cannot run `scheme` (None: they can)."""
    if scheme.element.name != "float8_e4m3fn" or scheme.rules.rounding is not Rounding.RNE:
        return f"element {scheme.element.name} / rounding {scheme.rules.rounding.value}: kernels cover E4M3 RNE"
    if BitsRule.of(scheme.scale_rule) is None:
        return f"scale rule {scheme.scale_rule.value}: kernels cover " + ", ".join(r.name.lower() for r in BitsRule)
    if scheme.storage not in (ScaleStorage.FLOAT32, ScaleStorage.E8M0):
        return f"scale storage {scheme.storage.value}: kernels write float32 or e8m0"
    if scheme.zero_block is not ZeroBlock.RULE:
        return "zero-block override: kernels follow the rule"
    if scheme.rules.overflow not in (Overflow.SATURATE, Overflow.NONFINITE):
        return f"overflow {scheme.rules.overflow.value}: kernels saturate or give NaN"
    if scheme.scale_rule is ScaleRule.UE8M0 and (scheme.amax_clamp is None or scheme.amax_clamp < _MIN_CLAMP):
        return "ue8m0 kernels need an amax clamp >= 2^-100 (DeepSeek: 1e-4)"
    blk = scheme.block
    if blk.kind is BlockKind.VECTOR:
        if blk.axis != -1 or blk.size[0] not in _VEC_SIZES:
            return f"block {blk}: kernels cover 1xB along the last axis, B in {_VEC_SIZES}"
    elif blk.kind is BlockKind.TILE:
        if blk.size[0] not in _TILE_SIZES or blk.size[1] not in _TILE_SIZES:
            return f"block {blk}: kernel tiles are {_TILE_SIZES} on each side"
    else:
        return f"block {blk}: kernels cover 1xB vectors and tiles"
    return None


def _kernel_args(scheme) -> dict:
    rule = int(BitsRule.of(scheme.scale_rule))
    clamp = scheme.amax_clamp or 0.0
    lo, hi = scheme.exp_range
    return dict(
        rule=rule,
        emax=scheme.element.emax,
        cap=0x7E if scheme.rules.overflow is Overflow.SATURATE else 0x7F,
        clamp_bits=int(np.float32(clamp).view(np.uint32)),
        lo=int(lo),
        hi=int(hi),
        write_bytes=scheme.storage is ScaleStorage.E8M0,
    )


def _check_finite(x, s, scheme) -> None:
    """Raise NonFiniteError like the reference. The scale grid tells cheaply whether any block
    held a NaN / Inf: FLOOR gives it a NaN scale; UE8M0 clamps it to 2^hi, which a finite
    float32 block cannot reach when hi > 120."""
    import torch

    if scheme.scale_rule is ScaleRule.FLOOR:
        suspect = bool(torch.isnan(s).any())
    elif scheme.exp_range[1] > 120:
        suspect = bool((s == 2.0 ** scheme.exp_range[1]).any())
    else:
        suspect = True
    if suspect:
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            i = tuple(int(v) for v in bad.nonzero()[0])
            raise NonFiniteError(
                f"non-finite input at index {i}: {x[i].item()!r}; pass nonfinite='propagate' to quantize it "
                "anyway (NaN/Inf then follow the scale rule), or clean the tensor first"
            )


def _src_name(x) -> str:
    import torch

    names = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16", torch.float64: "float64"}
    if x.dtype not in names:
        raise UnsupportedInputError(
            f"cannot quantize a torch tensor of dtype {x.dtype}; valid: " + ", ".join(names.values())
        )
    return names[x.dtype]


def quantize(x, preset_or_scheme, *, role="weight", nonfinite="error") -> QuantizedTensor:
    """fp8port.quantize for a torch tensor on the kernels' device; codes and scales stay there."""
    import torch

    from ..quant.api import resolve_scheme

    scheme, role = resolve_scheme(preset_or_scheme, role)
    why = unsupported_reason(scheme)
    if why:
        raise UnsupportedInputError(f"no Triton kernel for scheme {scheme.name!r}: {why}")
    if not isinstance(x, torch.Tensor) or not _runs_here(x):
        raise UnsupportedInputError("the Triton kernels take torch tensors on a CUDA device")
    src = _src_name(x)
    policy = str(getattr(nonfinite, "value", nonfinite)).lower()
    if policy not in ("error", "propagate"):
        raise UnsupportedInputError(f"nonfinite must be 'error' or 'propagate', not {nonfinite!r}")
    shape = tuple(x.shape)
    scheme.block.extents(shape)  # rank errors as on the CPU paths
    if x.numel() == 0:
        from ..quant.api import quantize as cpu_quantize

        q = cpu_quantize(x.detach().cpu(), scheme, role=role, nonfinite=nonfinite, backend="reference")
        return QuantizedTensor(
            codes=q.codes.to(x.device),
            scale=q.scale.to(x.device),
            scale_fp32=q.scale_fp32.to(x.device),
            shape=shape,
            scheme=scheme,
            role=role,
            src_dtype=src,
            framework=Framework.TORCH,
        )
    tq = load("triton_quant")
    kw = _kernel_args(scheme)
    x = x.detach()
    if scheme.block.kind is BlockKind.VECTOR:
        k = shape[-1] if shape else 1
        codes, s, b = tq.quantize_vec(x.reshape(-1, k), scheme.block.size[0], **kw)
        grid = shape[:-1] + (s.shape[1],)
    else:
        br, bc = scheme.block.size
        codes, s, b = tq.quantize_tile(x.reshape(-1, shape[-2], shape[-1]), br, bc, **kw)
        grid = shape[:-2] + tuple(s.shape[1:])
    codes, s = codes.reshape(shape), s.reshape(grid)
    if policy == "error":
        _check_finite(x, s, scheme)
    stored = b.reshape(grid).view(torch.float8_e8m0fnu) if b is not None else s
    return QuantizedTensor(
        codes=codes,
        scale=stored,
        scale_fp32=s,
        shape=shape,
        scheme=scheme,
        role=Role.parse(role),
        src_dtype=src,
        framework=Framework.TORCH,
    )


def _out_dtype(dtype, q):
    import torch

    name = dtype_name(dtype if dtype is not None else q.src_dtype)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}[
        name
    ]


def dequantize(q: QuantizedTensor, dtype=None):
    """fp8port.dequantize for a QuantizedTensor whose codes live on the kernels' device."""
    import torch

    if not isinstance(q, QuantizedTensor) or not isinstance(q.codes, torch.Tensor) or not _runs_here(q.codes):
        raise UnsupportedInputError("the Triton dequantize takes a QuantizedTensor with torch tensors on a CUDA device")
    if q.scheme.element.name != "float8_e4m3fn" or q.scheme.block.kind not in (BlockKind.VECTOR, BlockKind.TILE):
        raise UnsupportedInputError(f"no Triton dequantize for scheme {q.scheme.name!r}")
    if q.scheme.block.kind is BlockKind.VECTOR and q.scheme.block.axis != -1:
        raise UnsupportedInputError("the Triton dequantize takes 1xB blocks along the last axis only")
    out_dtype = _out_dtype(dtype, q)
    shape = tuple(q.shape)
    codes, s = q.codes, q.scale_fp32
    if codes.numel() == 0:
        return torch.empty(shape, dtype=out_dtype, device=codes.device)
    if q.scheme.block.kind is BlockKind.VECTOR:
        k = shape[-1] if shape else 1
        c3, s3, br, bc = codes.reshape(1, -1, k), s.reshape(1, -1, s.shape[-1]), 1, q.scheme.block.size[0]
    else:
        c3 = codes.reshape(-1, shape[-2], shape[-1])
        s3 = s.reshape(-1, s.shape[-2], s.shape[-1])
        br, bc = q.scheme.block.size
    tq = load("triton_quant")
    out = tq.dequantize(c3, s3, br, bc, out_bf16=out_dtype == torch.bfloat16)
    return out.reshape(shape).to(out_dtype)  # float16 / float64 from the float32 product, like the reference


def gemm_unsupported_reason(a: QuantizedTensor, b: QuantizedTensor) -> str | None:
    """Why the Triton GEMM cannot take these operands (None: it can)."""
    for q, what in ((a, "activations"), (b, "weight")):
        if q.scheme.element.name != "float8_e4m3fn":
            return f"{what} element {q.scheme.element.name}: the kernel multiplies E4M3 codes"
    if a.scheme.block.kind is not BlockKind.VECTOR or a.scheme.block.size != (128,) or a.scheme.block.axis != -1:
        return f"activation block {a.scheme.block}: the kernel takes 1x128 along K"
    if b.scheme.block.kind is not BlockKind.TILE or b.scheme.block.size != (128, 128):
        return f"weight block {b.scheme.block}: the kernel takes 128x128"
    return None


def scaled_matmul(a: QuantizedTensor, b: QuantizedTensor, *, out_dtype="float32", fp8_dot=None):
    """fp8port.nn.scaled_matmul for DeepSeek-layout operands on the kernels' device: (..., N)."""
    import torch

    check_operands(a, b)
    why = gemm_unsupported_reason(a, b)
    if why:
        raise UnsupportedInputError(f"no Triton GEMM for these operands: {why}")
    if str(out_dtype).replace("torch.", "") not in ("float32", "bfloat16"):
        raise ShapeError(f"scaled_matmul: out_dtype must be float32 or bfloat16, not {out_dtype!r}")
    for q in (a, b):
        if not isinstance(q.codes, torch.Tensor) or not _runs_here(q.codes):
            raise UnsupportedInputError("the Triton GEMM takes QuantizedTensors with torch tensors on a CUDA device")
    n, k = b.shape
    tg = load("triton_gemm")
    out = tg.scaled_mm(
        a.codes.reshape(-1, k),
        a.scale_fp32.reshape(-1, a.scale_fp32.shape[-1]),
        b.codes,
        b.scale_fp32,
        out_bf16="bfloat16" in str(out_dtype),
        fp8_dot=fp8_dot,
    )
    return out.reshape(*a.shape[:-1], n)
