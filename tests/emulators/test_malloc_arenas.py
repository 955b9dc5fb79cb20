"""``dbdsim serve`` caps glibc's malloc arenas (flat RSS in the soak), unless told not to."""

from __future__ import annotations

import platform
import sys

import pytest

from emulators.serve import cap_malloc_arenas


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_arenas_are_capped_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert cap_malloc_arenas(8)  # 8: the glibc default per core, so nothing else changes


def test_an_explicit_malloc_arena_max_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not cap_malloc_arenas()
