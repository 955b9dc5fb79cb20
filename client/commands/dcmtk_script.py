"""``rtmove dcmtk-script``: a manifest as the movescu scripts a site runs today.

A site that moves plans with DCMTK scripts (Varian's ESAPI sample) can set them
beside rtmove's manifest line by line, or keep using them with rtmove's choice of
objects.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from client.dcmtk_script import DEFAULT_DCMTK_BIN_WINDOWS, write_scripts
from client.errors import DicomError, Kind
from client.manifest import Manifest

from .common import SubParsers, add_connection_options, run, settings


def register(commands: SubParsers) -> None:
    p = commands.add_parser(
        "dcmtk-script", help="write DCMTK movescu scripts (.cmd and .sh) for a manifest",
        description="Write, per plan of the manifest, the Windows .cmd Varian's ESAPI sample "
                    "writes (and a POSIX .sh twin): one movescu per image series and per RT "
                    "object, from the DB Daemon to the move destination.")
    p.add_argument("--manifest", type=Path, required=True, metavar="FILE",
                   help="the rtmove manifest (JSON) whose collections to script")
    p.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                   help="folder the scripts are written to (default: the current one)")
    p.add_argument("--dest", metavar="AE|self",
                   help="move destination AE title, or 'self' for this client's AE "
                        "(a storescp must listen there); default: the site's File Daemon")
    p.add_argument("--dcmtk-bin-windows", default=DEFAULT_DCMTK_BIN_WINDOWS, metavar="PATH",
                   help="DCMTK's bin folder on the Windows machine, put first on PATH by "
                        "the .cmd ('' leaves PATH alone; default: %(default)s)")
    p.add_argument("--dcmtk-bin", default="", metavar="PATH",
                   help="DCMTK's bin folder for the .sh (default: leave PATH alone)")
    p.add_argument("--hierarchical", action="store_true",
                   help="also send the higher levels' UIDs (StudyInstanceUID, and "
                        "SeriesInstanceUID for instances): strict servers such as dcmqrscp "
                        "need them; the DB Daemon does not")
    add_connection_options(p)
    p.set_defaults(handler=run(_dcmtk_script))


def _dcmtk_script(args: argparse.Namespace) -> int:
    manifest = Manifest.load(args.manifest)
    s = settings(args, dest=args.dest)
    try:
        paths = write_scripts(manifest, s, args.out, dcmtk_bin_windows=args.dcmtk_bin_windows,
                              dcmtk_bin_posix=args.dcmtk_bin, hierarchical=args.hierarchical)
    except OSError as exc:
        raise DicomError(f"cannot write the scripts into {args.out}: {exc.strerror or exc}",
                         Kind.LOCAL) from exc
    if args.json:
        print(json.dumps({"ok": True, "scripts": [str(path) for path in paths]}))
    else:
        for path in paths:
            print(path)
    return 0
