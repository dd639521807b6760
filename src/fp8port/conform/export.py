"""Write the golden vectors: inputs, expected outputs per target, and a manifest.

DIR/manifest.json                        every case: kind, group, parameters, why, targets
DIR/inputs.{npz,safetensors}             '<case>' -> float32 inputs
DIR/expected/<target>.{npz,safetensors}  '<case>/codes' -> uint8, '<case>/scales' -> uint8 or float32

An expected file has exactly the layout `check` reads, so it is also the example of what an
implementation under test should write. Same arguments, same bytes, on every run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import ConversionError
from .cases import Case, CaseKind, catalogue
from .io import write_npz, write_safetensors
from .targets import BlockTarget, ElementTarget, block_targets, element_targets, expected

LAYOUT = {
    "inputs": "inputs.npz / inputs.safetensors: key '<case>' -> float32 inputs",
    "expected": "expected/<target>.npz / .safetensors: '<case>/codes' -> uint8 codes (one per element, "
    "the inputs' shape); block cases also '<case>/scales' -> uint8 bytes (E8M0, or E4M3 for "
    "NVFP4) or float32 (float32-scale presets), one per block",
    "outputs": "write your implementation's results in the same layout (.npz, .safetensors, or a "
    "directory with <case>/codes.npy and <case>/scales.npy) and run "
    "`fp8port conform check OUTPUTS --against <target>`",
}


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    cases: int
    targets: tuple[str, ...]
    files: tuple[Path, ...]


def _target_params(case: Case, t) -> dict:
    if isinstance(t, ElementTarget):
        return {"target": t.name, "profile": t.profile.name, "rounding": t.rules(case.fmt).rounding.value}
    s = t.scheme(case.role)
    return {
        "target": t.name,
        "preset": t.preset.name,
        "role": case.role.value,
        "rule": s.scale_rule.value,
        "scale_storage": s.storage.value,
    }


def _case_params(case: Case) -> dict:
    if case.kind is CaseKind.ELEMENT:
        return {"format": case.fmt.name}
    s = case.preset.scheme(case.role)
    return {
        "preset": case.preset.name,
        "role": case.role.value,
        "element": s.element.name,
        "block": str(s.block),
        "amax_clamp": s.amax_clamp,
        "preset_rule": s.scale_rule.value,
    }


def export(directory, formats=None, presets=None) -> ExportResult:
    """Write the golden vectors for `formats` and `presets` (None: all; []: none) into `directory`."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ConversionError(f"{d} exists and is not a directory")
    cases = catalogue(formats, presets)
    elem = sorted({c.fmt.name: c.fmt for c in cases if c.kind is CaseKind.ELEMENT}.values(), key=lambda s: s.name)
    pres = list(dict.fromkeys(c.preset.name for c in cases if c.kind is CaseKind.BLOCK))
    targets: list[ElementTarget | BlockTarget] = [*element_targets(elem), *block_targets(pres)]
    (d / "expected").mkdir(parents=True, exist_ok=True)
    files = []
    per_case: dict[str, list] = {c.name: [] for c in cases}
    for t in targets:
        arrays = {}
        for c in (c for c in cases if t.covers(c)):
            e = expected(c, t)
            arrays[f"{c.name}/codes"] = e.codes
            if e.scales is not None:
                arrays[f"{c.name}/scales"] = e.scales
            per_case[c.name].append(_target_params(c, t))
        for suffix, write in ((".npz", write_npz), (".safetensors", write_safetensors)):
            f = d / "expected" / f"{t.name}{suffix}"
            write(f, arrays)
            files.append(f)
    inputs = {c.name: c.inputs for c in cases}
    for f, write in ((d / "inputs.npz", write_npz), (d / "inputs.safetensors", write_safetensors)):
        write(f, inputs)
        files.append(f)
    manifest = {
        "kind": "fp8port-conformance",
        "version": 1,
        "generator": f"fp8port {__version__}",
        "layout": LAYOUT,
        "targets": [
            {
                "name": t.name,
                "kind": "element" if isinstance(t, ElementTarget) else "block",
                "description": (t.profile.description if isinstance(t, ElementTarget) else t.preset.description),
            }
            for t in targets
        ],
        "cases": [
            {
                "name": c.name,
                "kind": c.kind.value,
                "group": c.group,
                "scenario": c.scenario,
                "why": c.why,
                "shape": list(c.inputs.shape),
                "dtype": "float32",
                "params": _case_params(c),
                "expected": per_case[c.name],
            }
            for c in cases
        ],
    }
    mf = d / "manifest.json"
    mf.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    files.append(mf)
    return ExportResult(d, len(cases), tuple(t.name for t in targets), tuple(files))
