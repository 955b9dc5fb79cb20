#!/usr/bin/env bash
# Shared by demo.sh and test.sh: a venv at .venv with dbdsim installed (EXTRAS=test adds
# the test tools), and, with SYSTEM_TOOLS=1, DCMTK, dicom3tools and Orthanc from Debian.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SYSTEM_TOOLS:-0}" = 1 ]; then
  if ! command -v dcmqrscp >/dev/null 2>&1 || ! command -v dciodvfy >/dev/null 2>&1 ||
     ! { [ -x /usr/sbin/Orthanc ] || command -v Orthanc >/dev/null 2>&1; }; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "== installing DCMTK, dicom3tools and Orthanc from Debian"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends dcmtk dicom3tools orthanc >/dev/null
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$python" -m venv .venv
fi
echo "== installing dbdsim${EXTRAS:+[$EXTRAS]} into .venv"
log=.venv/pip-install.log
# pip's build warnings are noise on success; the log is shown when it fails.
if ! { .venv/bin/python -m pip install --upgrade pip &&
       .venv/bin/python -m pip install -e ".${EXTRAS:+[$EXTRAS]}"; } >"$log" 2>&1; then
  tail -40 "$log" >&2
  echo "pip install failed; the whole log is $log" >&2
  exit 1
fi
