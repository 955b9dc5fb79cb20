#!/usr/bin/env bash
# The main job on the embedded default: a seeded synthetic RT archive and a picture of it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${OUT:-out}
.venv/bin/dbdsim generate --patients "${PATIENTS:-3}" --seed "${SEED:-1}" --profile messy \
  --out "$out/archive"
.venv/bin/dbdsim preview --seed "${SEED:-1}" --patient 0 --profile messy --out "$out/preview.png"
