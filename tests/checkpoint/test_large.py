"""A checkpoint larger than the memory budget converts in bounded memory (streaming, one tensor at a time).

A synthetic 8-shard BF16 checkpoint of 2.1 GB is converted by the CLI in a subprocess; its
peak RSS must stay under 1 GB, i.e. well under the checkpoint's size, which is what proves the
conversion never holds the whole model. ~12 s on 2 CPUs (measured: convert 5.5 s, peak RSS 292 MB).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time

import ml_dtypes
import numpy as np
import pytest

from fp8port.checkpoint.folder import Checkpoint
from fp8port.checkpoint.safetensors_io import Entry, write_file

ROWS, COLS = 4096, 11008  # one Llama-7B MLP matrix: 90 MB in bf16
N_MATRICES, N_SHARDS = 24, 8  # 24 x 90.2 MB = 2.16 GB
RSS_LIMIT_MB = 1024

# A fresh Python parent holds only this one child, so its RUSAGE_CHILDREN peak is the child's own
# (pytest's RUSAGE_CHILDREN would carry the peak of every subprocess any earlier test started).
_MEASURE = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
)
_FP8PORT = "import sys; from fp8port.cli.main import main; sys.exit(main(sys.argv[1:]))"


def _build(root):
    rng = np.random.default_rng(0)
    # one random base, scaled per tensor: the bytes differ per tensor but building stays fast
    base = rng.standard_normal((ROWS, COLS), dtype=np.float32) * 0.02
    per_shard = N_MATRICES // N_SHARDS
    weight_map = {}
    root.mkdir()
    for s in range(N_SHARDS):
        name = f"model-{s + 1:05d}-of-{N_SHARDS:05d}.safetensors"
        entries = []
        for i in range(s * per_shard, (s + 1) * per_shard):
            entries.append(
                Entry(
                    f"model.layers.{i}.mlp.up_proj.weight",
                    "BF16",
                    (ROWS, COLS),
                    lambda k=i: (base * np.float32(1 + k / 64)).astype(ml_dtypes.bfloat16),
                )
            )
            entries.append(
                Entry(
                    f"model.layers.{i}.input_layernorm.weight",
                    "BF16",
                    (ROWS,),
                    lambda: np.ones(ROWS, ml_dtypes.bfloat16),
                )
            )
        write_file(root / name, entries, {"format": "pt"})
        weight_map.update({e.name: name for e in entries})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (root / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": ROWS}))
    return sum(f.stat().st_size for f in root.glob("*.safetensors"))


@pytest.mark.slow
def test_multi_gb_checkpoint_converts_under_1gb_rss(tmp_path):
    try:
        src, dst = tmp_path / "src", tmp_path / "fp8"
        size = _build(src)
        assert size > 2e9 and len(list(src.glob("*.safetensors"))) == N_SHARDS

        t = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                _MEASURE,
                sys.executable,
                "-c",
                _FP8PORT,
                "convert",
                str(src),
                str(dst),
                "--preset",
                "deepseek-v3.1",
                "--shard-size",
                "300MB",
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        secs = time.perf_counter() - t
        assert proc.returncode == 0, proc.stderr[-3000:]
        peak_mb = int(proc.stdout.strip().splitlines()[-1]) / 1024  # ru_maxrss is in KiB on Linux
        print(f"\nconverted {size / 1e9:.2f} GB in {secs:.1f} s, peak RSS {peak_mb:.0f} MB")
        # The bound that matters: a conversion that loaded one shard, let alone the model, would
        # need at least ~270 MB per shard plus the fp32 working copy of each tensor; one-tensor
        # streaming needs a few hundred MB whatever the checkpoint's size.
        assert peak_mb < RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB for a {size / 1e9:.2f} GB checkpoint"

        out = Checkpoint.open(dst)
        assert len(out.files) > 1  # the output is sharded too (--shard-size 300MB over ~1.08 GB)
        w = [n for n in out.tensors if n.endswith("up_proj.weight")]
        assert len(w) == N_MATRICES and {out.info(n).dtype for n in w} == {"F8_E4M3"}
        assert all(
            out.info(n[: -len("weight")] + "weight_scale_inv").shape == (ROWS // 128, math.ceil(COLS / 128)) for n in w
        )
        assert {out.info(n).dtype for n in out.tensors if "layernorm" in n} == {"BF16"}
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)  # 3+ GB: do not leave it to pytest's tmp retention
