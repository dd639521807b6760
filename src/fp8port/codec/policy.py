"""Rounding and overflow policies: names parsed once into enums."""

from __future__ import annotations

from ..names import NamedEnum


class Rounding(NamedEnum):
    """How a value between two codes picks one."""

    __label__ = "rounding"
    RNE = "rne"  # nearest, ties to the even significand (IEEE default, ml_dtypes, torch)
    AWAY = "away"  # nearest, ties away from zero (HiF8 "TA", microxcaling's default)
    ZERO = "zero"  # toward zero (truncate)
    STOCHASTIC = "stochastic"  # up with probability equal to the distance from the lower code

    __aliases__ = {
        "rne": ("nearest-even", "even", "rint"),
        "away": ("ta", "nearest-away", "half-away"),
        "zero": ("rtz", "trunc", "truncate"),
        "stochastic": ("sr",),
    }


class Overflow(NamedEnum):
    """What a finite value beyond the format's max, or an Inf input, becomes."""

    __label__ = "overflow policy"
    SATURATE = "saturate"  # +-max (finite overflow and +-Inf alike: PTX 'satfinite')
    NONFINITE = "nonfinite"  # the format's Inf, else its NaN, else +-max where it has neither
    ERROR = "error"  # raise NonFiniteError naming the first offending element

    __aliases__ = {
        "saturate": ("sat", "satfinite", "clamp"),
        "nonfinite": ("inf", "nan", "no-sat", "nosat"),
        "error": ("raise",),
    }
