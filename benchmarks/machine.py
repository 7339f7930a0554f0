"""The machine a benchmark ran on, in one line (every figure says where it was measured)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def describe_machine() -> str:
    """Cores (and how many this process may use), CPU model, load average, Python version."""
    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"{cores} CPU cores ({usable} usable), {model}; load average {load}; "
            f"Python {platform.python_version()}")
