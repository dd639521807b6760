"""Element formats as data: `FORMATS`, `get_format`, `FormatSpec`."""

from .registry import ALIASES, FORMATS, get_format
from .spec import Class, FormatSpec, Kind, NaNStyle

__all__ = ["ALIASES", "FORMATS", "Class", "FormatSpec", "Kind", "NaNStyle", "get_format"]
