"""Chip profiles: `chips.json` parsed once into frozen `Chip` values, every number with its provenance."""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources

from ..errors import Fp8portError, UnknownNameError


class ChipDataError(Fp8portError, ValueError):
    """chips.json breaks its own rules (a number without a source, an unknown unit, ...)."""


class Confidence(enum.Enum):
    DS = "DS"  # vendor datasheet or spec page
    VA = "VA"  # vendor announcement, keynote, vendor-authored paper
    PR = "PR"  # press report (also vendor keynotes seen only through the press)
    EST = "EST"  # derived in the research note, arithmetic shown there
    UNVERIFIED = "UNVERIFIED"  # one weak or conflicting source


class Status(enum.Enum):
    SHIPPING = "shipping"
    ANNOUNCED = "announced"
    ROADMAP = "roadmap"


class Column(enum.Enum):
    """A dense peak-throughput column of the data file."""

    BF16 = "bf16"
    FP8 = "fp8"
    MXFP8 = "mxfp8"
    FP6 = "fp6"
    FP4 = "fp4"  # MXFP4 and NVFP4 share it where a chip has both
    HIF8 = "hif8"
    INT8 = "int8"


class MatmulPath(enum.Enum):
    """A way the matrix units consume weights natively; each runs at one throughput column."""

    BF16 = "bf16"
    FP8_BLOCK = "fp8_block"  # E4M3 MMA, block scales applied around it (DeepGEMM on Hopper) or by MX hardware
    MXFP8 = "mxfp8"  # block-scaled MMA with E8M0 scales, k=32
    MXFP6 = "mxfp6"
    MXFP4 = "mxfp4"
    NVFP4 = "nvfp4"  # E4M3 scales per 16 plus an fp32 tensor scale
    HIF8 = "hif8"
    INT8 = "int8"

    @property
    def column(self) -> Column:
        return _PATH_COLUMN[self]


_PATH_COLUMN = {
    MatmulPath.BF16: Column.BF16,
    MatmulPath.FP8_BLOCK: Column.FP8,
    MatmulPath.MXFP8: Column.MXFP8,
    MatmulPath.MXFP6: Column.FP6,
    MatmulPath.MXFP4: Column.FP4,
    MatmulPath.NVFP4: Column.FP4,
    MatmulPath.HIF8: Column.HIF8,
    MatmulPath.INT8: Column.INT8,
}

# Unit -> factor to SI (bytes, bytes/s, operations/s), per field, so a mistyped unit fails loudly.
_UNITS = {
    "memory": {"GB": 1e9},
    "memory_bandwidth": {"TB/s": 1e12, "GB/s": 1e9},
    "interconnect": {"GB/s": 1e9, "TB/s": 1e12},
    "throughput": {"TFLOPS": 1e12, "TOPS": 1e12},
}


@dataclass(frozen=True)
class Figure:
    """One number as published: its value in the printed unit and where it comes from.

    `value is None` means unknown; `reason` then says why (not published, format not supported, ...).
    """

    value: float | None
    unit: str
    confidence: Confidence | None
    source: str
    si: float | None  # value in bytes, bytes/s or operations/s

    @property
    def known(self) -> bool:
        return self.value is not None

    @property
    def reason(self) -> str:
        return "" if self.known else self.source

    def to_json(self) -> dict:
        if not self.known:
            return {"value": None, "reason": self.source}
        return {"value": self.value, "unit": self.unit, "confidence": self.confidence.value, "source": self.source}

    def __str__(self) -> str:
        if not self.known:
            return "?"
        v = int(self.value) if float(self.value).is_integer() else self.value
        return f"{v:,} [{self.confidence.value}]" if isinstance(v, int) else f"{v} [{self.confidence.value}]"


@dataclass(frozen=True)
class Native:
    paths: frozenset[MatmulPath]
    confidence: Confidence
    source: str


@dataclass(frozen=True)
class Chip:
    name: str
    aliases: tuple[str, ...]
    vendor: str
    status: Status
    devices_per_package: int  # the 910C is two 64 GB dies that engines see as two devices
    memory: Figure  # per package
    memory_bandwidth: Figure
    throughput: dict[Column, Figure]  # dense, per package
    interconnect: Figure
    native: Native
    note: str

    def runs(self, path: MatmulPath) -> bool:
        return path in self.native.paths

    def figures(self) -> dict[str, Figure]:
        """Every number of the profile, named as in the data file."""
        out = {"memory": self.memory, "memory_bandwidth": self.memory_bandwidth, "interconnect": self.interconnect}
        out.update({f"throughput.{c.value}": f for c, f in self.throughput.items()})
        return out

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "vendor": self.vendor,
            "status": self.status.value,
            "devices_per_package": self.devices_per_package,
            "memory": self.memory.to_json(),
            "memory_bandwidth": self.memory_bandwidth.to_json(),
            "throughput": {c.value: f.to_json() for c, f in self.throughput.items()},
            "interconnect": self.interconnect.to_json(),
            "native": {
                "paths": sorted(p.value for p in self.native.paths),
                "confidence": self.native.confidence.value,
                "source": self.native.source,
            },
            "note": self.note,
        }


def _parse_enum(cls, value, where: str):
    try:
        return cls(value)
    except ValueError:
        raise ChipDataError(f"{where}: {value!r} is not one of {', '.join(m.value for m in cls)}") from None


def _figure(raw, field: str, where: str) -> Figure:
    if not isinstance(raw, dict) or "value" not in raw:
        raise ChipDataError(f"{where}: a number must be an object with 'value'")
    if raw["value"] is None:
        reason = raw.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise ChipDataError(f"{where}: an unknown number needs a 'reason'")
        return Figure(None, "", None, reason, None)
    value, unit, source = raw["value"], raw.get("unit"), raw.get("source")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ChipDataError(f"{where}: value {value!r} must be a positive number")
    if unit not in _UNITS[field]:
        raise ChipDataError(f"{where}: unit {unit!r} must be one of {', '.join(_UNITS[field])}")
    if not isinstance(source, str) or not source.strip():
        raise ChipDataError(f"{where}: every number needs a 'source'")
    conf = _parse_enum(Confidence, raw.get("confidence"), f"{where} confidence")
    return Figure(float(value), unit, conf, source, float(value) * _UNITS[field][unit])


def _chip(raw: dict) -> Chip:
    name = raw.get("name", "?")
    try:
        thr = raw["throughput"]
        missing = {c.value for c in Column} - set(thr)
        if missing:
            raise ChipDataError(f"{name}: throughput lacks {', '.join(sorted(missing))}")
        native = raw["native"]
        dpp = raw["devices_per_package"]
        if not isinstance(dpp, int) or dpp < 1:
            raise ChipDataError(f"{name}: devices_per_package must be a positive integer")
        return Chip(
            name=name,
            aliases=tuple(raw["aliases"]),
            vendor=raw["vendor"],
            status=_parse_enum(Status, raw["status"], f"{name} status"),
            devices_per_package=dpp,
            memory=_figure(raw["memory"], "memory", f"{name} memory"),
            memory_bandwidth=_figure(raw["memory_bandwidth"], "memory_bandwidth", f"{name} memory_bandwidth"),
            throughput={c: _figure(thr[c.value], "throughput", f"{name} throughput.{c.value}") for c in Column},
            interconnect=_figure(raw["interconnect"], "interconnect", f"{name} interconnect"),
            native=Native(
                frozenset(_parse_enum(MatmulPath, p, f"{name} native path") for p in native["paths"]),
                _parse_enum(Confidence, native["confidence"], f"{name} native confidence"),
                native["source"],
            ),
            note=raw.get("note", ""),
        )
    except KeyError as exc:
        raise ChipDataError(f"chip {name}: missing field {exc.args[0]!r}") from None


def parse_chips(doc: dict) -> dict[str, Chip]:
    """Validate a chips document (the shape of chips.json) into chips by name."""
    chips = [_chip(c) for c in doc["chips"]]
    by_name = {c.name: c for c in chips}
    if len(by_name) != len(chips):
        raise ChipDataError("chips.json names a chip twice")
    keys = [k for c in chips for k in {_key(n) for n in (c.name, *c.aliases)}]
    if len(set(keys)) != len(keys):
        raise ChipDataError("chips.json uses a name or alias twice")
    return by_name


@cache
def load_chips() -> dict[str, Chip]:
    text = resources.files(__package__).joinpath("chips.json").read_text(encoding="utf-8")
    return parse_chips(json.loads(text))


def _key(name: str) -> str:
    # 'Ascend 910C', 'ascend-910c', '910c' and 'ASCEND_910C' all match
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def get_chip(name) -> Chip:
    if isinstance(name, Chip):
        return name
    key = _key(name)
    for chip in load_chips().values():
        if key in {_key(n) for n in (chip.name, *chip.aliases)}:
            return chip
    raise UnknownNameError("chip", name, load_chips())
