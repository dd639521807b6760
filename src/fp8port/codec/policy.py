"""Rounding and overflow policies: names parsed once into enums."""

from __future__ import annotations

import enum

from ..errors import UnknownNameError


class _Named(enum.Enum):
    @classmethod
    def _label(cls) -> str:
        return {"Rounding": "rounding", "Overflow": "overflow policy"}[cls.__name__]

    @classmethod
    def parse(cls, value):
        if isinstance(value, cls):
            return value
        key = str(value).strip().lower().replace("_", "-")
        for member in cls:
            if key == member.value or key in member.aliases:
                return member
        raise UnknownNameError(cls._label(), value, [m.value for m in cls])


class Rounding(_Named):
    """How a value between two codes picks one."""

    RNE = "rne"  # nearest, ties to the even significand (IEEE default, ml_dtypes, torch)
    AWAY = "away"  # nearest, ties away from zero (HiF8 "TA", microxcaling's default)
    ZERO = "zero"  # toward zero (truncate)
    STOCHASTIC = "stochastic"  # up with probability equal to the distance from the lower code

    @property
    def aliases(self):
        return {
            "rne": ("nearest-even", "even", "rint"),
            "away": ("ta", "nearest-away", "half-away"),
            "zero": ("rtz", "trunc", "truncate"),
            "stochastic": ("sr",),
        }[self.value]


class Overflow(_Named):
    """What a finite value beyond the format's max, or an Inf input, becomes."""

    SATURATE = "saturate"  # +-max (finite overflow and +-Inf alike: PTX 'satfinite')
    NONFINITE = "nonfinite"  # the format's Inf, else its NaN, else +-max where it has neither
    ERROR = "error"  # raise NonFiniteError naming the first offending element

    @property
    def aliases(self):
        return {
            "saturate": ("sat", "satfinite", "clamp"),
            "nonfinite": ("inf", "nan", "no-sat", "nosat"),
            "error": ("raise",),
        }[self.value]
