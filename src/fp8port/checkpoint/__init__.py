"""Checkpoints on disk: validated lazy reading, layouts, streaming conversion, inspect, diff."""

from .convert import run
from .folder import Checkpoint
from .layouts import LayoutName, detect
from .plan import Options, make_plan

__all__ = ["Checkpoint", "LayoutName", "Options", "detect", "make_plan", "run"]
