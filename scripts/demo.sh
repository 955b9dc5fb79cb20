#!/usr/bin/env bash
# The main job on the embedded default: a seeded synthetic RT archive and a picture of it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${OUT:-out}
# Seed 13: its first five patients show every kind of mess and five locales.
seed=${SEED:-13}
.venv/bin/dbdsim generate --patients "${PATIENTS:-5}" --seed "$seed" --profile messy \
  --out "$out/archive"
.venv/bin/dbdsim preview --seed "$seed" --patient 0 --profile messy --out "$out/preview.png"
