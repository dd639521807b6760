"""fp8port: bit-exact low-precision formats, block-scaled quantization and conversion."""

from .codec.api import decode, encode

__all__ = ["decode", "encode"]
__version__ = "0.1.0"
