"""Per-tensor comparison of two checkpoints, dense or quantized (any layout), by value."""

from __future__ import annotations

import numpy as np

from ..quant.metrics import sqnr_db
from . import layouts
from .folder import Checkpoint


class _Values:
    """Every logical tensor of a checkpoint as float64 values (quantized ones dequantized)."""

    def __init__(self, path):
        self.ckpt = Checkpoint.open(path)
        self.handler, _ = layouts.detect(self.ckpt)
        self.weights = self.handler.weights(self.ckpt)
        self.names = [n for n, _ in layouts.in_order(self.ckpt, self.weights)]

    def dtype(self, n):
        return self.weights[n].kind if n in self.weights else self.ckpt.info(n).dtype

    def shape(self, n):
        return self.weights[n].shape if n in self.weights else self.ckpt.info(n).shape

    def values(self, n) -> np.ndarray:
        if n in self.weights:
            return np.asarray(self.handler.values(self.ckpt, self.weights[n]), np.float64)
        return self.ckpt.read(n).astype(np.float64)


def _pairs(A: _Values, B: _Values) -> dict[str, str]:
    """A's tensor -> B's that holds it: the same name, or where one layout renames tensors (GGUF), its map."""
    b_of = {n: m for n, m in B.handler.counterparts(B.ckpt, A.names).items() if m in B.names}
    a_of = {n: m for n, m in A.handler.counterparts(A.ckpt, B.names).items() if m in A.names}
    b_of.update({m: n for n, m in a_of.items() if m not in b_of})
    return b_of


def diff(a, b) -> dict:
    A, B = _Values(a), _Values(b)
    b_of = _pairs(A, B)
    rows, only_a = [], [n for n in A.names if n not in b_of]
    only_b = [n for n in B.names if n not in set(b_of.values())]
    for n in A.names:
        if n not in b_of:
            continue
        m = b_of[n]
        row = {"name": n, "dtype_a": A.dtype(n), "dtype_b": B.dtype(m), "shape": list(A.shape(n))}
        if m != n:
            row["name_b"] = m
        if tuple(A.shape(n)) != tuple(B.shape(m)):
            row.update(status="shape differs", shape_b=list(B.shape(m)))
            rows.append(row)
            continue
        same_bytes = (
            n not in A.weights
            and m not in B.weights
            and A.dtype(n) == B.dtype(m)
            and np.array_equal(A.ckpt.read(n).view(np.uint8), B.ckpt.read(m).view(np.uint8))
        )
        va, vb = A.values(n), B.values(m)
        err = np.abs(va - vb)
        row.update(
            bytes_equal=bool(same_bytes),
            values_equal=bool(np.array_equal(va, vb, equal_nan=True)),
            max_abs_error=float(np.nanmax(err)) if err.size else 0.0,
            mean_abs_error=float(np.nanmean(err)) if err.size else 0.0,
            sqnr_db=round(sqnr_db(np.nan_to_num(va), np.nan_to_num(vb)), 3),
        )
        row["status"] = "identical" if row["values_equal"] else "differs"
        rows.append(row)
    return {
        "a": str(A.ckpt.root),
        "b": str(B.ckpt.root),
        "layout_a": A.handler.name.value,
        "layout_b": B.handler.name.value,
        "tensors": rows,
        "only_in_a": only_a,
        "only_in_b": only_b,
        "identical": all(r["status"] == "identical" for r in rows) and not only_a and not only_b,
    }
