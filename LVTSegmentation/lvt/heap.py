"""The heap during a stage that makes large buffers: glibc keeps the memory it frees, then hands it back.

glibc serves every large buffer (an activation of the network, a probability volume, a mask on the CT
grid) with a fresh ``mmap`` and unmaps it when it is freed, so the next buffer faults in zeroed pages
again; on the 2-core benchmark machine the kernel took a quarter of the CPU during inference. Raising
glibc's mmap and trim thresholds keeps freed pages for the next buffer; when the outermost block ends,
the defaults come back and ``malloc_trim`` hands what was kept back to the system.

One block per stage (reading, resampling, inference, post-processing, the output files), not one per
case: freed buffers of one stage rarely fit the next stage's, and on a 512 x 512 x 600 CT one block
around the whole case kept 870 MB more at its peak (3.0 GB instead of 2.2; docs/performance.md).
Standard library only: ``lvt measure`` uses it without torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator
from functools import lru_cache

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters from glibc's malloc.h
_GLIBC_DEFAULT_THRESHOLD = 128 * 1024
_lock = threading.Lock()
_depth = 0


@contextlib.contextmanager
def retained_heap(enabled: bool = True) -> Iterator[None]:
    """Keep freed memory in the process inside the block (blocks nest; the outermost decides). A no-op off glibc."""
    libc = _glibc() if enabled else None
    if libc is None:
        yield
        return
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
            libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
                libc.malloc_trim(0)


@lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None
