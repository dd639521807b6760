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
    with torch.inference_mode():
        t1 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=False)
        gen_s = time.perf_counter() - t1
    new = out[0, ids.shape[1] :]
    text = tok.decode(new, skip_special_tokens=True)
    rate = len(new) / gen_s if gen_s > 0 else float("inf")
    if args.json:
        print_json(
            {
                "model": args.model,
                "mode": args.mode,
                "prompt": args.prompt,
                "text": text,
                "new_tokens": int(len(new)),
                "seconds": round(gen_s, 3),
                "tokens_per_second": round(rate, 2),
                "load_seconds": round(load_s, 2),
                "resident_bytes": resident_bytes(model),
            }
        )
        return 0
    print(text)
    print(
        f"{len(new)} tokens in {gen_s:.2f} s: {rate:.1f} tokens/s; resident weights "
        f"{resident_bytes(model)['total'] / 1e6:.1f} MB"
    )
    return 0
