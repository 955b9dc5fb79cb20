"""Real third-party Query/Retrieve SCPs (DCMTK ``dcmqrscp``, Orthanc) loaded with Part-10 files.

Why: the mover client must work against archives we did not write, not only against
our DB Daemon emulator. Both servers run on free loopback ports under a test's temp
folder, know exactly the given move destinations, accept only those AEs (plus the
loader) as callers, and are stopped (process waited for) when the block ends.

dcmqrscp is started, made ready and stopped by :func:`emulators.peers.dcmqrscp`, whose
docstrings say which traps of DCMTK 3.6.7 that handles. Here, in addition: dcmqrscp
keeps at most 500 studies per storage area and deletes the oldest beyond that while
storescu still reports success, so a bigger load is refused up front, and every load
(to Orthanc 1.10.1 too) is counted after.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom
from daemons import dcmtk

from emulators.peers import (
    DCMQRSCP_MAX_STUDIES,
    LOOPBACK,
    dcmqrscp,
    free_port,
    running,
    tail,
    wait_for_echo,
    wait_for_port,
)

KINDS = ("dcmqrscp", "orthanc")
LOADER_AE = "LOADER"
# Where Debian puts daemons such as Orthanc; not on every user's PATH.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
# The loader must be a known peer to store, which also makes it a move destination:
# this port is never served, so a move to it fails instead of reaching a stranger.
_NOBODY_PORT = 1
_READY_TIMEOUT = 30.0
_LOG_TAIL_LINES = 40

Count = Callable[[], int]


@dataclass(frozen=True)
class ArchiveServer:
    """A running Q/R SCP as a test addresses it."""

    kind: str  # "dcmqrscp" or "orthanc"
    host: str  # "127.0.0.1"
    port: int  # its DICOM port
    ae_title: str  # its called AE title
    log: Path  # its log file, for assertion messages

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The end of the server's log, to explain a failed assertion."""
        return tail(self.log, lines)


def find_executable(name: str) -> str | None:
    """``name`` on PATH, else in the sbin folders (Debian installs Orthanc in /usr/sbin)."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN_DIRS))


@contextmanager
def archive_server(kind: str, tmp: Path, files: Iterable[Path],
                   destinations: Mapping[str, tuple[str, int]],
                   ae_title: str = "ARCHIVE") -> Iterator[ArchiveServer]:
    """Start `kind` on a free loopback port under `tmp`, load `files` into it with DCMTK storescu,
    knowing `destinations` (move destination AE title -> (host, port)) as the only move destinations
    and also as the callers it accepts; stop it (and wait for the process) after the block.

    `tmp` should be fresh: a server's storage there is reused, and its old instances
    would fail the count. Raises RuntimeError (with the server's log tail) when it does
    not start or does not hold exactly the files' instances after the load.
    """
    starters = {"dcmqrscp": _dcmqrscp, "orthanc": _orthanc}
    if kind not in starters:
        raise ValueError(f"unknown archive server kind {kind!r}; expected one of {KINDS}")
    tmp.mkdir(parents=True, exist_ok=True)
    paths = list(dict.fromkeys(Path(f) for f in files))
    instances, studies = _identify(paths)
    if kind == "dcmqrscp" and studies > DCMQRSCP_MAX_STUDIES:
        raise ValueError(f"dcmqrscp keeps at most {DCMQRSCP_MAX_STUDIES} studies per storage "
                         f"area and silently drops older ones; got {studies}")
    peers = dict(destinations)
    peers.setdefault(LOADER_AE, (LOOPBACK, _NOBODY_PORT))
    with starters[kind](tmp, peers, ae_title) as (server, stored):
        _load(server, paths, tmp / "load", instances, stored)
        yield server


def _identify(paths: list[Path]) -> tuple[int, int]:
    """How many distinct instances and studies ``paths`` hold (a server keeps one per UID)."""
    instances: set[str] = set()
    studies: set[str] = set()
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True,
                             specific_tags=["SOPInstanceUID", "StudyInstanceUID"])
        instances.add(str(ds.SOPInstanceUID))
        studies.add(str(ds.StudyInstanceUID))
    return len(instances), len(studies)


@contextmanager
def _dcmqrscp(tmp: Path, peers: Mapping[str, tuple[str, int]], ae_title: str,
              ) -> Iterator[tuple[ArchiveServer, Count]]:
    """dcmqrscp (forking, no host lookup, callers limited to ``peers``), ready to load."""
    with dcmqrscp(tmp / "dcmqrscp", ae_title, peers, LOADER_AE,
                  executable=_executable("dcmqrscp"), max_associations=32,
                  timeout=_READY_TIMEOUT) as server:
        yield (ArchiveServer("dcmqrscp", server.host, server.port, ae_title, server.log),
               server.stored)


@contextmanager
def _orthanc(tmp: Path, peers: Mapping[str, tuple[str, int]], ae_title: str,
             ) -> Iterator[tuple[ArchiveServer, Count]]:
    """Orthanc with no plugins, no compression, no job persistence: only registered
    modalities may call; the loader may only echo and store."""
    port, http_port = free_port(), free_port()
    modalities: dict[str, dict[str, object]] = {}
    for n, (title, (host, peer_port)) in enumerate(peers.items()):
        entry: dict[str, object] = {"AET": title, "Host": host, "Port": peer_port}
        if title == LOADER_AE:
            entry |= {"AllowEcho": True, "AllowStore": True, "AllowFind": False,
                      "AllowMove": False, "AllowGet": False, "AllowStorageCommitment": False}
        modalities[f"peer{n}"] = entry
    storage = tmp / "orthanc-storage"
    config = {
        "Name": f"dbdsim-{ae_title}",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "StorageCompression": False,
        "StoreMD5ForAttachments": False,
        "SyncStorageArea": False,  # a test archive need not survive a power cut
        "Plugins": [],
        "LuaScripts": [],
        "SaveJobs": False,
        "HttpServerEnabled": True,  # for /statistics after the load
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "MetricsEnabled": False,
        "HttpThreadsCount": 4,
        "DicomServerEnabled": True,
        "DicomAet": ae_title,
        "DicomPort": port,
        "DicomCheckCalledAet": True,
        "DicomModalities": modalities,
        "DicomModalitiesInDatabase": False,
        # Only registered modalities may do anything (per-modality Allow* default true).
        "DicomAlwaysAllowEcho": False,
        "DicomAlwaysAllowStore": False,
        "DicomAlwaysAllowFind": False,
        "DicomAlwaysAllowFindWorklist": False,
        "DicomAlwaysAllowGet": False,
        "DicomAlwaysAllowMove": False,
        "DicomThreadsCount": 8,
        "DicomAssociationCloseDelay": 0,  # no lingering sub-associations after a move
        "SynchronousCMove": True,
    }
    config_path = tmp / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    log = tmp / "orthanc.log"  # Orthanc logs to stderr, which running() keeps here
    argv = [_executable("Orthanc"), "--no-jobs", str(config_path)]
    with ExitStack() as stack:
        try:  # running() stops it again when it does not start
            proc = stack.enter_context(running(argv, port, log))
            wait_for_port(http_port, proc)
            # Listening is not serving: Orthanc opens its index first.
            wait_for_echo(LOOPBACK, port, ae_title, LOADER_AE, _READY_TIMEOUT, proc=proc,
                          executable=_executable("echoscu"))
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"Orthanc did not start: {exc}\n"
                               f"{tail(log, _LOG_TAIL_LINES)}") from exc

        def stored() -> int:
            url = f"http://{LOOPBACK}:{http_port}/statistics"
            with urllib.request.urlopen(url, timeout=30) as response:
                return int(json.load(response)["CountInstances"])

        yield ArchiveServer("orthanc", LOOPBACK, port, ae_title, log), stored


def _load(server: ArchiveServer, paths: list[Path], staging: Path, expected: int,
          stored: Count) -> None:
    """Send ``paths`` with one storescu association, then count what the server holds.

    storescu gets a folder of symlinks and ``+sd``, so no file list meets argv limits
    and files from many folders still go in one association.
    """
    if not paths:
        return
    shutil.rmtree(staging, ignore_errors=True)  # symlinks only: the files stay
    staging.mkdir(parents=True)
    for n, path in enumerate(paths):
        (staging / f"{n:07d}.dcm").symlink_to(path.resolve())
    result = dcmtk(_executable("storescu"), "-aet", LOADER_AE, "-aec", server.ae_title,
                   "+sd", "+r", server.host, str(server.port), str(staging),
                   timeout=120 + 0.2 * len(paths))
    problem = f"storescu exited with {result.returncode}" if result.returncode else ""
    if not problem:
        held = stored()
        if held != expected:
            problem = f"{server.kind} holds {held} instances, {expected} were sent"
    if problem:
        output = "\n".join(result.stdout.splitlines()[-_LOG_TAIL_LINES:])
        raise RuntimeError(f"loading {server.kind} failed: {problem}\n"
                           f"--- storescu ---\n{output}\n--- {server.log} ---\n"
                           f"{server.log_tail()}")


def _executable(name: str) -> str:
    path = find_executable(name)
    if path is None:
        raise FileNotFoundError(f"{name!r} is not installed (neither on PATH nor in sbin)")
    return path
