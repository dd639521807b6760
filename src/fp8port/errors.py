"""One typed hierarchy for every error a user can cause.

Each message names what was wrong and what is allowed, so the CLI can print it
as is (no traceback) and exit non-zero.
"""


class Fp8portError(Exception):
    """Base class of every error fp8port raises on purpose."""

    exit_code = 2


class UnknownNameError(Fp8portError, ValueError):
    """A name (format, rounding, profile, preset, ...) that is not known."""

    def __init__(self, kind: str, name: object, valid):
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        super().__init__(f"unknown {kind} {name!r}; valid: {', '.join(self.valid)}")


class UnsupportedInputError(Fp8portError, TypeError):
    """An input of a type or dtype that the operation does not take."""


class NonFiniteError(Fp8portError, ValueError):
    """A NaN, Inf or overflowing value where the chosen policy forbids it."""


class ProfileError(Fp8portError, ValueError):
    """A device profile asked for a format whose behaviour it does not define."""


class ShapeError(Fp8portError, ValueError):
    """Shapes that do not fit together (blocks, grids, packing)."""


class CheckpointError(Fp8portError):
    """A checkpoint that cannot be read or written as asked; names the file and tensor."""


class ConversionError(Fp8portError):
    """A conversion that cannot proceed (destination in use, options that do not fit, ...)."""


class ResourceError(ConversionError):
    """The machine refused (disk full, read-only or missing folder, permission): the work done so
    far is kept for --resume."""


class LayoutError(CheckpointError):
    """A checkpoint whose layout is unknown, ambiguous, or known but not read / written yet."""


class RelayoutError(ConversionError):
    """A re-layout (codes kept, scales moved) that would change a value: blocks that do not nest,
    scales the target storage cannot hold."""
