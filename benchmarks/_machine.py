"""What every benchmark prints beside its figures: the CPU model, its ISA tier for fp8port's C
kernels (and the one in use), torch's capability, threads and the load on the machine."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith(("model name", "Model", "CPU part")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict:
    """A JSON-able summary of the machine and of the kernels' tier."""
    import numba
    import torch

    from fp8port import cpu

    tier = cpu.tier()
    return {
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "isa_tiers_here": [t.value for t in cpu.tiers()],
        "isa_tier": tier.value if tier else "none (Numba kernels)",
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": numba.get_num_threads(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def banner(info: dict | None = None) -> str:
    d = info or describe()
    return (
        f"CPU {d['cpu_model']} ({d['machine']}, {d['cpus']} CPUs); fp8port ISA tier {d['isa_tier']} "
        f"(this CPU: {', '.join(d['isa_tiers_here']) or 'none'}); torch {d['torch_cpu_capability']}; "
        f"{d['threads']} threads; load average {d['load_average_1min']}"
    )
