"""Stale temporary files of atomic writes: who removes them, and what is never touched.

A writer SIGKILLed between creating its temporary file and renaming it leaves a hidden
``.<name>.<12 hex>.tmp``; the File Daemon and rtmove's receiver remove such files when
they start on a folder, and nothing else. Also: moving a file across disks without a cut
file, and telling a full disk.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import namedtuple
from pathlib import Path
from typing import BinaryIO

import pytest
from daemons import make_site

from client.files import (
    LOW_SPACE,
    full_disk,
    is_temp_name,
    move_atomic,
    remove_stale_temp_files,
    size_text,
    write_atomic,
)
from client.receiver import Receiver
from emulators.file_daemon import FileDaemon

STALE = ".CT.1.2.3.dcm.0123456789ab.tmp"


def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_temp_names_are_exactly_those_write_atomic_gives(tmp_path: Path) -> None:
    seen: list[str] = []

    def write(fh: BinaryIO) -> None:
        seen.extend(os.listdir(tmp_path))
        fh.write(b"data")

    write_atomic(tmp_path / "CT.1.2.dcm", write)
    assert len(seen) == 1 and is_temp_name(seen[0]), seen
    assert os.listdir(tmp_path) == ["CT.1.2.dcm"]
    for name in (STALE, ".manifest.json.abcdef012345.tmp"):
        assert is_temp_name(name), name
    for name in ("CT.1.2.3.dcm", ".hidden", "notes.tmp", ".CT.1.dcm.0123456789AB.tmp",
                 ".CT.1.dcm.0123456789a.tmp", ".CT.1.dcm.0123456789abc.tmp",
                 "CT.1.dcm.0123456789ab.tmp", ".0123456789ab.tmp",
                 ".CT.1.dcm.0123456789ab.tmp.bak"):
        assert not is_temp_name(name), name


def test_only_write_atomic_temporaries_are_removed_each_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    stale = [_touch(out / "P1" / STALE), _touch(out / ".manifest.json.abcdef012345.tmp"),
             _touch(out / "P2" / "deeper" / ".RTDOSE.9.dcm.ffffffffffff.tmp", b"")]
    kept = [_touch(out / "P1" / "CT.1.2.3.dcm"), _touch(out / "P1" / ".hidden"),
            _touch(out / "P1" / "notes.tmp"), _touch(out / ".CT.1.dcm.0123456789AB.tmp")]
    (out / "P3" / ".CT.4.dcm.0123456789ab.tmp").mkdir(parents=True)  # a folder: kept
    outside = _touch(tmp_path / "elsewhere" / "precious.dcm")
    link = out / ".CT.5.dcm.0123456789ab.tmp"
    link.symlink_to(outside)  # a link named like one: neither followed nor removed
    linked_folder = out / "linked"
    linked_folder.symlink_to(outside.parent, target_is_directory=True)
    inside_link = _touch(outside.parent / ".CT.6.dcm.0123456789ab.tmp")
    with caplog.at_level(logging.INFO, logger="client.files"):
        removed = remove_stale_temp_files(out)
    assert sorted(removed) == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in (*kept, outside, inside_link))
    assert link.is_symlink() and (out / "P3" / ".CT.4.dcm.0123456789ab.tmp").is_dir()
    logged = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(logged) == len(stale)
    assert all(any(str(p) in r.getMessage() for r in logged) for p in stale)
    assert remove_stale_temp_files(out) == []  # nothing left to do
    assert remove_stale_temp_files(tmp_path / "missing") == []


def test_a_temp_file_a_live_writer_holds_is_left_alone(tmp_path: Path) -> None:
    """Another process (here: thread) may be writing into the same folder right now."""
    writing, finish = threading.Event(), threading.Event()

    def write(fh: BinaryIO) -> None:
        fh.write(b"first half")
        writing.set()
        assert finish.wait(10)
        fh.write(b" second half")

    writer = threading.Thread(target=write_atomic, args=(tmp_path / "CT.7.dcm", write))
    writer.start()
    try:
        assert writing.wait(10)
        [temp] = os.listdir(tmp_path)
        assert is_temp_name(temp)
        assert remove_stale_temp_files(tmp_path) == []
        assert (tmp_path / temp).exists()
    finally:
        finish.set()
        writer.join(10)
    assert os.listdir(tmp_path) == ["CT.7.dcm"]
    assert (tmp_path / "CT.7.dcm").read_bytes() == b"first half second half"


_KILLED_WRITER = """
import sys, time
from pathlib import Path
from client.files import write_atomic

def write(fh):
    fh.write(b"x" * 5000)
    fh.flush()
    print("writing", flush=True)
    time.sleep(60)

write_atomic(Path(sys.argv[1]), write)
"""


def test_a_writer_killed_mid_write_leaves_a_temp_file_that_cleanup_removes(
        tmp_path: Path) -> None:
    """The gap itself: SIGKILL between creating the temporary file and the rename."""
    target = tmp_path / "P" / "CT.8.dcm"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
        [temp] = os.listdir(target.parent)
        assert remove_stale_temp_files(tmp_path) == []  # its writer still holds it
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert os.listdir(target.parent) == [temp] and not target.exists()
    assert remove_stale_temp_files(tmp_path) == [target.parent / temp]
    assert os.listdir(target.parent) == []


def test_the_file_daemon_start_removes_them_and_indexes_the_newest_whole_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    site = make_site(tmp_path)
    out = site.file_daemon.output
    stale = _touch(out / "P1" / STALE)
    whole = _touch(out / "P1" / "CT.1.2.3.dcm", b"whole")
    # One instance in two files: a crash between writing the new one and removing the old.
    # Two such pairs, the newer file first in one and last in the other, whatever order
    # the folders are listed in.
    old = [_touch(out / "P1" / "RTPLAN.1.9.dcm", b"old"), _touch(out / "P2" / "CT.1.8.dcm")]
    new = [_touch(out / "P2" / "RTPLAN.1.9.dcm", b"new"), _touch(out / "P1" / "MR.1.8.dcm")]
    for path in old:
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    fd = FileDaemon(site)
    with caplog.at_level(logging.INFO), fd:
        indexed = dict(fd._files)
    assert not stale.exists()
    # By name: the daemons' log policy may show the patient folder as a pseudonym.
    assert any(stale.name in r.getMessage() and r.levelno == logging.INFO
               for r in caplog.records)
    assert whole.read_bytes() == b"whole" and all(p.exists() for p in (*old, *new))
    assert indexed == {"1.2.3": whole, "1.9": new[0], "1.8": new[1]}
    assert any("hold the same SOP instance" in r.getMessage() for r in caplog.records)


def test_rtmove_receiver_removes_them_at_start_and_on_redirect(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    stale = [_touch(first / "P" / STALE), _touch(second / "P" / STALE)]
    kept = _touch(second / "P" / "CT.1.2.3.dcm")
    with Receiver("RTMOVE", 0, first) as receiver:
        assert not stale[0].exists() and stale[1].exists()
        receiver.redirect(second, set())
        assert not stale[1].exists()
    assert kept.exists()


def test_move_atomic_across_disks_never_leaves_a_cut_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = _touch(tmp_path / "tmp" / "CT.1.dcm", b"y" * 100_000)
    target = tmp_path / "out" / "CT.1.dcm"
    target.parent.mkdir()
    real_replace = os.replace

    def other_disk(src: str | Path, dst: str | Path) -> None:
        if Path(src) == source:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", other_disk)
    real_copy = shutil.copyfileobj

    def disk_fills(src: BinaryIO, dst: BinaryIO) -> None:
        dst.write(src.read(4096))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shutil, "copyfileobj", disk_fills)
    with pytest.raises(OSError, match="No space left"):
        move_atomic(source, target)
    assert os.listdir(target.parent) == [] and source.exists()  # no cut file, no temp
    monkeypatch.setattr(shutil, "copyfileobj", real_copy)
    move_atomic(source, target)
    assert target.read_bytes() == b"y" * 100_000 and not source.exists()
    assert os.listdir(target.parent) == ["CT.1.dcm"]


Usage = namedtuple("Usage", "total used free")


def test_full_disk_tells_a_disk_too_full_for_what_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Path] = []

    def usage(free: int) -> None:
        def disk_usage(path: Path) -> Usage:
            asked.append(Path(path))
            return Usage(10 * free + 1, 9 * free + 1, free)
        monkeypatch.setattr(shutil, "disk_usage", disk_usage)

    usage(LOW_SPACE - 1)
    assert full_disk(tmp_path) == (LOW_SPACE - 1, 10 * (LOW_SPACE - 1) + 1)
    usage(10 * LOW_SPACE)
    assert full_disk(tmp_path) is None
    assert full_disk(tmp_path, need=10 * LOW_SPACE + 1) is not None
    asked.clear()
    assert full_disk(tmp_path / "not" / "yet") is None  # the nearest existing folder's disk
    assert asked == [tmp_path]

    def unreadable(path: Path) -> Usage:
        raise PermissionError(errno.EACCES, "denied")

    monkeypatch.setattr(shutil, "disk_usage", unreadable)
    assert full_disk(tmp_path) is None


@pytest.mark.parametrize(("size", "text"), [(0, "0 bytes"), (999, "999 bytes"),
                                            (1000, "1.0 kB"), (3_145_728, "3.1 MB"),
                                            (2_500_000_000_000, "2500.0 GB")])
def test_size_text(size: int, text: str) -> None:
    assert size_text(size) == text

