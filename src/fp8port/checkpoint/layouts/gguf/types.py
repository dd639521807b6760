"""The GGUF tensor types fp8port writes, and their blocks to and from QuantizedTensors.

Dense: F32, F16, BF16. Block-scaled, each one of our schemes laid out as ggml's blocks along a row:

* Q8_0 (preset `q8_0`): 34 bytes per 32 elements, the fp16 scale d then 32 int8 codes; value code * d.
* MXFP4 (preset `mxfp4`): 17 bytes per 32, the E8M0 byte then 16 bytes, element j in the low nibble and
  j + 16 in the high one (`codec.packing.gguf_mxfp4_blocks`). ggml reads code 8 as +0 (ours: -0).
* NVFP4 (preset `nvfp4`): 36 bytes per 64, four E4M3 block scales (sign bit clear: ggml's UE4M3) then
  four 8-byte groups, element j of each 16 in the low nibble and j + 8 in the high one. The per-tensor
  scale is a separate F32 tensor `<name>.scale` [1] that llama.cpp multiplies in after the matmul.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ....codec.packing import from_gguf_mxfp4_blocks, gguf_mxfp4_blocks
from ....errors import CheckpointError
from ....names import NamedEnum
from ....quant import QuantizedTensor, Scheme, get_preset
from ....quant.storage import e8m0_values
from ..base import StoredWeight
from ..common import block_tensor

NVFP4_GROUP = 16


class GgufType(NamedEnum):
    """`convert --layout gguf --type T`: what the model's matrices are written as."""

    __label__ = "GGUF type"
    __aliases__ = {"f32": ("fp32", "float32"), "f16": ("fp16", "float16"), "bf16": ("bfloat16",), "q8_0": ("q8",)}
    F32 = "f32"
    F16 = "f16"
    BF16 = "bf16"
    Q8_0 = "q8_0"
    MXFP4 = "mxfp4"
    NVFP4 = "nvfp4"

    @property
    def ggml(self) -> str:
        """The ggml type name (gguf.GGMLQuantizationType member)."""
        return self.name

    @property
    def dense(self) -> str | None:
        """The safetensors dtype of a dense type (None: block-scaled)."""
        return {GgufType.F32: "F32", GgufType.F16: "F16", GgufType.BF16: "BF16"}.get(self)

    @property
    def scheme(self) -> Scheme | None:
        """Our scheme whose codes and scales ggml's blocks hold (None: dense)."""
        return None if self.dense else get_preset(self.value).weight

    @property
    def file_type(self) -> int:
        """general.file_type (llama.cpp's LlamaFileType of a file mostly of this type)."""
        import gguf

        names = {
            GgufType.F32: "ALL_F32",
            GgufType.F16: "MOSTLY_F16",
            GgufType.BF16: "MOSTLY_BF16",
            GgufType.Q8_0: "MOSTLY_Q8_0",
            GgufType.MXFP4: "MOSTLY_MXFP4_MOE",
            GgufType.NVFP4: "MOSTLY_NVFP4",
        }
        return int(gguf.LlamaFileType[names[self]])

    @classmethod
    def of_ggml(cls, name: str) -> GgufType | None:
        return next((t for t in cls if t.ggml == name), None)

    @property
    def row_multiple(self) -> int:
        """Elements per ggml block: a row must be a whole number of blocks."""
        return {GgufType.Q8_0: 32, GgufType.MXFP4: 32, GgufType.NVFP4: 64}.get(self, 1)


def to_blocks(t: GgufType, q: QuantizedTensor) -> np.ndarray:
    """ggml blocks (uint8, rows x bytes per row) of a NumPy QuantizedTensor in `t.scheme`'s layout."""
    codes = np.asarray(q.codes, np.uint8)
    rows, k = codes.shape[:-1], codes.shape[-1]
    if t is GgufType.Q8_0:
        d = np.asarray(q.scale, np.float16).view(np.uint8).reshape(*rows, k // 32, 2)
        blocks = np.concatenate([d, codes.reshape(*rows, k // 32, 32)], axis=-1)
    elif t is GgufType.MXFP4:
        blocks = gguf_mxfp4_blocks(codes, np.asarray(q.scale).view(np.uint8))
    else:
        g = codes.reshape(*rows, k // 64, 4, NVFP4_GROUP)
        qs = (g[..., :8] | (g[..., 8:] << 4)).reshape(*rows, k // 64, 32)
        s = np.asarray(q.scale).view(np.uint8).reshape(*rows, k // 64, 4) & 0x7F
        blocks = np.concatenate([s, qs], axis=-1)
    return np.ascontiguousarray(blocks.reshape(*rows, -1))


def from_blocks(
    t: GgufType, raw: np.ndarray, w: StoredWeight, tensor_scale: float | None, where: str
) -> QuantizedTensor:
    """The QuantizedTensor of ggml blocks `raw` (rows x bytes per row) of weight `w`."""
    rows, k = w.shape[:-1], w.shape[-1]
    if t is GgufType.Q8_0:
        b = raw.reshape(*rows, k // 32, 34)
        stored = np.ascontiguousarray(b[..., :2]).view(np.float16)[..., 0]
        codes = np.ascontiguousarray(b[..., 2:]).reshape(*rows, k)
        s = stored.astype(np.float32)
        bad = ~np.isfinite(s) | (s < 0)  # ggml stores d = 0 for an all-zero block
        return _checked(block_tensor(codes, stored, s, w), bad, s, where)
    if t is GgufType.MXFP4:
        codes, e = from_gguf_mxfp4_blocks(raw.reshape(*rows, k // 32, 17))
        s = e8m0_values(e)  # 0xFF: NaN here, 2^128 in ggml; refused below
        return _checked(block_tensor(codes, e.view(ml_dtypes.float8_e8m0fnu), s, w), np.isnan(s), s, where)
    b = raw.reshape(*rows, k // 64, 36)
    qs = b[..., 4:].reshape(*rows, k // 64, 4, 8)
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(*rows, k)
    stored = np.ascontiguousarray(b[..., :4]).reshape(*rows, k // NVFP4_GROUP).view(ml_dtypes.float8_e4m3fn)
    ts = np.float32(1.0 if tensor_scale is None else tensor_scale)
    s = (ts * stored.astype(np.float32)).astype(np.float32)
    q = block_tensor(codes, stored, s, w, tensor_scale=float(ts))
    return _checked(q, ~np.isfinite(s) | (s < 0), s, where)


def _checked(q: QuantizedTensor, bad: np.ndarray, s: np.ndarray, where: str) -> QuantizedTensor:
    if bad.any():
        i = tuple(int(j) for j in np.argwhere(bad)[0])
        raise CheckpointError(f"{where}: block {i} has scale {s[i]!r}, which fp8port does not read")
    return q
