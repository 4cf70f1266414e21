"""Where the network runs: the device a user asks for, the CPU cores a process may use, and fp16
autocast on CUDA. Sliding-window inference (:mod:`lvt.segment.predict`) uses these.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch


def resolve_device(name: str) -> tuple[torch.device, str | None]:
    """Turn "auto" | "cpu" | "cuda" | "cuda:N" | "mps" into a device, with a message when falling back."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda"), None
        return torch.device("cpu"), "no CUDA GPU found: running on the CPU"
    if name.startswith("cuda") and not torch.cuda.is_available():
        return torch.device("cpu"), f"--device {name} requested but CUDA is not available: running on the CPU"
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        return torch.device("cpu"), "--device mps requested but MPS is not available: running on the CPU"
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return torch.device(name), None


def available_cpu_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup v2 CPU quota.

    A container limited to 2 CPUs on a 64-core host reports 64 cores to ``os.cpu_count()``;
    64 threads fighting over 2 cores are far slower than 2.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="utf-8").split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    return cores


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA only: CPU autocast is slow on many CPUs and fp16 accumulation there is slower still."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
