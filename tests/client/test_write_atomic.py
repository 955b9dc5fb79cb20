"""``sync`` decides whether a write is fsynced (file and folder), never whether it is atomic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from client.files import write_atomic


@pytest.mark.parametrize(("sync", "fsyncs"), [(True, 2), (False, 0)])
def test_sync_fsyncs_the_file_and_its_folder_or_nothing(
        sync: bool, fsyncs: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    target = tmp_path / "p" / "CT.1.dcm"
    write_atomic(target, lambda fh: fh.write(b"whole"), sync=sync)
    assert target.read_bytes() == b"whole"
    assert [p.name for p in target.parent.iterdir()] == ["CT.1.dcm"]  # no temporary left
    assert len(calls) == (fsyncs if os.name == "posix" else fsyncs // 2)
