"""Real third-party DICOM peers (DCMTK's dcmqrscp, any server process) started on free
loopback ports, for tests, benchmarks and (next) the pytest plugin.

Why here: the benchmarks cannot import from ``tests/``, and every copy of these steps
had to learn the same traps (measured on DCMTK 3.6.7):

* readiness is read from /proc, not probed: dcmqrscp answers a bare TCP connect with a
  state-machine error ("state 1 event 7"), which can break a later move
  sub-association; being served is then proved with a C-ECHO (:func:`wait_for_echo`);
* dcmqrscp runs in its default forking mode, since ``--single-process`` stops
  accepting after the first association; its forked workers are stopped first;
* dcmqrscp keeps at most 500 studies per storage area and deletes the oldest beyond
  that while storescu still reports success;
* every DCMTK tool gets ``TCP_NODELAY=1`` (else ~40 ms per object on loopback).

Linux reads /proc; elsewhere the waits fall back (or leave it to the C-ECHO).
This module imports nothing from the client, and the client nothing from it.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Without TCP_NODELAY a DCMTK tool waits ~40 ms for each object's last segment on loopback.
DCMTK_ENV: dict[str, str] = {**os.environ, "TCP_NODELAY": "1"}
# dcmqrscp's hard limit per storage area: it lowers a larger quota with a warning, then
# deletes the oldest studies beyond it while storescu still reports success.
DCMQRSCP_MAX_STUDIES = 500
DCMQRSCP_MB_PER_STUDY = 1024  # the quota's second number is per study, not in total
READY_TIMEOUT = 30.0  # seconds for dcmqrscp to listen and answer C-ECHO
LOG_TAIL = 30  # lines of a server's log in an error message


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PICK = 10000  # below: well-known and commonly configured services
_PICKS = random.Random()  # its own: tests that seed the global generator stay repeatable


def free_port() -> int:
    """A loopback TCP port free now; another process may still take it later.

    Picked below the range the OS gives outgoing connections, where it can tell: a port
    the OS picks (a bind to port 0) is such an ephemeral port, which any connection on
    the machine may take before the server meant to listen on it starts. In a CI run
    with two test workers opening thousands of associations, a storescp once exited
    "before listening" that way.
    """
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    for _ in range(50 if low > _LOWEST_PICK + 1000 else 0):
        port = _PICKS.randrange(_LOWEST_PICK, low)
        with socket.socket() as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue  # in use: another pick
            return port
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool | None:
    """Whether a socket listens on ``port``, read from /proc (None: cannot tell here).

    Looking is better than connecting: dcmqrscp 3.6.7 answers a bare TCP connect with
    a state-machine error, which can break a later move sub-association, and in
    ``--single-process`` mode the probe costs the one association a test wanted.
    """
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False if readable else None


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0, *,
                  connect: bool = True) -> None:
    """Until ``proc`` listens on ``port``. Without /proc to tell, connect to see
    (``connect=False``: return, and let a C-ECHO prove it, for servers a bare connect
    upsets). Raises RuntimeError if ``proc`` exits first, TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        state = listening(port)
        if state:
            return
        if state is None:
            if not connect:
                return
            try:
                with socket.create_connection((LOOPBACK, port), timeout=0.2):
                    return
            except OSError:
                pass
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM ``proc`` and wait for it; SIGKILL if it has not ended after ``timeout``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running(argv: list[str], port: int, log: Path, timeout: float = 15.0,
            ) -> Iterator[subprocess.Popen[bytes]]:
    """A server process (``TCP_NODELAY=1``, output in ``log``) listening on ``port``
    inside the block, stopped and waited for after it (or when it does not start)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=DCMTK_ENV)
        try:
            wait_for_port(port, proc, timeout)
            yield proc
        finally:
            stop(proc)


def tail(log: Path, lines: int = LOG_TAIL) -> str:
    """The end of a server's log, to explain a failure."""
    try:
        text = log.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def wait_for_echo(host: str, port: int, ae_title: str, calling: str,
                  timeout: float = READY_TIMEOUT, *, proc: subprocess.Popen[bytes] | None = None,
                  executable: str = "echoscu") -> None:
    """C-ECHO (DCMTK ``echoscu``, as ``calling``) until ``ae_title`` answers: listening is
    not yet serving (Orthanc opens its index first). Raises RuntimeError, with echoscu's
    output, when ``proc`` (the server, if given) exits or ``timeout`` passes first."""
    tool = shutil.which(executable)
    if tool is None:
        raise FileNotFoundError(f"{executable!r} is not on PATH (DCMTK is needed)")
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run([tool, "-aet", calling, "-aec", ae_title, "-to", "5", host,
                               str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=DCMTK_ENV, timeout=30, check=False)
        if done.returncode == 0:
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{ae_title} exited with {proc.returncode}:\n{done.stdout}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{ae_title} never answered C-ECHO:\n{done.stdout}")
        time.sleep(0.2)


def dcmqrscp_config(folder: Path, port: int, ae_title: str,
                    peers: Mapping[str, tuple[str, int]], *,
                    max_studies: int = DCMQRSCP_MAX_STUDIES, max_associations: int = 16,
                    ) -> Path:
    """Write ``folder/dcmqrscp.cfg``: one storage area ``folder/storage`` called
    ``ae_title`` on ``port``, knowing ``peers`` (AE title -> (host, port)) as its
    HostTable, so as its only move destinations and the only callers it accepts (with no
    peers: any caller). 16 KB max PDU; a quota of ``max_studies`` (at most 500, see
    :data:`DCMQRSCP_MAX_STUDIES`) of 1 GB each."""
    if not 0 < max_studies <= DCMQRSCP_MAX_STUDIES:
        raise ValueError(f"dcmqrscp keeps 1 to {DCMQRSCP_MAX_STUDIES} studies per storage "
                         f"area; got max_studies={max_studies}")
    storage = folder / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    names = {title: f"peer{n}" for n, title in enumerate(peers)}
    hosts = "\n".join(f"{names[title]} = ({title}, {host}, {peer_port})"
                      for title, (host, peer_port) in peers.items())
    callers = ", ".join(names.values()) or "ANY"
    config = folder / "dcmqrscp.cfg"
    config.write_text(f"""NetworkTCPPort = {port}
MaxPDUSize = 16384
MaxAssociations = {max_associations}

HostTable BEGIN
{hosts}
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
{ae_title} {storage} RW ({max_studies}, {DCMQRSCP_MB_PER_STUDY}mb) {callers}
AETable END
""")
    return config


@dataclass(frozen=True)
class Dcmqrscp:
    """A running dcmqrscp as its callers address it."""

    host: str  # 127.0.0.1
    port: int
    ae_title: str
    storage: Path  # its storage area's folder
    log: Path  # its output, for error messages

    def stored(self) -> int:
        """How many instances it holds (files in its storage area)."""
        return sum(1 for p in self.storage.iterdir() if p.is_file() and p.name != "index.dat")

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        return tail(self.log, lines)


@contextmanager
def dcmqrscp(folder: Path, ae_title: str, peers: Mapping[str, tuple[str, int]], caller: str,
             *, port: int | None = None, executable: str = "dcmqrscp",
             max_studies: int = DCMQRSCP_MAX_STUDIES, max_associations: int = 16,
             timeout: float = READY_TIMEOUT) -> Iterator[Dcmqrscp]:
    """dcmqrscp serving :func:`dcmqrscp_config` (config, storage and log under ``folder``)
    on ``port`` (default: a free one), ready inside the block: listening (read from
    /proc, never probed) and answering a C-ECHO from ``caller``, which must be one of
    ``peers`` (if any). Stopped after the block, workers first (:func:`stop_dcmqrscp`).

    Default forking mode: ``--single-process`` stops accepting after one association.
    ``--disable-host-lookup`` makes a caller's host its address, as the HostTable says,
    so an unknown caller gets a real A-ASSOCIATE-RJ. Raises RuntimeError with the log's
    tail when it does not start.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port() if port is None else port
    config = dcmqrscp_config(folder, port, ae_title, peers, max_studies=max_studies,
                             max_associations=max_associations)
    server = Dcmqrscp(LOOPBACK, port, ae_title, folder / "storage", folder / "dcmqrscp.log")
    argv = [executable, "--disable-host-lookup", "-c", str(config)]
    with server.log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=DCMTK_ENV)
    try:
        try:
            wait_for_port(port, proc, timeout, connect=False)
            wait_for_echo(LOOPBACK, port, ae_title, caller, timeout, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"dcmqrscp did not start: {exc}\n{server.log_tail()}") from exc
        yield server
    finally:
        stop_dcmqrscp(proc)


def stop_dcmqrscp(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """Stop dcmqrscp's workers (one forked per association), then dcmqrscp.

    A worker whose caller never let go would outlive the parent, so it gets SIGTERM by
    id; then we wait until the parent has reaped every worker (its loop does so about
    once a second), since orphans would linger as ``<defunct>`` until init reaps them.
    Linux only: elsewhere there is no /proc to find them in, and the parent just stops.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (workers := children(proc.pid)):
        for pid, state in workers.items():
            if state != "Z":  # "Z": exited, not yet reaped
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        time.sleep(0.05)
    stop(proc)


def children(pid: int) -> dict[int, str]:
    """``pid``'s child processes and their states, from /proc (empty: none, or no /proc)."""
    try:
        ids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return {}
    states = {}
    for child in ids:
        try:  # "pid (comm) state ...": comm may hold spaces; the state follows the last ')'
            states[child] = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
    return states
