"""fp8port: bit-exact low-precision formats, block-scaled quantization and conversion."""

from . import kernels  # noqa: F401  registers the Triton kernels for tensors on a GPU (never imports Triton)
from .codec.api import decode, encode
from .codec.packing import pack, unpack
from .quant import QuantizedTensor, dequantize, quantize

__all__ = [
    "FP8Linear",
    "QuantizedTensor",
    "decode",
    "dequantize",
    "encode",
    "load_quantized",
    "pack",
    "quantize",
    "quantize_model",
    "scaled_matmul",
    "unpack",
]
__version__ = "0.1.0"

_NN = {"FP8Linear", "load_quantized", "quantize_model", "scaled_matmul"}


def __getattr__(name):
    # The runtime pieces import torch.nn and transformers helpers; load them on first use so
    # that the codec CLI starts fast.
    if name in _NN:
        from . import nn

        return getattr(nn, name)
    raise AttributeError(f"module 'fp8port' has no attribute {name!r}")
