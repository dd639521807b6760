"""Per-tensor comparison of two checkpoints, dense or quantized, by value."""

from __future__ import annotations

import numpy as np

from ..quant import dequantize
from . import ascend
from .folder import Checkpoint
from .layouts import Layout, detect, logical_shape, quantized_weights, read_quantized, reader_scheme


class _Values:
    """Every logical tensor of a checkpoint as float64 values (quantized ones dequantized)."""

    def __init__(self, path):
        self.ckpt = Checkpoint.open(path)
        self.layout = detect(self.ckpt)
        self.pairs = quantized_weights(self.ckpt, self.layout)
        self.types = {}
        if self.layout is Layout.ASCEND:  # a type per tensor, with companions beyond the scale
            self.types = ascend.weights(self.ckpt)
            extra = ascend.companions(self.ckpt, self.types)
        else:
            self.scheme = reader_scheme(self.ckpt, self.layout) if self.pairs else None
            extra = {n for n in self.ckpt.tensors if n.endswith(".weight_tensor_scale")}
        self.names = [n for n in self.ckpt.tensors if n not in set(self.pairs.values()) | extra]

    def dtype(self, n):
        if n in self.types:
            return self.types[n].value
        return f"{self.scheme.element.name}" if n in self.pairs else self.ckpt.info(n).dtype

    def shape(self, n):
        if n in self.types:
            return ascend.logical(self.ckpt, n, self.types[n])
        info = self.ckpt.info(n)
        return logical_shape(info, self.scheme) if n in self.pairs else info.shape

    def raw(self, n):
        return self.ckpt.read(n)

    def values(self, n) -> np.ndarray:
        if n in self.types:
            return ascend.dequantize_weight(self.ckpt, n, self.types[n]).astype(np.float64)
        if n in self.pairs:
            q = read_quantized(self.ckpt, n, self.pairs[n], self.layout, self.scheme)
            return np.asarray(dequantize(q, "float32"), np.float64)
        return self.ckpt.read(n).astype(np.float64)


def diff(a, b) -> dict:
    A, B = _Values(a), _Values(b)
    rows, only_a, only_b = [], [n for n in A.names if n not in B.names], [n for n in B.names if n not in A.names]
    for n in A.names:
        if n not in B.names:
            continue
        row = {"name": n, "dtype_a": A.dtype(n), "dtype_b": B.dtype(n), "shape": list(A.shape(n))}
        if tuple(A.shape(n)) != tuple(B.shape(n)):
            row.update(status="shape differs", shape_b=list(B.shape(n)))
            rows.append(row)
            continue
        same_bytes = (n not in A.pairs and n not in B.pairs and A.dtype(n) == B.dtype(n)
                      and np.array_equal(A.raw(n).view(np.uint8), B.raw(n).view(np.uint8)))
        va, vb = A.values(n), B.values(n)
        err = np.abs(va - vb)
        sig, noise = float(np.sum(va**2)), float(np.nansum((va - vb) ** 2))
        row.update(
            bytes_equal=bool(same_bytes),
            values_equal=bool(np.array_equal(va, vb, equal_nan=True)),
            max_abs_error=float(np.nanmax(err)) if err.size else 0.0,
            mean_abs_error=float(np.nanmean(err)) if err.size else 0.0,
            sqnr_db=None if noise == 0 else round(10 * np.log10(sig / noise), 3) if sig > 0 else None,
        )
        row["status"] = "identical" if row["values_equal"] else "differs"
        rows.append(row)
    return {"a": str(A.ckpt.root), "b": str(B.ckpt.root), "layout_a": A.layout.value, "layout_b": B.layout.value,
            "tensors": rows, "only_in_a": only_a, "only_in_b": only_b,
            "identical": all(r["status"] == "identical" for r in rows) and not only_a and not only_b}
