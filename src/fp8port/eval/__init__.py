"""Fidelity of a real model under each block-scaled format: metrics, sensitivity, a report.

`evaluate(model_path, presets=..., texts=..., modes=("weight-only", "w8a8"), report_dir=None)`
returns the report as a dict (see report.Report) and writes index.html + report.json;
`evaluate_checkpoint(ckpt, reference=None, engines=(...))` does it for a quantized checkpoint as stored
and as each engine holds it after loading.
"""

from .checkpoint import evaluate_checkpoint, is_quantized
from .pipeline import DEFAULT_PRESETS, evaluate
from .report import Report

__all__ = ["DEFAULT_PRESETS", "Report", "evaluate", "evaluate_checkpoint", "is_quantized"]
