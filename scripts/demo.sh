#!/usr/bin/env bash
# The main job on the embedded default: a seeded synthetic RT archive, a picture of it,
# and both emulated daemons serving it (VMSDBD1 on 5678, VMSFD on 5679), checked with
# a C-ECHO each, then stopped. Set SERVE=forever to keep them running (Ctrl-C stops).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${OUT:-out}
# Seed 13: its first five patients show every kind of mess and five locales.
seed=${SEED:-13}
patients=${PATIENTS:-5}
.venv/bin/dbdsim generate --patients "$patients" --seed "$seed" --profile messy \
  --out "$out/archive"
.venv/bin/dbdsim preview --seed "$seed" --patient 0 --profile messy --out "$out/preview.png"
.venv/bin/dbdsim patients --patients "$patients" --seed "$seed" --profile messy

serve=(.venv/bin/dbdsim serve --patients "$patients" --seed "$seed" --profile messy
       --fd-out "$out/filedaemon")
if [[ "${SERVE:-}" == forever ]]; then
  exec "${serve[@]}"
fi
"${serve[@]}" > "$out/serve.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  grep -q "^File Daemon" "$out/serve.log" 2>/dev/null && break
  sleep 0.1
done
cat "$out/serve.log"
.venv/bin/rtmove echo --port 5678 --aec VMSDBD1
.venv/bin/rtmove echo --port 5679 --aec VMSFD
kill -TERM "$server"
wait "$server"
trap - EXIT
echo "daemons stopped; SERVE=forever bash scripts/demo.sh keeps them running"
