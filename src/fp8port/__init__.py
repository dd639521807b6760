"""fp8port: bit-exact low-precision formats, block-scaled quantization and conversion."""

from .codec.api import decode, encode
from .codec.packing import pack, unpack

__all__ = ["decode", "encode", "pack", "unpack"]
__version__ = "0.1.0"
