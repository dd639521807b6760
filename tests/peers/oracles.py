"""Checkpoints written by each layout's own tool, and that tool's own dequantization of them.

Every function returns a folder under `<FP8PORT_CACHE>/peers/` (a per-session temp dir unless the
caller exported FP8PORT_CACHE), made once and reused: the key holds the tool's requirements, so a
new pin makes a new folder. The dequantized weights are `dequant.safetensors` inside that folder,
holding the tool's own output dtype, for tests in the main venv to compare bit for bit.

    llmcompressor(src, scheme)  llm-compressor 0.14 `model_free_ptq` (compressed-tensors 0.19) on CPU;
                                dequant: transformers + CompressedTensorsConfig(run_compressed=False)
    modelopt_nvfp4(src)         nvidia-modelopt 0.47 `mtq.quantize(NVFP4_DEFAULT_CFG)` + export_hf_checkpoint;
                                dequant: its NVFP4QTensor.dequantize (also of any folder: modelopt_dequantize)
    gpt_oss_mxfp4(dest)         a tiny random gpt-oss MXFP4 folder; dequant: transformers' own MXFP4
                                integration (Mxfp4Config(dequantize=True)) in the main venv

Sources are small: `smollm2_layers(2)` keeps SmolLM2's first two layers (real BF16 weights, 14
projections), so each tool runs for seconds, not minutes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import ml_dtypes
import numpy as np

from tests.peers import venvs

DEQUANT = "dequant.safetensors"


def cache_root() -> Path:
    return Path(os.environ.get("FP8PORT_CACHE", Path.home() / ".cache" / "fp8port")) / "peers"


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:12]


def _made(folder: Path, make) -> Path:
    """folder, made by make(tmp) into a temp sibling and renamed when complete."""
    if (folder / ".done").exists():
        return folder
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    make(tmp)
    (tmp / ".done").write_text("")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def smollm2_layers(n: int = 2) -> Path:
    """SmolLM2-135M's embedding, final norm and first n layers (real BF16 weights) as an HF folder."""
    from fp8port import models

    src = models.smollm2()

    def make(tmp: Path):
        from safetensors import safe_open
        from safetensors.torch import save_file

        with safe_open(src / "model.safetensors", "pt") as f:
            keep = {
                k: f.get_tensor(k) for k in f.keys() if not k.startswith("model.layers.") or int(k.split(".")[2]) < n
            }
        save_file(keep, tmp / "model.safetensors", metadata={"format": "pt"})
        config = json.loads((src / "config.json").read_text())
        config["num_hidden_layers"] = n
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            shutil.copy(src / name, tmp / name)

    return _made(cache_root() / f"smollm2-{n}layers", make)


_LLMC_QUANTIZE = r"""
import sys
from llmcompressor import model_free_ptq
src, out, scheme, ignore = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
model_free_ptq(model_stub=src, save_directory=out, scheme=scheme, ignore=ignore, max_workers=1, device="cpu")
"""

# compressed-tensors' own decompression, as a user gets it: transformers loads the folder with
# run_compressed=False (deprecated alias of dequantize=True) and the weights come out dense.
_CT_DEQUANT = r"""
import sys, json, torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, CompressedTensorsConfig
folder, dtype = sys.argv[1], getattr(torch, sys.argv[2])
arch = AutoConfig.from_pretrained(folder).architectures[0]
cls = AutoModelForCausalLM if arch.endswith("ForCausalLM") else AutoModel
model = cls.from_pretrained(folder, dtype=dtype, quantization_config=CompressedTensorsConfig(run_compressed=False))
sd = model.state_dict()
save_file({n: sd[n].contiguous() for n in json.loads(sys.argv[3])}, sys.argv[4])
"""


def quantized_weights(folder: Path) -> list[str]:
    """Names `<module>.weight` of every module the checkpoint stores quantized."""
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    return sorted(k.rsplit(".", 1)[0] + ".weight" for k in keys if k.endswith(".weight_scale"))


def llmcompressor(
    src: Path, scheme: str, ignore=("lm_head", "model.embed_tokens", "re:.*norm.*"), dequant_dtype: str = "bfloat16"
) -> Path:
    """`model_free_ptq(src, scheme)` output folder, with `dequant.safetensors` holding
    compressed-tensors' own dequantization (through transformers) of every quantized weight."""
    reqs = venvs.requirements("llmcompressor")
    folder = cache_root() / f"llmc-{Path(src).name}-{scheme}-{_key(src, scheme, ignore, dequant_dtype, reqs)}"

    def make(tmp: Path):
        out = tmp / "ckpt"
        venvs.run("llmcompressor", _LLMC_QUANTIZE, str(src), str(out), scheme, ",".join(ignore))
        for p in out.iterdir():
            p.rename(tmp / p.name)
        out.rmdir()
        names = quantized_weights(tmp)
        venvs.run("llmcompressor", _CT_DEQUANT, str(tmp), dequant_dtype, json.dumps(names), str(tmp / DEQUANT))

    return _made(folder, make)


_MODELOPT_QUANTIZE = r"""
import sys, torch
from transformers import AutoModelForCausalLM
import modelopt.torch.quantization as mtq
from modelopt.torch.export import export_hf_checkpoint
torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
ids = torch.randint(0, model.config.vocab_size, (2, 32))
model = mtq.quantize(model, mtq.NVFP4_DEFAULT_CFG, lambda m: m(ids))  # calibrates input_scale too
export_hf_checkpoint(model, export_dir=sys.argv[2])
"""

# ModelOpt's own dequantization of what it exported: NVFP4QTensor.dequantize with the stored
# weight_scale (E4M3) and weight_scale_2 (F32), in bf16 (the model dtype).
_MODELOPT_DEQUANT = r"""
import sys, torch
from safetensors import safe_open
from safetensors.torch import save_file
from modelopt.torch.quantization.qtensor import NVFP4QTensor
out = {}
with safe_open(sys.argv[1] + "/model.safetensors", "pt") as f:
    for k in f.keys():
        if not k.endswith(".weight_scale_2"):
            continue
        m = k[: -len(".weight_scale_2")]
        packed = f.get_tensor(m + ".weight")
        shape = (packed.shape[0], packed.shape[1] * 2)
        q = NVFP4QTensor(torch.Size(shape), torch.bfloat16, packed)
        out[m + ".weight"] = q.dequantize(dtype=torch.bfloat16, scale=f.get_tensor(m + ".weight_scale"),
                                          double_scale=f.get_tensor(k), block_sizes={-1: 16}).contiguous()
save_file(out, sys.argv[2])
"""


def modelopt_nvfp4(src: Path) -> Path:
    """ModelOpt's NVFP4 export of src (weights, weight_scale, weight_scale_2, input_scale,
    hf_quant_config.json), with `dequant.safetensors` from its own NVFP4QTensor.dequantize."""
    reqs = venvs.requirements("modelopt")
    folder = cache_root() / f"modelopt-{Path(src).name}-nvfp4-{_key(src, reqs)}"

    def make(tmp: Path):
        venvs.run("modelopt", _MODELOPT_QUANTIZE, str(src), str(tmp))
        venvs.run("modelopt", _MODELOPT_DEQUANT, str(tmp), str(tmp / DEQUANT))

    return _made(folder, make)


def modelopt_dequantize(folder: Path, out: Path) -> Path:
    """ModelOpt's own NVFP4QTensor.dequantize (bf16) of every NVFP4 weight in any folder in its layout
    (ours included), written to `out` (not cached: the folder is the caller's)."""
    venvs.run("modelopt", _MODELOPT_DEQUANT, str(folder), str(out))
    return out


def gpt_oss_mxfp4(seed: int = 0, experts: int = 4, hidden: int = 64, intermediate: int = 64) -> Path:
    """A one-layer gpt-oss folder whose experts are random MXFP4 blocks / scales (the layout of
    openai/gpt-oss-20b: `*_blocks` U8 [E, N, K/32, 16], `*_scales` U8 [E, N, K/32]), and
    `dequant.safetensors`: the experts as transformers' MXFP4 integration dequantizes them."""
    import torch

    folder = cache_root() / f"gpt-oss-mxfp4-{_key(seed, experts, hidden, intermediate, torch.__version__)}"

    def make(tmp: Path):
        from safetensors.torch import load_file, save_file
        from transformers import AutoModelForCausalLM, GptOssConfig, GptOssForCausalLM, Mxfp4Config

        torch.manual_seed(seed)
        cfg = GptOssConfig(
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=1,
            num_local_experts=experts,
            num_experts_per_tok=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            vocab_size=128,
            max_position_embeddings=4096,
            layer_types=["full_attention"],
        )
        GptOssForCausalLM(cfg).to(torch.bfloat16).save_pretrained(tmp / "dense")
        sd = load_file(tmp / "dense" / "model.safetensors")
        gen = torch.Generator().manual_seed(seed + 1)
        for proj, n, k in [("gate_up_proj", 2 * intermediate, hidden), ("down_proj", hidden, intermediate)]:
            name = f"model.layers.0.mlp.experts.{proj}"
            del sd[name]
            sd[name + "_blocks"] = torch.randint(0, 256, (experts, n, k // 32, 16), generator=gen, dtype=torch.uint8)
            # mostly ordinary exponents, plus the extremes 0 (2^-127) and 254 (2^127) once each
            sc = torch.randint(118, 136, (experts, n, k // 32), generator=gen, dtype=torch.uint8)
            sc[0, 0, 0], sc[0, 1, 0] = 0, 254
            sd[name + "_scales"] = sc
        save_file(sd, tmp / "model.safetensors", metadata={"format": "pt"})
        config = json.loads((tmp / "dense" / "config.json").read_text())
        config["quantization_config"] = {
            "quant_method": "mxfp4",
            "modules_to_not_convert": [
                "model.layers.*.self_attn",
                "model.layers.*.mlp.router",
                "model.embed_tokens",
                "lm_head",
            ],
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        shutil.rmtree(tmp / "dense")
        model = AutoModelForCausalLM.from_pretrained(
            tmp, dtype=torch.bfloat16, quantization_config=Mxfp4Config(dequantize=True)
        )
        experts_mod = model.model.layers[0].mlp.experts
        save_file(
            {
                f"model.layers.0.mlp.experts.{p}": getattr(experts_mod, p).detach().contiguous()
                for p in ("gate_up_proj", "down_proj")
            },
            tmp / DEQUANT,
        )

    return _made(folder, make)


def load_numpy(path, names=None) -> dict[str, np.ndarray]:
    """safetensors -> NumPy with raw dtypes kept (bf16 as ml_dtypes, fp8 as uint8)."""
    import torch
    from safetensors import safe_open

    raw = {torch.bfloat16: (torch.int16, ml_dtypes.bfloat16), torch.float8_e4m3fn: (torch.uint8, np.uint8)}
    out = {}
    with safe_open(path, "pt") as f:
        for k in names or f.keys():
            t = f.get_tensor(k)
            out[k] = t.view(raw[t.dtype][0]).numpy().view(raw[t.dtype][1]) if t.dtype in raw else t.numpy()
    return out


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape, dtype and bytes (NaN- and signed-zero-exact)."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8))
