"""The block-scaled GEMM: DeepSeek / DeepGEMM semantics on QuantizedTensor operands.

    out[m, n] = sum over K blocks kb of (sum_{k in kb} a[m, k] * b[n, k]) * sa[m, kb] * sb[n, kb]

a: activations (M x K), b: weights (N x K), each with any block layout (DeepSeek: 1 x 128 and
128 x 128; MX: 1 x 32 both; HiF8: per tensor and per row). The reference accumulates the
partial product of each K block (the finest either operand has) in float32 and applies both
scales to it, as DeepGEMM's promotion does. The fast path dequantizes both operands (exact for
power-of-two scales: every element is a short significand times 2^k) and runs one float32
GEMM; the two differ only by float32 reassociation.
"""

from __future__ import annotations

import math

import numpy as np

from ..arrays import to_numpy as _to_numpy
from ..backends import Backend
from ..errors import ShapeError
from ..quant import QuantizedTensor, dequantize, devices
from ..quant.scheme import BlockKind
from ..quant.tensor import check_operands


def _scale_map(q: QuantizedTensor, rows: int, k: int, bk: int) -> np.ndarray:
    """(rows, K / bk) float32: the scale that covers each row's bk-wide K block."""
    ext = q.scheme.block.extents(tuple(q.shape))
    s = _to_numpy(q.scale_fp32).astype(np.float32)
    row_ext = ext[0]
    if len(q.shape) != 2:  # activations (..., K): rows are the flattened leading axes
        if any(e != 1 for e in ext[:-1]) and q.scheme.block.kind is not BlockKind.TENSOR:
            raise ShapeError(
                f"scaled_matmul: activations of rank {len(q.shape)} need blocks along the last "
                f"axis only; {q.scheme.name} has {q.scheme.block}"
            )
        s = s.reshape(-1, s.shape[-1])
        row_ext = rows if q.scheme.block.kind is BlockKind.TENSOR else 1
    r = np.minimum(np.arange(rows) // row_ext, s.shape[0] - 1)
    c = np.minimum(np.arange(0, k, bk) // ext[-1], s.shape[1] - 1)
    return s[r][:, c]


def reference_scaled_matmul(a: QuantizedTensor, b: QuantizedTensor) -> np.ndarray:
    """float32 (..., N): per K block (the finest block either operand has along K), the
    float32 partial product of the codes' values times both scales, accumulated in float32."""
    check_operands(a, b)
    n, k = b.shape
    m = int(np.prod(a.shape[:-1]))
    ext_a = a.scheme.block.extents(tuple(a.shape))[-1]
    ext_b = b.scheme.block.extents(tuple(b.shape))[-1]
    bk = math.gcd(min(ext_a, k), min(ext_b, k)) or k
    ca = np.asarray(a.scheme.element.values, np.float32)[_to_numpy(a.codes).reshape(m, k)]
    cb = np.asarray(b.scheme.element.values, np.float32)[_to_numpy(b.codes)]
    sa, sb = _scale_map(a, m, k, bk), _scale_map(b, n, k, bk)
    acc = np.zeros((m, n), np.float32)
    for j, k0 in enumerate(range(0, k, bk)):
        part = ca[:, k0 : k0 + bk] @ cb[:, k0 : k0 + bk].T  # float32
        acc += part * sa[:, j : j + 1] * sb[None, :, j]
    return acc.reshape(*a.shape[:-1], n)


def scaled_matmul(a: QuantizedTensor, b: QuantizedTensor, *, out_dtype="float32", backend="auto"):
    """Block-scaled a @ b.T for QuantizedTensors (NumPy or torch; the result follows `a`).

    out_dtype: 'float32' or 'bfloat16' (rounded once, at the end). backend: 'auto' / 'fast'
    (dequantize + one float32 GEMM) or 'reference' (per-K-block float32 accumulation).
    """
    import torch

    check_operands(a, b)
    if str(out_dtype) not in ("float32", "bfloat16", "torch.float32", "torch.bfloat16"):
        raise ShapeError(f"scaled_matmul: out_dtype must be float32 or bfloat16, not {out_dtype!r}")
    be = Backend.parse(backend)
    dev = devices.for_tensor(a.codes)  # GPU operands: the device backend's block-scaled GEMM (Triton)
    if dev is not None and be is not Backend.REFERENCE and dev.gemm_unsupported_reason(a, b) is None:
        return dev.scaled_matmul(a, b, out_dtype=out_dtype)
    if be is Backend.REFERENCE:
        out = torch.from_numpy(reference_scaled_matmul(a, b))
    else:
        da = torch.as_tensor(np.asarray(dequantize(a, "float32", backend="auto")))
        db = torch.as_tensor(np.asarray(dequantize(b, "float32", backend="auto")))
        out = da @ db.T
    if "bfloat16" in str(out_dtype):
        out = out.bfloat16()
    if not isinstance(a.codes, np.ndarray):
        return out
    if out.dtype == torch.bfloat16:
        import ml_dtypes

        return out.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return out.numpy()
