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


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
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
