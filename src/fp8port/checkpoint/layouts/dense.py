"""No quantization: what `fp8port dequant` writes and what every model starts as."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import LayoutError
from .base import LayoutHandler, LayoutName, Writer, with_config


class Dense(LayoutHandler):
    name = LayoutName.DENSE
    summary = "plain floating-point tensors, no quantization_config"
    loaders = ("every engine and tool (transformers, vLLM, SGLang, llama.cpp converters, ...)",)

    def writer(self, request, source):
        if request.preset or request.block or request.storage:
            raise LayoutError(
                "the dense layout holds no quantized weights: --preset, --block and --scale-dtype do "
                "not apply (convert to a quantized layout, or dequant)"
            )
        return DenseWriter(self.name, request, source)


@dataclass
class DenseWriter(Writer):
    """Every tensor dense: quantized source weights dequantized, the rest copied."""

    def scheme_for(self, name, dtype, shape, stored):
        return None

    def hold(self, name, shape, scheme):
        raise LayoutError(f"{name}: the dense layout holds no quantized weights")

    def outputs(self, name, shape, scheme):
        raise LayoutError(f"{name}: the dense layout holds no quantized weights")

    def arrays(self, name, q):
        raise LayoutError(f"{name}: the dense layout holds no quantized weights")

    def config(self, config, jobs):
        return with_config(config, None)
