"""`--verify`: reload every written tensor and compare it with the source."""

from __future__ import annotations

import numpy as np

from ..quant.metrics import sqnr_db
from ..quant.relayout import widen
from . import layouts
from .folder import Checkpoint
from .layouts import Action
from .plan import Plan
from .produce import dense_source
from .safetensors_io import DTYPES

EXACT = (Action.DEQUANTIZE, Action.REPLICATE, Action.CAST)  # lossless (dense ones: in the dtype written)


def verify_output(src: Checkpoint, out: Checkpoint, plan: Plan) -> dict:
    """Reload every written tensor and compare it with the source: bytes for copies, exact values
    where the step is lossless (dequantize, re-layout), SQNR and max error where it is not."""
    reader, writer = layouts.get(plan.read_layout), layouts.get(plan.layout_out)
    written = writer.weights(out)
    failures, stats = [], {}
    model = DTYPES[layouts.Source(src, plan.read_layout, {}).model_dtype][0]  # what loaders compute in
    for job in plan.jobs:
        n = job.source
        if job.action is Action.COPY:
            want = src.read(n).astype(DTYPES[job.outputs[0][1]][0], copy=False)
            if not np.array_equal(want.view(np.uint8), out.read(job.outputs[0][0]).view(np.uint8)):
                failures.append(f"{n}: copy differs")
            continue
        # a weight is found under its source name, or its codes tensor's where the layout renames it (GGUF)
        first = job.outputs[0][0]
        key = n if n in written else first
        got = (
            np.asarray(writer.values(out, written[key]), np.float32)
            if key in written
            else out.read(first).astype(np.float32)
        )
        if job.weight is not None:
            ref = np.asarray(reader.values(src, job.weight), np.float32)
        else:
            ref = dense_source(src, n, plan.options.nonfinite).astype(np.float32)
        if job.action in (Action.DEQUANTIZE, Action.CAST):  # compare in the dense dtype written
            ref = ref.astype(DTYPES[job.outputs[0][1]][0]).astype(np.float32)
        exact = bool(np.array_equal(got, ref, equal_nan=True))
        with np.errstate(invalid="ignore"):  # Inf - Inf where both overflowed (E8M0 254 x 6)
            err = np.nan_to_num(got.astype(np.float64) - ref)
        stats[n] = {
            "exact": exact,
            "max_abs_error": float(np.max(np.abs(err), initial=0.0)),
            "sqnr_db": round(sqnr_db(np.nan_to_num(ref), np.nan_to_num(ref) + err), 3),
        }
        # a widened FP4 weight must be exact wherever DeepSeek's rule keeps every value
        expect = job.action in EXACT or (
            job.action is Action.WIDEN and widen(reader.read(src, job.weight), job.scheme)[1]
        )
        if expect and not exact:
            failures.append(f"{n}: expected an exact round trip, max error {stats[n]['max_abs_error']:.3g}")
        if job.action is Action.RECIPROCAL:  # codes kept: at most a float32 rounding of the multiplier apart
            stats[n]["exact_in_" + model.name] = bool(np.array_equal(got.astype(model), ref.astype(model)))
            if not np.allclose(got, ref, rtol=2.0**-21, atol=0, equal_nan=True):
                failures.append(f"{n}: the codes were kept, yet values moved by more than a float32 rounding")
    return {"ok": not failures, "failures": failures, "tensors": stats}
