"""A Hugging Face model folder: one safetensors file or shards with an index, read lazily."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, LayoutError
from .safetensors_io import TensorInfo, read_header, read_tensor

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
# msModelSlim's AscendV1 names (checkpoint/layouts/ascend/): same index format, other file names
ASCEND_INDEX = "quant_model_weights.safetensors.index.json"
ASCEND_SINGLE = "quant_model_weights.safetensors"
DESCRIPTION = "quant_model_description.json"
HF_QUANT_CONFIG = "hf_quant_config.json"  # NVIDIA ModelOpt's


def _inside(root: Path, rel: str, what: str) -> Path:
    """root/rel, refusing names that leave root (.., absolute paths, links pointing out)."""
    if not isinstance(rel, str) or not rel or "\0" in rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise CheckpointError(f"{root / INDEX}: {what} names {rel!r}, a path outside the checkpoint")
    p = root / rel
    if not p.resolve().is_relative_to(root.resolve()):
        raise CheckpointError(f"{root / INDEX}: {what} {rel!r} is a link that leaves the checkpoint")
    return p


@dataclass
class Checkpoint:
    """Tensor names -> (file, info) in the order the checkpoint lists them; nothing read yet."""

    root: Path
    tensors: dict[str, tuple[Path, TensorInfo]]
    metadata: dict[Path, dict[str, str]]
    config: dict | None
    index_metadata: dict = field(default_factory=dict)

    @classmethod
    def open(cls, path) -> Checkpoint:
        path = Path(path)
        if path.suffix == ".gguf" and path.is_file():
            from .gguf_file import open_gguf  # a container of its own; it subclasses Checkpoint

            return open_gguf(path)
        if path.is_dir() and not any(path.glob("*.safetensors")) and (found := sorted(path.glob("*.gguf"))):
            raise LayoutError(
                f"{path}: a folder of GGUF files ({', '.join(p.name for p in found[:3])}); name the .gguf file itself"
            )
        if path.is_file() and path.suffix == ".safetensors":
            root, files, weight_map, idx_meta = path.parent, [path], None, {}
        elif not path.is_dir():
            raise CheckpointError(f"{path}: no such checkpoint (need a folder or a .safetensors file)")
        elif (path / INDEX).exists() or (path / ASCEND_INDEX).exists():
            root = path
            index_file = path / (INDEX if (path / INDEX).exists() else ASCEND_INDEX)
            try:
                index = json.loads(index_file.read_text())
                weight_map = index["weight_map"]
            except (OSError, ValueError, KeyError, TypeError, RecursionError):
                raise CheckpointError(f"{index_file}: not a valid index (need a JSON object with weight_map)") from None
            if not (
                isinstance(weight_map, dict)
                and weight_map
                and all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items())
            ):
                raise CheckpointError(f"{index_file}: weight_map must map tensor names to file names")
            idx_meta = index.get("metadata") or {}
            if not isinstance(idx_meta, dict):
                raise CheckpointError(f"{index_file}: metadata must be a JSON object")
            files = [_inside(path, f, "weight_map") for f in dict.fromkeys(weight_map.values())]
            for f in files:
                if not f.is_file():
                    raise CheckpointError(f"{path / INDEX}: names {f.name}, which does not exist")
        elif (path / SINGLE).exists():
            root, files, weight_map, idx_meta = path, [path / SINGLE], None, {}
        else:
            found = sorted(p.name for p in path.glob("*.safetensors"))
            if len(found) != 1:
                raise CheckpointError(
                    f"{path}: no {SINGLE} or {INDEX}" + (f" (found {', '.join(found)})" if found else "")
                )
            root, files, weight_map, idx_meta = path, [path / found[0]], None, {}
        headers = {f: read_header(f) for f in files}
        tensors = {}
        if weight_map is None:
            for f in files:
                for name, info in headers[f][0].items():
                    tensors[name] = (f, info)
        else:
            for name, rel in weight_map.items():
                f = root / rel
                info = headers[f][0].get(name)
                if info is None:
                    raise CheckpointError(
                        f"{root / INDEX}: tensor {name!r} is mapped to {rel}, which does not contain it"
                    )
                tensors[name] = (f, info)
        config = None
        if (root / "config.json").exists():
            try:
                config = json.loads((root / "config.json").read_text())
            except (OSError, ValueError):
                raise CheckpointError(f"{root / 'config.json'}: not valid JSON") from None
            if not isinstance(config, dict):
                raise CheckpointError(f"{root / 'config.json'}: not a JSON object")
        return cls(root, tensors, {f: headers[f][1] for f in files}, config, idx_meta)

    def info(self, name: str) -> TensorInfo:
        return self.tensors[name][1]

    def read(self, name: str) -> np.ndarray:
        f, info = self.tensors[name]
        return read_tensor(f, info)

    @property
    def files(self) -> list[Path]:
        return list(self.metadata)

    @property
    def quantization_config(self) -> dict:
        q = (self.config or {}).get("quantization_config")
        return q if isinstance(q, dict) else {}

    def other_files(self) -> list[Path]:
        """Everything to carry over unchanged: tokenizer, generation config, chat template, and
        sub-folders (sentence-transformers' 1_Pooling/config.json); not weights, not hidden files."""
        # an AscendV1 description or ModelOpt's hf_quant_config is the layout's own metadata: whatever is
        # written decides its own
        skip = {
            self.root / INDEX,
            self.root / ASCEND_INDEX,
            self.root / DESCRIPTION,
            self.root / HF_QUANT_CONFIG,
            self.root / "config.json",
        } | set(self.files)
        out = []
        for p in sorted(self.root.rglob("*")):
            rel = p.relative_to(self.root)
            if any(part.startswith(".") for part in rel.parts) or not p.is_file() or p in skip:
                continue
            if p.suffix == ".safetensors" and p.parent == self.root:
                continue
            if not p.resolve().is_relative_to(self.root.resolve()):
                continue  # a link that leaves the checkpoint is not ours to copy
            out.append(p)
        return out
