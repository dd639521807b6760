"""fp8port: bit-exact low-precision formats, block-scaled quantization and conversion."""

from .codec.api import decode, encode
from .codec.packing import pack, unpack
from .quant import QuantizedTensor, dequantize, quantize

__all__ = ["QuantizedTensor", "decode", "dequantize", "encode", "pack", "quantize", "unpack"]
__version__ = "0.1.0"
