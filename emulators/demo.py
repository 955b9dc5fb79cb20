"""``dbdsim demo``: the whole job on one machine, as a site would run it.

Both emulated daemons start on the default site over a seeded archive; then
``rtmove collect`` runs in its own process, exactly as a researcher runs it against a
real DB Daemon, moving one plan's collection to the File Daemon and verifying it in
the File Daemon's folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from client.site import Site, load_site_or_default

from .archive import Archive
from .cli_common import (
    CommandError,
    SubParsers,
    add_archive_options,
    int_at_least,
    synthetic_config,
)
from .peers import free_port
from .serve import configure_logging, serving, with_ports
from .service import DaemonError
from .synthetic import make_recipe


def _site(args: argparse.Namespace) -> Site:
    site = load_site_or_default(args.site)
    fd = dataclasses.replace(site.file_daemon, output=args.out / "filedaemon")
    site = dataclasses.replace(site, file_daemon=fd)
    if args.free_ports:  # 0: each daemon takes a free port; the client's receive port too
        client = dataclasses.replace(site.client, port=free_port())
        site = with_ports(dataclasses.replace(site, client=client), 0, 0)
    return site


def _run_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    configure_logging(args.log_level)
    config = synthetic_config(args, parser)
    if args.patient >= args.patients:
        parser.error(f"--patient {args.patient}: the archive has {args.patients} patients")
    recipe = make_recipe(config, args.patient)
    plan = recipe.plans[0]
    site = _site(args)
    archive = Archive.synthetic(config, args.patients)
    try:
        with serving(site, archive) as (dbd, fd):
            patient_folder = fd.output / recipe.patient_id
            argv = [sys.executable, "-m", "client.cli", "collect",
                    "--patient", recipe.patient_id, "--plan", plan.uid,
                    "--host", "127.0.0.1", "--port", str(dbd.port),
                    "--aec", site.db_daemon.ae_title, "--aet", site.client.ae_title,
                    "--recv-port", str(site.client.port), "--dest", site.file_daemon.ae_title,
                    "--verify-dir", str(patient_folder),
                    "--write-manifest", str(args.out / "manifest.json")]
            if args.json:
                argv.append("--json")
            print(f"{dbd.ready_line()}\n{fd.ready_line()}, writing to {fd.output}",
                  file=sys.stderr, flush=True)
            print(f"patient {recipe.patient_id}, plan {plan.label} ({plan.uid})\n$ rtmove "
                  + " ".join(argv[3:]), file=sys.stderr, flush=True)
            done = subprocess.run(argv, check=False, env={**os.environ, "TCP_NODELAY": "1"})
    except DaemonError as exc:
        raise CommandError(f"{exc} (use --free-ports if something else holds the default "
                           "ports)") from exc
    finally:
        archive.close()
    files = sorted(patient_folder.glob("*.dcm")) if patient_folder.is_dir() else []
    print(f"{len(files)} files in {patient_folder}; manifest {args.out / 'manifest.json'}",
          file=sys.stderr)
    return done.returncode


def add_demo(commands: SubParsers[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo", help="serve a seeded archive and move one plan with rtmove",
        description="Start the DB Daemon and the File Daemon on the default site (or "
                    "--site) over a seeded archive, run `rtmove collect` of one plan to the "
                    "File Daemon in its own process, verify it there, and stop.")
    parser.add_argument("--site", type=Path, metavar="SITE.toml",
                        help="site file (default: the embedded default site)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), metavar="DIR",
                        help="the File Daemon writes DIR/filedaemon/<patient id>/; the "
                             "manifest goes to DIR/manifest.json (default: %(default)s)")
    parser.add_argument("--patients", type=int_at_least(1), default=5, metavar="N",
                        help="patients in the archive (default: %(default)s)")
    parser.add_argument("--patient", type=int_at_least(0), default=0, metavar="INDEX",
                        help="whose first plan to move (default: %(default)s)")
    parser.add_argument("--free-ports", action="store_true",
                        help="any free ports instead of the site's (5678, 5679, 5680)")
    parser.add_argument("--json", action="store_true", help="rtmove's report as JSON")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        default="warning", help="the daemons' log (default: %(default)s)")
    add_archive_options(parser, seed_default=13)
    parser.set_defaults(run=_run_demo, command_parser=parser)
