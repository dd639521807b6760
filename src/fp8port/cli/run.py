"""`fp8port run MODEL --prompt TEXT`: generate with a converted checkpoint on the CPU."""

from __future__ import annotations

import os
import sys
import time

from .output import print_json

HELP = "generate text with a block-scaled checkpoint (weight-only or w8a8), printing tokens per second"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("run", help=HELP, description=HELP)
    p.add_argument("model", metavar="MODEL", help="a converted (or dense) Hugging Face folder")
    p.add_argument("--prompt", required=True, help="the user message (the chat template is applied when present)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--mode", default="weight-only", help="weight-only (default) | w8a8")
    p.add_argument("--dtype", default=None, help="bf16 | fp32 (default: the checkpoint's)")
    p.add_argument(
        "--engine",
        default="lean",
        choices=["lean", "transformers"],
        help="lean (default): fp8port's decode loop for Llama-shaped models (falls back to transformers' "
        "generate, saying why, for others); transformers: generate",
    )
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; > 0: sample")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="sample from the smallest set holding this mass")
    p.add_argument("--seed", type=int, default=None, help="the sampler's seed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoTokenizer

    from ..nn import load_quantized, resident_bytes

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, None: None}.get(args.dtype, "?")
    if dtype == "?":
        from ..errors import UnknownNameError

        raise UnknownNameError("dtype", args.dtype, ["bf16", "fp32"])
    t0 = time.perf_counter()
    model = load_quantized(args.model, mode=args.mode, dtype=dtype)
    tok = AutoTokenizer.from_pretrained(args.model)
    load_s = time.perf_counter() - t0
    print(f"fp8port: loaded {args.model} in {load_s:.1f} s ({args.mode})", file=sys.stderr)
    if tok.chat_template:
        ids = tok.apply_chat_template(
            [{"role": "user", "content": args.prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )["input_ids"]
    else:
        ids = tok(args.prompt, return_tensors="pt")["input_ids"]
    engine, why = _engine(args.engine, model, ids.shape[1] + args.max_new_tokens)
    if why:
        print(f"fp8port: the lean loop does not run this model ({why}); using transformers' generate", file=sys.stderr)
    sample = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    generate, extra = _generator(engine, model)  # the lean loop's merged projections are made before the clock starts
    t1 = time.perf_counter()
    out = generate(ids, args.max_new_tokens, sample)
    gen_s = time.perf_counter() - t1
    new = out[0, ids.shape[1] :]
    text = tok.decode(new, skip_special_tokens=True)
    rate = len(new) / gen_s if gen_s > 0 else float("inf")
    if args.json:
        print_json(
            {
                "model": args.model,
                "mode": args.mode,
                "engine": engine,
                **({"engine_fallback": why} if why else {}),
                "prompt": args.prompt,
                "text": text,
                "new_tokens": int(len(new)),
                "seconds": round(gen_s, 3),
                "tokens_per_second": round(rate, 2),
                "load_seconds": round(load_s, 2),
                "resident_bytes": resident_bytes(model),
                "decoder_extra_bytes": extra,
            }
        )
        return 0
    print(text)
    print(
        f"{len(new)} tokens in {gen_s:.2f} s: {rate:.1f} tokens/s ({engine}); resident weights "
        f"{resident_bytes(model)['total'] / 1e6:.1f} MB"
        + (f" (+ {extra / 1e6:.1f} MB the lean loop's lm_head screen)" if extra else "")
    )
    return 0


def _engine(asked: str, model, length: int) -> tuple[str, str | None]:
    """(the engine that runs, why the lean loop does not where it was asked for and cannot)."""
    if asked == "transformers":
        return "transformers", None
    from ..nn.decode import unsupported

    why = unsupported(model, length)
    return ("transformers", why) if why else ("lean", None)


def _generator(engine: str, model):
    """(generate(ids, max_new_tokens, sample) -> token ids (1, P + n) on the chosen engine, greedy where
    sample's temperature is 0; the bytes the engine holds beyond the model's weights)."""
    if engine == "lean":
        from ..nn.decode import LeanDecoder

        lean = LeanDecoder(model)
        return (lambda ids, n, sample: lean.generate(ids, n, **sample)), lean.extra_bytes()
    return (lambda ids, n, sample: _transformers(model, ids, n, sample)), 0


def _transformers(model, ids, max_new_tokens: int, sample: dict):
    import torch

    kw = dict(do_sample=False)
    if sample["temperature"] > 0:
        if sample["seed"] is not None:
            torch.manual_seed(sample["seed"])
        kw = dict(do_sample=True, temperature=sample["temperature"], top_p=sample["top_p"])
        kw["top_k"] = sample["top_k"] or None
    with torch.inference_mode():
        return model.generate(ids, max_new_tokens=max_new_tokens, **kw)
