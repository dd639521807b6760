"""GGUF: llama.cpp's one-file layout, written from any readable layout and read for inspect / diff / convert.

`fp8port convert SRC DST.gguf --layout gguf --type T`: every tensor under llama.cpp's name (gguf's
TensorNameMap), the model's matrices in T (F32 / F16 / BF16, or the block types Q8_0 / MXFP4 / NVFP4,
see types.py), 1-D tensors in F32, matrices a block type cannot hold (rows not a whole number of
blocks, embeddings and what --exclude names) in the model's dtype; the architecture's hyperparameters
(model.py) and tokenizer (tokenizer.py) as metadata. A quantized source keeps its codes where T's scheme
holds them (MXFP4 -> MXFP4, NVFP4 -> NVFP4: a repack) and is requantized otherwise, with its SQNR.
The file is one file, not shards: `write_single` streams it (convert stages and renames it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import numpy as np

from ....errors import LayoutError
from ...gguf_file import DENSE, GgufFile, raw_shape, row_order, write_gguf
from ...safetensors_io import nbytes
from ...selection import quantizable
from ..base import LayoutHandler, LayoutName, StoredWeight, Writer
from .model import Model, model
from .tokenizer import tokenizer
from .types import GgufType, from_blocks, to_blocks

__all__ = ["Gguf", "GgufType", "GgufWriter"]


def _scale_name(name: str) -> str:
    return name.removesuffix(".weight") + ".scale"  # llama.cpp's per-tensor NVFP4 scale


class Gguf(LayoutHandler):
    name = LayoutName.GGUF
    summary = (
        "one GGUF file (llama.cpp): llama.cpp's tensor names, F32 / F16 / BF16 / Q8_0 / MXFP4 / NVFP4 "
        "tensors, the hyperparameters and tokenizer as metadata"
    )
    loaders = ("llama.cpp and what embeds it (llama-cpp-python, Ollama, LM Studio)",)

    def detect(self, ckpt):
        return f"a GGUF file (general.architecture {ckpt.arch!r})" if isinstance(ckpt, GgufFile) else None

    def weights(self, ckpt):
        out = {}
        for n, (f, info) in ckpt.tensors.items():
            if info.dtype in DENSE:
                continue
            t = GgufType.of_ggml(info.dtype)
            if t is None:
                raise LayoutError(
                    f"{f}: tensor {n!r} is {info.dtype}; fp8port reads the GGUF types "
                    f"{', '.join(t.ggml for t in GgufType)}"
                )
            parts = {"codes": n}
            scale = ckpt.tensors.get(_scale_name(n))
            if t is GgufType.NVFP4 and scale:
                if scale[1].dtype != "F32" or math.prod(scale[1].shape) != 1:
                    raise LayoutError(
                        f"{f}: {_scale_name(n)!r} is {scale[1].dtype} {list(scale[1].shape)}; "
                        "llama.cpp's NVFP4 tensor scale is one F32"
                    )
                parts["tensor_scale"] = _scale_name(n)
            out[n] = StoredWeight(n, tuple(info.shape), t.scheme, parts, label=info.dtype)
        return out

    def read(self, ckpt, w):
        ts = w.parts.get("tensor_scale")
        ts = float(ckpt.read(ts).reshape(-1)[0]) if ts else None
        return from_blocks(GgufType.of_ggml(w.label), ckpt.read(w.name), w, ts, f"{ckpt.files[0]}: tensor {w.name!r}")

    def describe(self, ckpt, weights):
        out = super().describe(ckpt, weights)
        kv = ckpt.kv
        out["gguf"] = {
            k: kv.get(k)
            for k in (
                "general.architecture",
                "general.name",
                "general.file_type",
                "tokenizer.ggml.model",
                "tokenizer.ggml.pre",
                "tokenizer.ggml.tokens",
            )
        }
        if ckpt.rows:
            out["gguf"]["rows_reordered"] = f"{len(ckpt.rows)} q/k projections (llama.cpp's rotary order; read back)"
        return out

    def check_source(self, ckpt):
        # a GGUF file carries llama.cpp's names and metadata, not a config.json to write beside them
        raise LayoutError(
            f"{ckpt.files[0]}: fp8port reads GGUF files for inspect, diff and --verify; converting "
            "from GGUF is not supported (convert the Hugging Face folder it came from)"
        )

    def counterparts(self, ckpt, names):
        import gguf

        arch = next((m for m, n in gguf.MODEL_ARCH_NAMES.items() if n == ckpt.arch), None)
        blocks = ckpt.kv.get(f"{ckpt.arch}.block_count")
        if arch is None or not isinstance(blocks, int):
            return super().counterparts(ckpt, names)
        table = gguf.TensorNameMap(arch, blocks)
        out = {}
        for n in names:
            g = n if n in ckpt.tensors else table.get_name(n, try_suffixes=(".weight", ".bias"))
            if g in ckpt.tensors:
                out[n] = g
        return out

    def writer(self, request, source):
        if request.preset or request.block or request.storage:
            raise LayoutError(
                "--layout gguf takes --type (f32, f16, bf16, q8_0, mxfp4, nvfp4); --preset, --block and "
                "--scale-dtype do not apply"
            )
        if request.type is None:
            raise LayoutError(f"--layout gguf needs --type ({', '.join(t.value for t in GgufType)})")
        t = GgufType.parse(request.type)
        root = source.ckpt.root
        m = model(source.ckpt.config, root / "config.json")
        vocab = next(v for k, v, _ in m.kv if k.endswith(".vocab_size"))
        return GgufWriter(self.name, request, source, type=t, model=m, metadata=tokenizer(root, vocab))


@dataclass
class GgufWriter(Writer):
    """One GGUF file: `scheme_for` picks T's scheme per matrix, `dense_output` names and types the rest."""

    type: GgufType = GgufType.BF16
    model: Model | None = None
    metadata: list = field(default_factory=list)  # tokenizer.* [(key, value, GGUFValueType)]
    ggml: dict[str, str] = field(default_factory=dict)  # block-type output -> its ggml type
    single_file = True

    @property
    def label(self):
        return f"gguf {self.type.value}"

    def scheme_for(self, name, dtype, shape, stored):
        self.model.tensor_name(name)  # a tensor llama.cpp has no name for fails here, before any data
        scheme = self.type.scheme
        if scheme is None or len(shape) < 2 or shape[-1] % self.type.row_multiple:
            return None
        req = self.request
        if stored is None and not quantizable(name, dtype, shape, req.include, req.exclude):
            return None
        if stored is not None and any(fnmatchcase(name, p) for p in req.exclude):
            return None
        return scheme

    def dense_output(self, name, dtype, shape, stored):
        if len(shape) < 2:
            out = "F32"  # llama.cpp keeps norms and biases in F32, as its converter writes them
        else:
            out = self.type.dense or self.source.model_dtype
        return self.model.tensor_name(name), out, tuple(shape)

    def outputs(self, name, shape, scheme):
        gname = self.model.tensor_name(name)
        self.ggml[gname] = self.type.ggml
        out = [(gname, "U8", raw_shape(self.type.ggml, shape))]
        if self.type is GgufType.NVFP4:
            out.append((_scale_name(gname), "F32", (1,)))
        return out

    def arrays(self, name, q):
        out = [to_blocks(self.type, q)]
        if self.type is GgufType.NVFP4:
            out.append(np.asarray([q.tensor_scale], np.float32))
        return out

    def review(self, jobs):
        seen = {}
        for j in jobs:
            for n, _, _ in j.outputs:
                if n in seen:
                    raise LayoutError(f"{j.source} and {seen[n]} are both llama.cpp's {n!r}")
                seen[n] = j.source

    def config(self, config, jobs):
        return None  # the metadata lives in the file

    def shard_names(self, n):
        return [f"model.{self.type.value}.gguf"]

    def write_single(self, path, plan, arrays):
        import gguf

        m = self.model
        infos = [(n, s, self.ggml.get(n, d), nbytes(d, s)) for j in plan.jobs for n, d, s in j.outputs]
        orders = {n: o for n, s, _, _ in infos if (o := row_order(m.arch, n, s[0], m.heads, m.kv_heads)) is not None}
        T = gguf.GGUFValueType
        kv = [
            *self.model.kv,
            (gguf.Keys.General.FILE_TYPE, self.type.file_type, T.UINT32),
            (gguf.Keys.General.QUANTIZATION_VERSION, gguf.GGML_QUANT_VERSION, T.UINT32),
            *self.metadata,
        ]

        def ordered():
            names = iter(n for n, _, _, _ in infos)
            for job_arrays in arrays:
                for a in job_arrays:
                    n = next(names)
                    yield a[orders[n]] if n in orders else a

        write_gguf(path, m.arch, kv, infos, ordered())
