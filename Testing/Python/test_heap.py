"""The retained heap: freed memory stays in the process inside the block and goes back to the system after it."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from lvt.heap import _glibc, retained_heap

MB = 1 << 20
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or _glibc() is None, reason="glibc only")


def _resident_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def _allocate_touch_free(megabytes: int) -> None:
    buffer = np.ones(megabytes * MB, dtype=np.uint8)  # every page touched
    assert buffer[-1] == 1
    del buffer


def test_freed_memory_stays_inside_the_block_and_is_handed_back_after_it() -> None:
    before = _resident_mb()
    _allocate_touch_free(300)
    assert _resident_mb() < before + 100  # glibc's default: a buffer this large is unmapped when freed
    with retained_heap():
        _allocate_touch_free(300)
        assert _resident_mb() > before + 250  # kept for the next buffer
    assert _resident_mb() < before + 100


def test_blocks_nest_and_the_outermost_one_decides() -> None:
    before = _resident_mb()
    with retained_heap():
        with retained_heap():
            _allocate_touch_free(300)
        assert _resident_mb() > before + 250  # the inner block (the sliding window's) does not end the outer one's
        with pytest.raises(RuntimeError), retained_heap():
            raise RuntimeError("a failing stage")
        assert _resident_mb() > before + 250
    assert _resident_mb() < before + 100
    with retained_heap(enabled=False):
        _allocate_touch_free(300)
        assert _resident_mb() < before + 100
