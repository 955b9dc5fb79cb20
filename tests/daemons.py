"""Sites with free ports and the emulated daemons, for tests; DCMTK command helpers."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pydicom
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType

from client.site import Site, TrustedAE, default_site
from emulators.archive import Archive
from emulators.db_daemon import DBDaemon
from emulators.file_daemon import FileDaemon
from emulators.files import part10_body
from emulators.peers import DCMTK_ENV, free_port
from emulators.peers import LOOPBACK as LOOPBACK  # for tests that import it from here
from emulators.serve import serving
from emulators.synthetic import Profile, SyntheticConfig


def make_site(tmp: Path, *, extra: tuple[TrustedAE, ...] = (), **db_options: object) -> Site:
    """The default site with both daemons on port 0 (a free port each, taken when they
    start), File Daemon writing to ``tmp/fd``; ``db_options`` replace fields of the DB
    Daemon's service (e.g. ``models=...``, ``quirks=...``). Start both with
    :func:`running_daemons` (or ``serving``) so moves reach the File Daemon's real port."""
    site = default_site()
    site = dataclasses.replace(
        site,
        db_daemon=dataclasses.replace(site.db_daemon, port=0, **db_options),  # type: ignore[arg-type]
        file_daemon=dataclasses.replace(site.file_daemon, port=0, output=tmp / "fd"),
        client=dataclasses.replace(site.client, port=free_port()))
    for entry in extra:
        site = site.with_trusted(entry)
    return site


def dcmtk(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool with TCP_NODELAY; its output (stdout+stderr) in ``.stdout``."""
    return subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=DCMTK_ENV, timeout=timeout, check=False)


@contextmanager
def running_daemons(tmp: Path, archive: Archive, *, extra: tuple[TrustedAE, ...] = (),
                    **db_options: object) -> Iterator[tuple[Site, DBDaemon, FileDaemon]]:
    """Both daemons on free ports over ``archive``; stopped (threads joined) after the block."""
    site = make_site(tmp, extra=extra, **db_options)
    with serving(site, archive) as (dbd, fd):
        yield site, dbd, fd


def small_archive(patients: int = 3, seed: int = 7, profile: Profile = Profile.MESSY,
                  slices: int = 6, size: int = 32) -> Archive:
    """A synthetic archive small enough to move in a test (index only; pixels on demand)."""
    config = SyntheticConfig(seed=seed, profile=profile, slices=slices, rows=size, columns=size)
    return Archive.synthetic(config, patients)


def assert_same_object(got: Path, want: Path) -> None:
    """``got`` (moved by the DB Daemon) is the object ``want`` (written by the generator).

    The dataset bytes are equal, pixel data included, unless the daemon re-encoded
    the text in the destination's export character set (ISO_IR 192 by default):
    then every element but Specific Character Set has the same value.
    """
    if part10_body(got.read_bytes()) == part10_body(want.read_bytes()):
        return
    a, b = pydicom.dcmread(got), pydicom.dcmread(want)
    assert a.SpecificCharacterSet == "ISO_IR 192", f"{got}: bytes differ, charset unchanged"
    assert b.get("SpecificCharacterSet") != "ISO_IR 192", f"{got}: bytes differ"
    if "PixelData" in b:
        assert a.PixelData == b.PixelData, f"{got}: pixel data differ"
    for ds in (a, b):
        del ds.SpecificCharacterSet
    assert a == b, f"{got}: values differ after re-encoding"


@contextmanager
def associated(ae: AE, host: str, port: int, called: str,
               handlers: Sequence[EventHandlerType] = ()) -> Iterator[Association]:
    """``ae``'s association (maybe rejected) with ``called``: released if established,
    and ``ae`` shut down, after the block."""
    try:
        assoc = ae.associate(host, port, ae_title=called, evt_handlers=list(handlers))
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()
    finally:
        ae.shutdown()


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether ``condition()`` comes true within ``timeout`` s (polled every 10 ms): for
    what another thread finishes after the response a test waited for."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True
