"""Conformance kit: golden vectors, checking another implementation, and naming what it does.

export(dir, formats=None, presets=None)   write inputs, expected outputs and a manifest
check(outputs, against)                   per-case mismatches against one target
identify(outputs)                         the closest known behaviour and its deviations
"""

from .cases import Case, CaseKind, block_cases, catalogue, element_cases, find_case
from .check import CheckReport, NothingToCheckError, Outputs, check
from .compare import CaseResult, Mismatch, Status
from .export import ExportResult, export
from .identify import GroupResult, IdentifyReport, identify
from .io import DisagreeingOutputsError, OutputsNotFoundError, read_bundle
from .targets import BlockTarget, ElementTarget, Expected, expected, parse_target

__all__ = [
    "BlockTarget",
    "Case",
    "CaseKind",
    "CaseResult",
    "CheckReport",
    "DisagreeingOutputsError",
    "ElementTarget",
    "Expected",
    "ExportResult",
    "GroupResult",
    "IdentifyReport",
    "Mismatch",
    "NothingToCheckError",
    "Outputs",
    "OutputsNotFoundError",
    "Status",
    "block_cases",
    "catalogue",
    "check",
    "element_cases",
    "expected",
    "export",
    "find_case",
    "identify",
    "parse_target",
    "read_bundle",
]
