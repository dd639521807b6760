"""Block-scaled quantization: schemes, scale rules, presets, QuantizedTensor, fused kernels."""

from . import devices
from .api import BackendError, dequantize, quantize
from .presets import PRESETS, Preset, Role, get_preset
from .rules import ScaleRule
from .scheme import Apply, BlockShape, ScaleStorage, Scheme, ZeroBlock
from .tensor import QuantizedTensor

__all__ = [
    "PRESETS",
    "devices",
    "Apply",
    "BackendError",
    "BlockShape",
    "Preset",
    "QuantizedTensor",
    "Role",
    "Scheme",
    "ScaleRule",
    "ScaleStorage",
    "ZeroBlock",
    "dequantize",
    "get_preset",
    "quantize",
]
