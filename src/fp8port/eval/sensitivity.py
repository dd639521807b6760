"""Layer sensitivity: which single layers cost the most when quantized, bounded in time.

Measuring every layer alone costs one forward pass each (210 on SmolLM2). Instead:
 1. a proxy for every layer: the SQNR of the layer's own output, X W^T against X Wq^T, with
    X its real input captured from the reference pass (one matmul per layer, no forward);
 2. the `top_k` layers with the worst proxy get the real measure: only that layer quantized,
    everything else as in the reference, ΔKL = KL(reference || that model) on the
    sensitivity rows.
A layer is named "keep in higher precision" when it alone causes at least KEEP_SHARE of the
KL of the fully quantized model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .harness import log_probs, swapped
from .metrics import kl_divergence, sqnr_db

KEEP_SHARE = 0.10


def output_sqnr(x: torch.Tensor, w: torch.Tensor, wq: torch.Tensor) -> float:
    """SQNR (dB) of the layer output X W^T when W is replaced by its dequantized Wq."""
    with torch.inference_mode():
        x = x.double()
        return sqnr_db((x @ w.double().T).numpy(), (x @ wq.double().T).numpy())


def scan(
    model,
    ids: torch.Tensor,
    ref_logp: torch.Tensor,
    proxies: dict[str, float],
    make_layer: Callable[[str], torch.nn.Module],
    full_kl: float,
    top_k: int,
    progress: Callable[[str], None] = lambda m: None,
) -> dict:
    """ΔKL for the `top_k` layers with the lowest proxy SQNR; the keep list."""
    ranked = sorted(proxies, key=lambda n: (proxies[n], n))[: max(0, top_k)]
    rows = []
    for i, name in enumerate(ranked):
        progress(f"sensitivity {i + 1}/{len(ranked)}: {name}")
        with swapped(model, {name: make_layer(name)}):
            d = kl_divergence(ref_logp, log_probs(model, ids))
        rows.append({"layer": name, "proxy_out_sqnr_db": proxies[name], "delta_kl": d})
    rows.sort(key=lambda r: (-r["delta_kl"], r["layer"]))
    keep = [r["layer"] for r in rows if full_kl > 0 and r["delta_kl"] >= KEEP_SHARE * full_kl]
    return {"measured": rows, "keep": keep, "keep_share": KEEP_SHARE}
