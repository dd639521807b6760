"""evaluate(): one reference pass, then every preset x mode, per-layer statistics, sensitivity."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..nn import FP8Linear, Mode
from ..nn.load import target_linears
from ..quant import get_preset, quantize
from ..quant.metrics import ratio_db
from . import metrics
from .harness import capture_inputs, load_reference, log_probs, swapped
from .report import Report
from .sensitivity import output_sqnr, scan
from .texts import read_texts, token_batch

DEFAULT_PRESETS = ("deepseek-v3", "deepseek-v3.1", "mxfp8", "mxfp4", "nvfp4", "hif8")
MB = 1e6


def to_stderr(message: str) -> None:
    print(f"fp8port eval: {message}", file=sys.stderr, flush=True)


def dense_bf16_bytes(model, skip: set[int]) -> int:
    """Bytes of every parameter outside the quantized linears, stored as BF16 (tied once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen and id(p) not in skip:
            seen.add(p.data_ptr())
            total += p.numel() * 2
    return total


def evaluate(
    model_path,
    presets=DEFAULT_PRESETS,
    texts=None,
    modes=("weight-only", "w8a8"),
    report_dir=None,
    *,
    max_tokens: int = 512,
    seq_len: int = 128,
    sensitivity_preset: str | None = None,
    sensitivity_layers: int = 6,
    note: str = "",
    extra: dict | None = None,
    progress: Callable[[str], None] | None = to_stderr,
) -> dict:
    """Fidelity of a causal LM (Hugging Face folder) under each preset and mode.

    texts: files to evaluate on (default: /usr/share/common-licenses). The first `max_tokens`
    tokens are used, in rows of `seq_len`. sensitivity_preset: the preset whose layers are
    scanned (default: the one with the largest weight-only KL). note / extra: shown in the
    report (the demo adds the model's provenance and its generations). Returns the report as a dict
    and, with report_dir, writes index.html and report.json there.
    """
    say = progress or (lambda m: None)
    torch.manual_seed(0)
    presets = [get_preset(p) for p in presets]
    modes = [Mode.parse(m) for m in modes]
    model_path = Path(model_path)

    say(f"loading {model_path}")
    model, tok = load_reference(model_path)
    batch = token_batch(tok, read_texts(texts), max_tokens, seq_len)
    linears = target_linears(model)
    names = list(linears)
    say(
        f"reference pass: {batch.tokens} tokens in {batch.ids.shape[0]} rows of {batch.ids.shape[1]}, "
        f"{len(names)} linears to quantize"
    )
    ref_logp, inputs = capture_inputs(model, batch.ids, names, rows=1)
    sens_ids, sens_ref = batch.ids[:1], ref_logp[:1]
    dense_bytes = dense_bf16_bytes(
        model, {id(m.weight) for m in linears.values()} | {id(m.bias) for m in linears.values() if m.bias is not None}
    )
    linear_bf16 = sum(m.weight.numel() * 2 + (0 if m.bias is None else m.bias.numel() * 2) for m in linears.values())
    reference = {
        "ppl": metrics.perplexity(ref_logp, batch.ids),
        "weight_mb": (dense_bytes + linear_bf16) / MB,
        "linear_mb": linear_bf16 / MB,
    }

    rows, layer_stats, histograms, proxies = [], {}, {}, {}
    for preset in presets:
        say(f"{preset.name}: quantizing {len(names)} linears")
        stats = {k: [] for k in ("sqnr_db", "max_abs_error", "clipped", "flushed", "subnormal", "out_sqnr_db")}
        counts, exact, sig, err = np.zeros(len(metrics.HIST_EDGES) - 1, np.int64), 0, 0.0, 0.0
        quantized = {}
        for name in names:
            w = linears[name].weight.detach()
            q = quantize(w, preset.weight, role="weight")
            quantized[name] = q
            wnp = w.numpy().astype(np.float64)
            layer, wq = metrics.analyse(wnp, q)
            for k, v in layer.items():
                stats[k].append(v)
            stats["out_sqnr_db"].append(output_sqnr(inputs[name], w, torch.from_numpy(wq)))
            c, e = metrics.error_histogram(wnp, wq)
            counts += c
            exact += e
            sig += float(np.sum(wnp * wnp))
            err += float(np.sum((wnp - wq) ** 2))
        layer_stats[preset.name] = stats
        histograms[preset.name] = {"counts": counts.tolist(), "exact": exact}
        proxies[preset.name] = dict(zip(names, stats["out_sqnr_db"]))
        for mode in modes:
            act = preset.activation if mode is Mode.W8A8 else None
            layers = {n: FP8Linear.from_quantized(q, linears[n].bias, mode, act) for n, q in quantized.items()}
            say(f"{preset.name} {mode.value}: forward pass")
            with swapped(model, layers):
                logp = log_probs(model, batch.ids)
            fp8_bytes = sum(m.resident_bytes() for m in layers.values())
            rows.append(
                {
                    "preset": preset.name,
                    "mode": mode.value,
                    "ppl": metrics.perplexity(logp, batch.ids),
                    "kl": metrics.kl_divergence(ref_logp, logp),
                    "top1": metrics.top1_agreement(ref_logp, logp),
                    "weight_mb": (dense_bytes + fp8_bytes) / MB,
                    "linear_mb": fp8_bytes / MB,
                    "weight_sqnr_db": ratio_db(sig, err),
                }
            )
            del logp

    wo = [r for r in rows if r["mode"] == Mode.WEIGHT_ONLY.value] or rows
    sens_name = get_preset(sensitivity_preset).name if sensitivity_preset else max(wo, key=lambda r: r["kl"])["preset"]
    sens_preset = get_preset(sens_name)
    if sens_name not in proxies:
        raise ValueError(f"sensitivity preset {sens_name!r} is not among the evaluated presets")
    say(
        f"sensitivity scan with {sens_name}: {sensitivity_layers} layers (worst output SQNR), {sens_ids.numel()} tokens"
    )
    sens_row = next(r for r in wo if r["preset"] == sens_name)
    # the full-model KL on the same rows as the per-layer measures, so the shares compare
    full = {n: FP8Linear.from_linear(linears[n], sens_preset) for n in names}
    with swapped(model, full):
        full_kl = metrics.kl_divergence(sens_ref, log_probs(model, sens_ids))
    sensitivity = scan(
        model,
        sens_ids,
        sens_ref,
        proxies[sens_name],
        lambda n: FP8Linear.from_linear(linears[n], sens_preset),
        full_kl,
        sensitivity_layers,
        say,
    )
    sensitivity.update(
        {"preset": sens_name, "tokens": int(sens_ids.numel()), "full_kl": full_kl, "full_kl_all_rows": sens_row["kl"]}
    )

    report = Report(
        model=model_path.name,
        layers=names,
        presets=[p.name for p in presets],
        modes=[m.value for m in modes],
        texts=batch.describe(),
        reference=reference,
        rows=rows,
        layer_stats=layer_stats,
        histograms={"edges": list(metrics.HIST_EDGES), "per_preset": histograms},
        sensitivity=sensitivity,
        note=note,
        extra=dict(extra or {}),
    )
    if report_dir is not None:
        html, js = report.write(report_dir)
        say(f"report: {html} (data: {js})")
    return report.to_dict()
