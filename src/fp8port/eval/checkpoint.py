"""evaluate_checkpoint(): a checkpoint as stored, and as each engine holds it after loading, against a reference.

The checkpoint is built by fp8port's own loader (`load_quantized`, every readable layout; never
transformers' quantized loading). The reference is a dense folder (its BF16 original) or, without one,
the checkpoint's own exact dequantization. Variants: "as stored" (the codes and scales on disk), then
one per engine (`--as`), each the stored model with the linears that engine changes swapped for what
the engine holds (`fp8port.engines`). Same measures and report as `evaluate`: perplexity, KL and top-1
against the reference, per-layer weight SQNR, clipping, flush to zero, subnormal codes, an error
histogram, layer sensitivity of the stored checkpoint; plus a section per engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from .. import engines as eng
from ..checkpoint import layouts
from ..checkpoint.folder import Checkpoint
from ..errors import CheckpointError, Fp8portError
from ..nn import FP8Linear, load_quantized
from ..nn.load import set_module, target_linears
from ..quant.metrics import ratio_db
from . import metrics
from .harness import capture_inputs, load_reference, log_probs, swapped
from .pipeline import MB, dense_bf16_bytes, to_stderr
from .report import Report
from .sensitivity import KEEP_SHARE, output_sqnr, scan
from .texts import read_texts, token_batch

STORED = "as stored"
WORST = 5  # layers listed per engine as losing most


def is_quantized(path) -> bool:
    """Whether a folder holds a quantized checkpoint (any layout but dense): eval then evaluates it as one."""
    handler, _ = layouts.detect(Checkpoint.open(path))
    return handler.name is not layouts.LayoutName.DENSE


def _load(ckpt: Checkpoint) -> nn.Module:
    """The checkpoint as fp8port's loader builds it (float32), a causal LM or a typed error."""
    archs = (ckpt.config or {}).get("architectures") or []
    if not any(str(a).endswith("ForCausalLM") for a in archs):
        raise CheckpointError(f"{ckpt.root}: eval needs a causal LM; config.json names architectures {archs}")
    try:
        return load_quantized(ckpt.root, dtype=torch.float32)
    except Fp8portError:
        raise
    except (ValueError, KeyError, TypeError, OSError, RuntimeError) as e:  # transformers cannot build it
        raise CheckpointError(
            f"{ckpt.root}: transformers cannot build the model from its config.json ({' '.join(str(e).split())[:300]})"
        ) from None


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{folder}: no tokenizer that transformers can load ({' '.join(str(e).split())[:200]}); "
            "give a --reference folder that has one"
        ) from None


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    """The quantized linears (FP8Linear) and the dense linears a conversion would quantize, model order."""
    dense = target_linears(model)
    return {n: m for n, m in model.named_modules() if isinstance(m, FP8Linear) or n in dense}


def _stored_values(m: nn.Module) -> np.ndarray:
    return (m.dequantized_weight(torch.float32) if isinstance(m, FP8Linear) else m.weight.detach().float()).numpy()


def _linear(values: np.ndarray, bias) -> nn.Linear:
    lin = nn.Linear(values.shape[1], values.shape[0], bias=bias is not None)
    lin.weight = nn.Parameter(torch.from_numpy(np.ascontiguousarray(values, np.float32)), requires_grad=False)
    if bias is not None:
        lin.bias = nn.Parameter(bias.detach().float().clone(), requires_grad=False)
    return lin.eval()


def _resident(m: nn.Module) -> int:
    if isinstance(m, FP8Linear):
        return m.resident_bytes()
    return m.weight.numel() * 2 + (0 if m.bias is None else m.bias.numel() * 2)  # a dense layer stored as BF16


class _Variant:
    """Per-layer statistics of one variant against the reference weights, one record per layer."""

    KEYS = ("sqnr_db", "max_abs_error", "clipped", "flushed", "subnormal", "changed")

    def __init__(self):
        self.records: list[dict] = []

    def add(self, ref: np.ndarray, values: np.ndarray, stored: np.ndarray, codes: dict, nbytes: int) -> None:
        """codes: clipped / subnormal fractions read off the codes, where the variant holds codes."""
        ref, values = np.asarray(ref, np.float64), np.asarray(values, np.float64)
        n = max(ref.size, 1)
        counts, exact = metrics.error_histogram(ref, values)
        self.records.append(
            {
                "sqnr_db": metrics.sqnr_db(ref, values),
                "max_abs_error": metrics.max_abs_error(ref, values),
                "clipped": codes.get("clipped", 0.0),
                "subnormal": codes.get("subnormal", 0.0),
                "flushed": float(np.count_nonzero((ref != 0) & (values == 0))) / n,
                "changed": float(np.count_nonzero(values != stored)) / n,
                "counts": np.asarray(counts, np.int64),
                "exact": exact,
                "nbytes": int(nbytes),
                "sig": float(np.sum(ref * ref)),
                "err": float(np.sum((ref - values) ** 2)),
            }
        )

    def keep(self, record: dict) -> None:
        """A layer held as stored: the stored checkpoint's record."""
        self.records.append({**record, "changed": 0.0})

    @property
    def stats(self) -> dict[str, list]:
        return {k: [r[k] for r in self.records] for k in self.KEYS}

    def total(self, key):
        return sum(r[key] for r in self.records)

    @property
    def weight_sqnr_db(self) -> float:
        return ratio_db(self.total("sig"), self.total("err"))


def _code_stats(x: np.ndarray, q) -> dict:
    stats, _ = metrics.analyse(x, q)
    return {"clipped": stats["clipped"], "subnormal": stats["subnormal"]}


def evaluate_checkpoint(
    path,
    reference=None,
    engines=(),
    texts=None,
    report_dir=None,
    *,
    max_tokens: int = 512,
    seq_len: int = 128,
    sensitivity_layers: int = 6,
    note: str = "",
    progress: Callable[[str], None] | None = to_stderr,
) -> dict:
    """Fidelity of a checkpoint as stored and as each engine in `engines` holds it (names or a comma list).

    reference: a dense folder of the same model (its BF16 original); None compares with the checkpoint's
    own exact dequantization. Returns the report as a dict; with report_dir, writes index.html and
    report.json there. Typed errors (one line) for a reference that is not dense, a model the reference
    does not match, an engine name, a checkpoint without tokenizer or quantized weights to compare.
    """
    say = progress or (lambda m: None)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    path = Path(path)
    reference = Path(reference) if reference is not None else None
    chosen = eng.parse_list(engines)
    ckpt = Checkpoint.open(path)
    handler, detected = _validate(ckpt, reference, chosen)
    stored_layout, stored_weights = handler.name.value, handler.weights(ckpt)

    say(f"loading {path} ({stored_layout} layout) with fp8port's loader")
    model = _load(ckpt)
    tok = _tokenizer(reference or path)
    batch = token_batch(tok, read_texts(texts), max_tokens, seq_len)
    ids = batch.ids
    if int(ids.max()) >= model.get_input_embeddings().num_embeddings:
        raise CheckpointError(
            f"{path}: the tokenizer of {reference or path} gives token ids beyond the model's "
            f"{model.get_input_embeddings().num_embeddings} embeddings"
        )
    layers = _layers(model)
    names = list(layers)
    if not names:
        raise CheckpointError(f"{path}: no linear layer to compare")
    stored_values = {n: _stored_values(m) for n, m in layers.items()}
    dense = {n: _linear(stored_values[n], m.bias) if isinstance(m, FP8Linear) else m for n, m in layers.items()}
    for n, lin in dense.items():  # the stored values as plain linears: dequantized once for every pass
        set_module(model, n, lin)

    if reference is not None:
        ref_model, ref_w = _reference(reference, path, layers, say)
        say(f"reference pass: {batch.tokens} tokens, {len(names)} linears")
        ref_logp, inputs = capture_inputs(ref_model, ids, names, rows=1)
        stored_logp = log_probs(model, ids)
    else:
        ref_model = None
        ref_w = {
            n: metrics.dequantized(m.weight_q()) if isinstance(m, FP8Linear) else stored_values[n]
            for n, m in layers.items()
        }
        say(f"stored pass (the reference: its own exact dequantization): {batch.tokens} tokens")
        ref_logp, inputs = capture_inputs(model, ids, names, rows=1)
        stored_logp = ref_logp

    ctx = eng.Context.from_config(ckpt.config)
    dense_bytes = dense_bf16_bytes(model, {id(p) for m in dense.values() for p in m.parameters(recurse=False)})
    linear_bf16 = sum(m.out_features * m.in_features * 2 for m in layers.values())
    ref_row = {
        "ppl": metrics.perplexity(ref_logp, ids),
        "weight_mb": (dense_bytes + linear_bf16) / MB,
        "linear_mb": linear_bf16 / MB,
        "label": "unquantized (BF16)" if reference is not None else "exact dequantization",
    }

    stored = _Variant()
    for n, m in layers.items():
        codes = _code_stats(ref_w[n], m.weight_q()) if isinstance(m, FP8Linear) else {}
        stored.add(ref_w[n], stored_values[n], stored_values[n], codes, _resident(m))
    variants, rows = {STORED: stored}, [_row(STORED, stored_logp, ref_logp, ids, stored, dense_bytes)]
    proxies = {n: output_sqnr(inputs[n], torch.from_numpy(ref_w[n]), torch.from_numpy(stored_values[n])) for n in names}

    sections = [
        _run_engine(
            e, stored_weights, model, layers, ctx, ref_w, stored_values, variants, rows, ids, ref_logp, dense_bytes, say
        )
        for e in chosen
    ]

    sensitivity = _sensitivity(ref_model, model, dense, ids, ref_logp, proxies, sensitivity_layers, say)
    sensitivity["full_kl_all_rows"] = rows[0]["kl"]
    del ref_model
    report = Report(
        model=path.name,
        layers=names,
        presets=list(variants),
        modes=["weight-only"],
        texts=batch.describe(),
        reference=ref_row,
        rows=rows,
        layer_stats={v: s.stats for v, s in variants.items()},
        histograms={
            "edges": list(metrics.HIST_EDGES),
            "per_preset": {
                v: {"counts": s.total("counts").tolist(), "exact": s.total("exact")} for v, s in variants.items()
            },
        },
        sensitivity=sensitivity,
        note=note,
        checkpoint={
            "path": str(path),
            "layout": stored_layout,
            "detected_by": detected,
            "reference": str(reference) if reference is not None else None,
            "engines": sections,
        },
    )
    if report_dir is not None:
        html, js = report.write(report_dir)
        say(f"report: {html} (data: {js})")
    return report.to_dict()


def _validate(ckpt: Checkpoint, reference: Path | None, chosen: list) -> tuple[layouts.LayoutHandler, str]:
    """(the checkpoint's layout handler, why) once the arguments fit: a quantized checkpoint for --as or without a
    reference (load_reference checks that the reference is dense)."""
    handler, detected = layouts.detect(ckpt)
    handler.check_source(ckpt)  # a layout fp8port cannot build a model from (GGUF) says so by name
    is_dense = handler.name is layouts.LayoutName.DENSE
    if chosen and is_dense:
        raise CheckpointError(f"{ckpt.root} is dense; --as evaluates how engines load a quantized checkpoint")
    if reference is None and is_dense:
        raise CheckpointError(
            f"{ckpt.root} is dense: compare it with --reference DENSE, or evaluate presets on it "
            "(fp8port eval MODEL --presets ...)"
        )
    return handler, detected


def _reference(reference: Path, path: Path, layers: dict, say) -> tuple[nn.Module, dict]:
    """The reference model (float32) and its weight of every compared linear, checked against the checkpoint."""
    say(f"reference {reference}")
    ref_model, _ = load_reference(reference)
    ref_w = {}
    for n, m in layers.items():
        try:
            r = ref_model.get_submodule(n)
        except AttributeError:
            r = None
        if not isinstance(r, nn.Linear) or tuple(r.weight.shape) != (m.out_features, m.in_features):
            raise CheckpointError(
                f"--reference {reference} does not match {path}: it has no linear {n} of shape "
                f"{[m.out_features, m.in_features]}"
            )
        ref_w[n] = r.weight.detach().numpy()  # float32: BF16 widened exactly
    return ref_model, ref_w


def _run_engine(
    e: eng.Engine,
    stored_weights,
    model,
    layers,
    ctx,
    ref_w,
    stored_values,
    variants,
    rows,
    ids,
    ref_logp,
    dense_bytes,
    say,
) -> dict:
    """One engine: its plan, then (where it loads the checkpoint) what it holds, one forward pass, its row."""
    say(f"{e.name}: planning {len(layers)} linears")
    section, swaps = _engine(e, stored_weights, layers, ctx, ref_w, stored_values, variants[STORED], variants)
    if swaps is None:
        say(f"{e.name}: {section['message']}")
        return section
    say(f"{e.name}: forward pass ({len(swaps)} linears changed)")
    with swapped(model, swaps):
        logp = log_probs(model, ids)
    rows.append(_row(e.name, logp, ref_logp, ids, variants[e.name], dense_bytes))
    return {**section, **{k: rows[-1][k] for k in ("ppl", "kl", "top1", "weight_sqnr_db")}}


def _row(name: str, logp, ref_logp, ids, v: _Variant, dense_bytes: int) -> dict:
    return {
        "preset": name,
        "mode": "weight-only",
        "ppl": metrics.perplexity(logp, ids),
        "kl": metrics.kl_divergence(ref_logp, logp),
        "top1": metrics.top1_agreement(ref_logp, logp),
        "weight_mb": (dense_bytes + v.total("nbytes")) / MB,
        "linear_mb": v.total("nbytes") / MB,
        "weight_sqnr_db": v.weight_sqnr_db,
    }


def _covered(name: str, covered: set[str]) -> bool:
    """Whether a stored weight's module is one of the compared linears (names may differ by a base prefix)."""
    mod = name.removesuffix(".weight")
    return mod in covered or any(c.endswith("." + mod) or mod.endswith("." + c) for c in covered)


def _engine(
    e: eng.Engine,
    stored_weights: dict,
    layers: dict,
    ctx: eng.Context,
    ref_w: dict,
    stored_values: dict,
    stored: _Variant,
    variants: dict,
) -> tuple[dict, dict | None]:
    """(the engine's section, {layer: module it holds} for the changed layers), or None for the modules
    when the engine does not load the checkpoint, fp8port does not model how it would, or it changes
    weights the eval does not swap (3-D experts)."""
    plans = {n: e.plan(w, ctx) for n, w in stored_weights.items()}
    section = {
        "engine": e.name,
        "summary": e.summary,
        "source": e.source,
        "counts": {a.value: sum(s.action is a for s in plans.values()) for a in eng.Action},
        "reasons": sorted({s.why for s in plans.values()}),
    }
    failed = [n for n, s in plans.items() if s.action is eng.Action.FAIL]
    covered = {n for n, m in layers.items() if isinstance(m, FP8Linear)}
    beyond = [n for n, s in plans.items() if s.changes and not _covered(n, covered)]
    if failed:
        section.update(
            status="no figures",
            message=f"{failed[0]}: {plans[failed[0]].why}"
            + (f" (and {len(failed) - 1} more weights)" if len(failed) > 1 else ""),
        )
        return section, None
    if beyond:
        section.update(
            status="no figures",
            message=f"{beyond[0]}: {plans[beyond[0]].why}; eval applies engine "
            f"transforms to 2-D linears only (rescale --to {e.name}, then eval the result)",
        )
        return section, None
    steps = {
        n: e.plan(SimpleNamespace(name=f"{n}.weight", shape=(m.out_features, m.in_features), scheme=m.scheme), ctx)
        if isinstance(m, FP8Linear)
        else eng.Step(eng.Action.KEEP, "dense in the checkpoint")
        for n, m in layers.items()
    }
    v, swaps = _Variant(), {}
    for i, (n, m) in enumerate(layers.items()):
        s = steps[n]
        if not s.changes:  # the engine multiplies by the stored values
            v.keep(stored.records[i])
            continue
        held = e.apply(s, m.weight_q(), ctx)
        codes = {}
        if held.q is not None:  # clipping by the engine's own requantization, of what it quantized
            codes = _code_stats(held.values if held.quantized_from is None else held.quantized_from, held.q)
        v.add(ref_w[n], held.values, stored_values[n], codes, held.nbytes)
        swaps[n] = _linear(held.values, m.bias)
    variants[e.name] = v
    st = v.stats
    drop = [(n, stored.stats["sqnr_db"][i], st["sqnr_db"][i]) for i, n in enumerate(layers) if st["changed"][i] > 0]
    drop.sort(key=lambda t: (t[2] - t[1] if np.isfinite(t[1]) else t[2], t[0]))
    section.update(
        status="evaluated",
        worst=[
            {"layer": n, "stored_sqnr_db": a, "sqnr_db": b, "changed": st["changed"][list(layers).index(n)]}
            for n, a, b in drop[:WORST]
        ],
    )
    return section, swaps


def _sensitivity(ref_model, model, layers, ids, ref_logp, proxies, top_k, say) -> dict:
    """The stored checkpoint's layers one at a time in the reference model (none without a reference:
    the stored checkpoint is then its own reference)."""
    sens_ids, sens_ref = ids[:1], ref_logp[:1]
    base = {
        "preset": STORED,
        "tokens": int(sens_ids.numel()),
        "measured": [],
        "keep": [],
        "keep_share": KEEP_SHARE,
        "full_kl": 0.0,
    }
    if ref_model is None or top_k <= 0:
        return base
    with torch.inference_mode():
        full_kl = metrics.kl_divergence(sens_ref, log_probs(model, sens_ids))
    say(f"sensitivity scan of the stored checkpoint: {top_k} layers")
    result = scan(ref_model, sens_ids, sens_ref, proxies, lambda n: layers[n], full_kl, top_k, say)
    return {**base, **result, "full_kl": full_kl}
