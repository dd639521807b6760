"""Running conversions on more than one machine. Ray is an optional extra (`fp8port[ray]`):
nothing here imports it until an executor is built."""

from .ray_executor import RayExecutor, RayUnavailableError, executor_from_option, require_ray

__all__ = ["RayExecutor", "RayUnavailableError", "executor_from_option", "require_ray"]
