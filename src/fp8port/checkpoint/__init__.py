"""Checkpoints on disk: validated lazy reading, layouts, streaming conversion, inspect, diff."""

from .convert import run
from .plan import Options, make_plan
from .folder import Checkpoint
from .layouts import Layout, Target, detect

__all__ = ["Checkpoint", "Layout", "Options", "Target", "detect", "make_plan", "run"]
