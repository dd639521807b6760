"""llama.cpp (llama-cpp-python) as the judge of a GGUF file: run inside the `llamacpp` peer venv.

    python llamacpp_driver.py REQUEST.json   ->  JSON on stdout

REQUEST: {"quantize": [src, dst, ftype] (optional: llama.cpp's own quantizer first), "model": path,
"n_ctx": 512, "tokenize": [text, ...], "generate": [[ids], ...], "new_tokens": 32, "eos": id,
"rows": [[ids], ...]}. Answers: "tokens" (llama.cpp's own tokenization, BOS as the file's
metadata says, special tokens parsed), "generated" (greedy: argmax of llama.cpp's logits, token by
token, stopping after `eos`), "nll" / "count" (summed negative log-likelihood of every next token of
every row, each row evaluated from an empty cache with all logits kept), "logits_out" (the first row's
logits, saved as .npy to the path the request names), "system" (llama.cpp's system info line). No fp8port
import: this process sees only llama.cpp.
"""

import json
import sys

import numpy as np
from llama_cpp import Llama, llama_print_system_info


def quantize(src, dst, ftype):
    """llama.cpp's own quantizer (llama_model_quantize, what `llama-quantize` runs) on a whole file."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{ftype}")
    params.nthread = 2
    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params) != 0:
        raise SystemExit(f"llama_model_quantize failed on {src}")


def main(path):
    req = json.loads(open(path).read())
    if "quantize" in req:
        quantize(*req["quantize"])
    if "model" not in req:
        return print(json.dumps({}))
    n_ctx = int(req.get("n_ctx", 512))
    llm = Llama(
        model_path=req["model"], n_ctx=n_ctx, n_batch=n_ctx, n_threads=2, logits_all=True, verbose=False, seed=0
    )
    out = {"system": llama_print_system_info().decode(errors="replace").strip()}
    out["tokens"] = [llm.tokenize(t.encode("utf-8"), add_bos=True, special=True) for t in req.get("tokenize", [])]
    gens = []
    for ids in req.get("generate", []):
        llm.reset()
        llm.eval(ids)
        got = []
        for _ in range(int(req.get("new_tokens", 32))):
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            got.append(tok)
            if tok == req.get("eos"):
                break
            llm.eval([tok])
        gens.append(got)
    out["generated"] = gens
    nll, count = 0.0, 0
    for row in req.get("rows", []):
        llm.reset()
        llm.eval(row)
        logits = np.asarray(llm.scores[: len(row)], np.float64)
        m = logits.max(axis=-1, keepdims=True)
        logp = logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))
        nll -= float(logp[np.arange(len(row) - 1), np.asarray(row[1:])].sum())
        count += len(row) - 1
        if req.get("logits_out") and not out.get("logits_out"):
            np.save(req["logits_out"], logits)
            out["logits_out"] = req["logits_out"]
    out["nll"], out["count"] = nll, count
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
