#!/usr/bin/env bash
# The main job on the embedded default: install, then `dbdsim demo` starts the emulated
# DB Daemon (VMSDBD1, 5678) and File Daemon (VMSFD, 5679) over a seeded archive, runs
# `rtmove collect` of one plan to the File Daemon in its own process, verifies it, and
# prints where the files are. Also writes a picture of that patient (out/preview.png).
# Extra arguments go to `dbdsim demo` (e.g. --free-ports, --patient 2, --json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${OUT:-out}
# Seed 13: its first five patients show every kind of mess and five locales.
seed=${SEED:-13}
.venv/bin/dbdsim preview --seed "$seed" --patient 0 --profile messy --out "$out/preview.png"
exec .venv/bin/dbdsim demo --seed "$seed" --profile messy --out "$out/demo" "$@"
