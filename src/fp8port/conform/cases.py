"""The case catalogue: adversarial inputs generated from our own format specs and presets.

A case is one named input array. Element cases probe one format's cast (every code's value,
every tie, ties +-1 ulp, overflow, specials, underflow, random); block cases probe one preset's
scheme for one role (amax at max*2^k +-1 ulp, zero and tiny blocks, subnormals, outliers,
partial blocks, NaN/Inf, float-log2 near-ties, ...). What a case *should* give depends on the
target (profile and rounding, or preset and scale rule): see targets.py. Everything here is
deterministic: fixed seeds derived from the case name.
"""

from __future__ import annotations

import enum
import math
import zlib
from dataclasses import dataclass

import numpy as np

from ..formats import FORMATS, FormatSpec, get_format
from ..quant import PRESETS, Preset, Role, get_preset
from ..quant.scheme import BlockKind, Scheme

F32 = np.float32


class CaseKind(enum.Enum):
    ELEMENT = "element"
    BLOCK = "block"


@dataclass(frozen=True, eq=False)
class Case:
    name: str  # "element/float8_e4m3fn/ties", "block/mxfp8/activation/zero_blocks"
    kind: CaseKind
    group: str  # "float8_e4m3fn" or "mxfp8/activation": what identify scores together
    scenario: str  # the last name part, e.g. "zero_blocks"
    why: str
    inputs: np.ndarray  # float32
    fmt: FormatSpec | None = None  # element cases
    preset: Preset | None = None  # block cases
    role: Role | None = None


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def _f32(values) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float64).astype(F32)


def _ulps(x: np.ndarray) -> np.ndarray:
    """x, then one float32 ulp below and above every value."""
    x = _f32(x)
    return np.concatenate([x, np.nextafter(x, F32(-np.inf)), np.nextafter(x, F32(np.inf))])


# ---------------------------------------------------------------- element cases


def _finite_values(spec: FormatSpec) -> np.ndarray:
    v = spec.values[np.isfinite(spec.values)]
    return np.unique(v)  # sorted, -0 and +0 merged


def _element_inputs(spec: FormatSpec) -> list[tuple[str, str, np.ndarray]]:
    v = _finite_values(spec)
    pos = v[v > 0]
    mids = (v[:-1] + v[1:]) / 2  # exact in float32 for every format here
    top = spec.max + 2.0 ** float(spec.quantum_exp(np.array(spec.emax))) / 2  # half a step past max
    past = np.array([top, top * (1 + 2**-20), spec.max * 2, spec.max * 4, 1e30, float(np.finfo(F32).max)])
    small = pos[0] / 2
    rng = _rng("element/" + spec.name)
    lo, hi = math.log2(pos[0]), math.log2(spec.max)
    rand = np.exp2(rng.uniform(lo - 2, hi + 1, 512)) * rng.choice([-1.0, 1.0], 512)
    return [
        (
            "codes",
            "every finite code's own value must come back as that code (both zeros included)",
            _f32(np.concatenate([spec.values[np.isfinite(spec.values)], [-0.0]])),
        ),
        ("ties", "every midpoint between adjacent values: RNE vs ties-away vs truncation (D8)", _f32(mids)),
        (
            "near_ties",
            "every midpoint one float32 ulp below and above: only the nearest value is right",
            _ulps(mids)[len(mids) :],
        ),
        (
            "overflow",
            "past the largest value: the half-step tie, just past it, 2x, 1e30, float32 max "
            "(saturate vs Inf vs NaN, D5/D6/D9)",
            _f32(np.concatenate([past, -past])),
        ),
        (
            "specials",
            "+-0, +-Inf, NaN, -NaN: signed zero, Inf handling and the NaN byte (D5-D7, D9, D10)",
            _f32([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan]),
        ),
        (
            "underflow",
            "half the smallest value (a tie with zero) and +-1 ulp, the smallest float32 subnormal, negatives",
            _f32(np.concatenate([_ulps([small]), -_ulps([small]), [1e-45, -1e-45]])),
        ),
        ("random", "512 log-uniform values across the whole range, both signs", _f32(rand)),
    ]


def element_cases(fmt) -> list[Case]:
    spec = get_format(fmt)
    return [
        Case(f"element/{spec.name}/{s}", CaseKind.ELEMENT, spec.name, s, why, x, fmt=spec)
        for s, why, x in _element_inputs(spec)
    ]


# ---------------------------------------------------------------- block cases


def _contents(scheme: Scheme) -> list[tuple[str, str, list[np.ndarray]]]:
    """Scenario name, why, and one 1-D array of leading values per block (filled later)."""
    e = scheme.element
    m, emax = e.max, e.emax
    nxt = lambda x, j: float(_f32(x) if j == 0 else np.nextafter(_f32(x), F32(np.inf if j > 0 else -np.inf)))  # noqa: E731

    def up(x, j):
        a = _f32(x)
        for _ in range(j):
            a = np.nextafter(a, F32(np.inf))
        return float(a)

    one = lambda *vals: np.array(vals, dtype=np.float64)  # noqa: E731
    gap = 2.0 ** (emax + 1) - m
    near = [(-9, 1), (-9, 2), (-9, 4), (4, 1), (-17, 1), (-17, 5), (-17, 6), (20, 3)]
    return [
        (
            "pow2_max",
            "T3/D1: amax exactly max*2^k and one float32 ulp either side: the ceil boundary of "
            "RCEIL/UE8M0, and CEIL moves amax = max*2^k a binade up",
            [one(nxt(m * 2.0**k, j), -m * 2.0**k / 2, 2.0**k) for k in (-9, 0, 3) for j in (-1, 0, 1)],
        ),
        (
            "pow2_binade",
            "FLOOR/EVEN boundaries: amax exactly 2^(emax+k) and one ulp either side",
            [one(nxt(2.0 ** (emax + k), j), 2.0 ** (emax + k - 3)) for k in (-4, 0) for j in (-1, 0, 1)],
        ),
        (
            "above_max",
            "D1: amax between max and 2^(emax+1): FLOOR leaves it above max (elements must "
            "saturate), EVEN protects only part of it, RCEIL/CEIL move a binade up",
            [one(m + gap * f, -(m + gap * f)) for f in (0.25, 0.5, 0.75)],
        ),
        (
            "zero_blocks",
            "D2/T1: all-zero blocks: the 1e-4 clamp gives DeepSeek 2^-22 (0x69); OCP-style "
            "rules follow amax to 2^-127 (0x00); float log2 gives 0/0",
            [one(0.0), one(-0.0), one(0.0, -0.0)],
        ),
        (
            "tiny_blocks",
            "D2/T4: amax under, at and just around the 1e-4 clamp",
            [one(5e-5, -3e-5, 1e-6), one(1e-6), one(nxt(1e-4, -1)), one(1e-4), one(nxt(1e-4, 1))],
        ),
        (
            "subnormal_blocks",
            "D4b/T5: amax 2^-120 (scale code 0x00 = 2^-127), 2^-126, and float32 subnormal data 2^-130, 2^-149",
            [one(2.0**-120), one(2.0**-126, -(2.0**-127)), one(2.0**-130, -(2.0**-133), 3 * 2.0**-132), one(2.0**-149)],
        ),
        (
            "outliers",
            "T7: one outlier (1000/448 * max) pushes the rest of the block to zero and subnormal codes",
            [
                one(*(np.array([1000, 0.001, -0.001, 0.002, 0.004, 0.008, 0.1]) * m / 448)),
                one(-m * 64, *(np.linspace(-1, 1, 9) * m / 1000)),
            ],
        ),
        (
            "element_ties",
            "T12/D8: amax = max, so the scale is 1 under most rules, then element midpoints: "
            "ties created inside a block",
            [one(m, *(_element_inputs(e)[1][2][::-1][:20]))],
        ),
        (
            "log2_near_ties",
            "T6/D4a: amax = max*2^k plus 1-6 float32 ulps: float32 log2 of amax/max rounds "
            "to the integer k, so a float-log2 ceil picks a scale one binade too small",
            [one(up(m * 2.0**k, j), m * 2.0**k / 3) for k, j in near],
        ),
        (
            "nan_blocks",
            "D3/T14: a NaN in the block: scale 0xFF (OCP), 2^127 (DeepGEMM bitwise), or NaN everywhere (float rules)",
            [one(np.nan, 1.0, -2.0), one(1.0, -np.nan, 0.5)],
        ),
        (
            "inf_blocks",
            "D3/T14: +-Inf in the block: NaN block, 2^127, or a finite scale; and the element "
            "cast of Inf (saturate vs NaN)",
            [one(np.inf, 1.0, -2.0), one(-np.inf, 1.0)],
        ),
        (
            "huge_blocks",
            "T10: amax near the float32 maximum: scale exponent 127 and its clamp",
            [one(3.0e38, -1.0), one(float(np.finfo(F32).max)), one(2.0**127 * 1.5)],
        ),
        (
            "random",
            "heavy-tailed random blocks at magnitudes 2^-20..2^20",
            [np.array([2.0**s]) for s in (-20, -3, 0, 7, 20)],
        ),
    ]


def _fill(lead: np.ndarray, width: int, rng: np.random.Generator) -> np.ndarray:
    """A block of `width`: the leading values, then random filler no larger than its amax."""
    out = np.zeros(width, dtype=np.float64)
    out[: len(lead)] = lead
    finite = lead[np.isfinite(lead)]
    amax = float(np.max(np.abs(finite))) if finite.size else 1.0
    if width > len(lead) and amax > 0:
        filler = rng.standard_normal(width - len(lead)) * np.exp2(rng.integers(-8, 1, width - len(lead)))
        out[len(lead) :] = np.clip(filler, -0.99, 0.99) * amax
    return out


def _partial(scheme: Scheme, width: int, rng) -> np.ndarray:
    """T8: a tensor whose last block along each blocked axis is partial (zero padding never raises
    amax, so the partial block's scale comes from its real elements)."""
    m = scheme.element.max
    if scheme.block.kind is BlockKind.TILE:
        r, c = scheme.block.size
        x = rng.standard_normal((r + r // 2, c + 2)) * m / 8
        x[-1, -1] = m * 300 / 448  # the partial corner block (T8: amax 300)
        return x
    x = rng.standard_normal((3, width + width // 2 + 1)) * m / 4
    x[0, -1] = m * 1.5
    x[2, width:] = 0.0
    return x


def _layout(scheme: Scheme, blocks: list[np.ndarray], rng) -> list[np.ndarray]:
    """Arrange block contents as tensors the scheme blocks one content per block."""
    k = scheme.block.kind
    if k is BlockKind.VECTOR:
        return [np.stack([_fill(b, scheme.block.size[0], rng) for b in blocks])]
    if k is BlockKind.ROW:
        return [np.stack([_fill(b, 32, rng) for b in blocks])]
    if k is BlockKind.TILE:
        r, c = scheme.block.size
        tiles = []
        for b in blocks:
            t = np.zeros((r, c))
            t[0] = _fill(b, c, rng)
            tiles.append(t)
        return [np.concatenate(tiles, axis=1)]
    return [_fill(b, 32, rng)[None, :] for b in blocks]  # TENSOR: one tensor per content


def _roles(preset: Preset) -> list[Role]:
    """Both roles, unless their schemes differ only in name (MX presets: one role is enough)."""
    a, w = (preset.scheme(r).describe() for r in (Role.ACTIVATION, Role.WEIGHT))
    a.pop("name"), w.pop("name")
    return [Role.ACTIVATION] if a == w else [Role.ACTIVATION, Role.WEIGHT]


def block_cases(preset, role=None) -> list[Case]:
    preset = get_preset(preset)
    roles = _roles(preset) if role is None else [Role.parse(role)]
    out = []
    for r in roles:
        scheme = preset.scheme(r)
        group = f"{preset.name}/{r.value}"
        tile = scheme.block.kind is BlockKind.TILE
        width = scheme.block.size[0] if scheme.block.kind is BlockKind.VECTOR else 32
        scen = _contents(scheme)
        if tile:  # 128x128 tiles are big: one tile per scenario's first content
            scen = [
                (
                    "tiles",
                    "one 128x128 tile per block scenario (first content of each): " + ", ".join(s for s, _, _ in scen),
                    [b[0] for _, _, b in scen],
                )
            ]
        for s, why, blocks in scen:
            rng = _rng(f"block/{group}/{s}")
            arrays = _layout(scheme, blocks, rng)
            for i, x in enumerate(arrays):
                name = f"block/{group}/{s}" + (f"/{i}" if len(arrays) > 1 else "")
                out.append(Case(name, CaseKind.BLOCK, group, s, why, _f32(x), preset=preset, role=r))
        s = "partial_blocks"
        x = _partial(scheme, width, _rng(f"block/{group}/{s}"))
        out.append(
            Case(
                f"block/{group}/{s}",
                CaseKind.BLOCK,
                group,
                s,
                (_partial.__doc__ or "").split("\n")[0] + " ...; zero padding never raises amax",
                _f32(x),
                preset=preset,
                role=r,
            )
        )
    return out


def catalogue(formats=None, presets=None) -> list[Case]:
    """Every case for the chosen formats and presets (None: all of them; []: none)."""
    fmts = list(FORMATS) if formats is None else [get_format(f).name for f in formats]
    pres = list(PRESETS) if presets is None else [get_preset(p).name for p in presets]
    out = []
    for f in dict.fromkeys(fmts):
        out.extend(element_cases(f))
    for p in dict.fromkeys(pres):
        out.extend(block_cases(p))
    return out


def given_case(name: str, inputs: np.ndarray) -> Case:
    """A case outside the catalogue whose inputs come with the outputs (e.g. a real model's weights
    and what another tool made of them): 'block/<preset>/<role>/<label>' or 'element/<format>/<label>'."""
    from ..errors import UnknownNameError

    parts = name.split("/")
    x = _f32(np.asarray(inputs, dtype=np.float64))
    why = "inputs given with the outputs"
    if parts[0] == "element" and len(parts) >= 3:
        spec = get_format(parts[1])
        return Case(name, CaseKind.ELEMENT, spec.name, "/".join(parts[2:]), why, x, fmt=spec)
    if parts[0] == "block" and len(parts) >= 4:
        preset, role = get_preset(parts[1]), Role.parse(parts[2])
        return Case(
            name, CaseKind.BLOCK, f"{preset.name}/{role.value}", "/".join(parts[3:]), why, x, preset=preset, role=role
        )
    raise UnknownNameError("case", name, ["element/<format>/<label>", "block/<preset>/<role>/<label>"])


def find_case(name: str) -> Case:
    """The case called `name`, regenerated from the catalogue (only its own group is built)."""
    from ..errors import UnknownNameError

    parts = name.split("/")
    try:
        if parts[0] == "element" and len(parts) == 3:
            pool = element_cases(parts[1])
        elif parts[0] == "block" and len(parts) >= 4:
            pool = block_cases(parts[1], parts[2])
        else:
            pool = []
    except Exception:  # an unknown format/preset/role inside the name
        pool = []
    for c in pool:
        if c.name == name:
            return c
    raise UnknownNameError("case", name, ["element/<format>/<scenario>", "block/<preset>/<role>/<scenario>"])
