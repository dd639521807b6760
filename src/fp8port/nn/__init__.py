"""Running block-scaled models: the scaled GEMM, FP8Linear, loading and in-memory quantization."""

from .experts import QuantizedExperts
from .gemm import reference_scaled_matmul, scaled_matmul
from .linear import FP8Linear, Mode
from .load import load_quantized, quantize_model, resident_bytes

__all__ = [
    "FP8Linear",
    "Mode",
    "QuantizedExperts",
    "load_quantized",
    "quantize_model",
    "reference_scaled_matmul",
    "resident_bytes",
    "scaled_matmul",
]
