"""Where the network runs: the device a user asks for, the CPU cores a process may use, its heap on
the CPU, and fp16 autocast on CUDA. Sliding-window inference (:mod:`lvt.segment.predict`) uses these.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
from collections.abc import Iterator
from functools import lru_cache
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


@contextlib.contextmanager
def retained_heap(enabled: bool = True) -> Iterator[None]:
    """Keep freed memory in the process (glibc) while the network runs on the CPU; hand it back after.

    glibc serves each large activation buffer with a fresh ``mmap`` and returns it on free, so every
    window faults in about a gigabyte of zeroed pages again: on the 2-core benchmark machine a quarter
    of the CPU time went to the kernel. Raising the mmap and trim thresholds keeps those pages; on
    exit the defaults come back and ``malloc_trim`` releases what was kept. A no-op off glibc.
    """
    libc = _glibc() if enabled else None
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
        libc.malloc_trim(0)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters from glibc's malloc.h
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024


@lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA only: CPU autocast is slow on many CPUs and fp16 accumulation there is slower still."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
