"""Options every sub-command shares, and how a failure is reported and exits."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from client import log_limits
from client.errors import DicomError, Kind
from client.manifest import ManifestError
from client.settings import Settings, load
from client.site import SiteError

Handler = Callable[[argparse.Namespace], int]
SubParsers = Any  # argparse's _SubParsersAction is private


def add_connection_options(parser: argparse.ArgumentParser, *, moves: bool = True) -> None:
    """``--site`` and the flags that override it (the DB Daemon, our AE, where we receive)."""
    g = parser.add_argument_group("site (each flag overrides the site file)")
    g.add_argument("--site", type=Path, help="site file (TOML); default: the embedded default")
    g.add_argument("--host", help="the DB Daemon's host (any Q/R SCP)")
    g.add_argument("--port", type=int, help="the DB Daemon's port")
    g.add_argument("--aec", help="the DB Daemon's (called) AE title")
    g.add_argument("--aet", help="this client's (calling) AE title")
    g.add_argument("--timeout", type=float, help="seconds to wait for any answer")
    if moves:
        g.add_argument("--recv-port", type=int,
                       help="port of this client's own Storage SCP (receives headers, --dest self)")
    add_output_options(parser)


def add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: rtmove's log; -vv: pynetdicom's DICOM log too")


def settings(args: argparse.Namespace, **extra: object) -> Settings:
    return load(args.site, host=args.host, port=args.port, aec=args.aec, aet=args.aet,
                timeout=args.timeout, recv_port=getattr(args, "recv_port", None), **extra)


def configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    # pynetdicom's own log is a firehose: only at -vv.
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    # Patient IDs and names may show (the user asked for them); pixel data never does.
    for handler in logging.getLogger().handlers:
        log_limits.install(handler)
        if verbose < 2:
            handler.addFilter(_no_pynetdicom_tracebacks)


def _no_pynetdicom_tracebacks(record: logging.LogRecord) -> bool:
    """pynetdicom logs a traceback with its errors (a peer closing mid-PDU, say): below
    -vv only its one-line message shows, since rtmove explains the failure itself and a
    traceback reads as rtmove crashing."""
    if record.name.startswith("pynetdicom"):
        record.exc_info, record.exc_text = None, None
    return True


def fail(args: argparse.Namespace, exc: Exception) -> int:
    """Report ``exc`` (one sentence, or a JSON object) and return its exit code."""
    if isinstance(exc, DicomError):
        kind, transient = exc.kind, exc.transient
    elif isinstance(exc, SiteError | ManifestError):
        kind, transient = Kind.USAGE, False
    else:
        raise exc
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": str(exc), "kind": kind.name.lower(),
                          "exit_code": int(kind), "transient": transient}))
    else:
        print(f"rtmove: {exc}", file=sys.stderr)
    return int(kind)


def run(handler: Handler) -> Handler:
    """Wrap a handler: logging from -v, expected failures turned into their exit code."""
    def wrapped(args: argparse.Namespace) -> int:
        configure_logging(getattr(args, "verbose", 0))
        try:
            return handler(args)
        except (DicomError, SiteError, ManifestError) as exc:
            return fail(args, exc)
        except KeyboardInterrupt:
            print("rtmove: interrupted; a re-run moves only what is missing", file=sys.stderr)
            return 130
    return wrapped


def patient_id(text: str) -> str:
    """``--patient``: matched exactly, so no character C-FIND reads as a pattern or list."""
    value = text.strip()
    if not value:
        raise argparse.ArgumentTypeError("the Patient ID is empty")
    bad = sorted({ch for ch in value if ch in "*?\\" or ord(ch) < 32})
    if bad:
        raise argparse.ArgumentTypeError(
            f"{value!r} holds {', '.join(repr(ch) for ch in bad)}: C-FIND would read it as a "
            "wildcard or a list of IDs and match other patients")
    if len(value) > 64:
        raise argparse.ArgumentTypeError(f"{value[:20]!r}...: a Patient ID (LO) has at most "
                                         "64 characters")
    return value
