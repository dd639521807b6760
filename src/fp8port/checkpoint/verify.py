"""`--verify`: reload every written tensor and compare it with the source."""

from __future__ import annotations

import numpy as np

from ..quant import dequantize
from .folder import Checkpoint
from .layouts import SCALE_NAME, Layout, read_quantized, reader_scheme
from .plan import Action, Plan
from .produce import sqnr
from .safetensors_io import DTYPES

def verify_output(src: Checkpoint, out: Checkpoint, plan: Plan) -> dict:
    """Reload every written tensor and compare it with the source: bytes for copies, exact
    values where the path is lossless, error statistics where it is not."""
    failures, stats = [], {}
    out_layout = plan.target.layout if plan.target else Layout.DENSE
    if Layout.ASCEND in (out_layout, plan.read_layout):
        from . import ascend

        return ascend.verify_output(src, out, plan)
    for job in plan.jobs:
        n = job.source
        if job.action is Action.COPY:
            if not np.array_equal(src.read(n).view(np.uint8), out.read(n).view(np.uint8)):
                failures.append(f"{n}: copy differs")
            continue
        if out_layout is Layout.DENSE:
            got = out.read(n).astype(np.float32)
        else:
            sname = n[: -len(".weight")] + "." + SCALE_NAME[out_layout]
            got = np.asarray(dequantize(read_quantized(out, n, sname, out_layout, reader_scheme(out, out_layout)),
                                        "float32"))
        if plan.read_layout is Layout.DENSE:
            ref = src.read(n).astype(np.float32)
        else:
            ref = np.asarray(dequantize(read_quantized(src, n, job.scale, plan.read_layout,
                                                       reader_scheme(src, plan.read_layout)), "float32"))
        if out_layout is Layout.DENSE:  # dequant: compare in the output dtype
            ref = ref.astype(DTYPES[job.outputs[0][1]][0]).astype(np.float32)
        exact = bool(np.array_equal(got, ref, equal_nan=True))
        lossless = job.action in (Action.DEQUANTIZE, Action.REPLICATE)
        err = got.astype(np.float64) - ref
        stats[n] = {"exact": exact, "max_abs_error": float(np.nanmax(np.abs(err))) if err.size else 0.0,
                    "sqnr_db": sqnr(ref, np.nan_to_num(err))}
        if lossless and not exact:
            failures.append(f"{n}: expected an exact round trip, max error {stats[n]['max_abs_error']:.3g}")
    return {"ok": not failures, "failures": failures, "tensors": stats}
