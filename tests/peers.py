"""Start and stop real DICOM peers (DCMTK, Orthanc) for tests, on ports picked free at run time."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool | None:
    """Whether a socket listens on ``port``, read from /proc (None: cannot tell here).

    Looking is better than connecting: dcmqrscp 3.6.7 answers a bare TCP probe with a
    state-machine error, and in --single-process mode the probe can cost the one
    association the test wanted.
    """
    found = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False if found else None


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        state = _listening(port)
        if state:
            return
        if state is None:  # no /proc: fall back to connecting
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                pass
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


@contextmanager
def running(argv: list[str], port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A server process that is listening on ``port`` inside the block, stopped after."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for_port(port, proc)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def dcmqrscp_config(folder: Path, port: int, aet: str, peers: dict[str, tuple[str, int]],
                    ) -> Path:
    """A dcmqrscp config serving one storage area ``aet`` to any peer; HostTable = peers."""
    storage = folder / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    hosts = "\n".join(f"{name} = ({title}, {host}, {p})"
                      for name, (title, host, p) in
                      ((n.lower(), (n, h, pp)) for n, (h, pp) in peers.items()))
    text = f"""NetworkTCPPort = {port}
MaxPDUSize = 16384
MaxAssociations = 16

HostTable BEGIN
{hosts}
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
{aet} {storage} RW (200, 1024mb) ANY
AETable END
"""
    config = folder / "dcmqrscp.cfg"
    config.write_text(text)
    return config
