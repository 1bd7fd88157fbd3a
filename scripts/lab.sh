#!/usr/bin/env bash
# `ipvsmgr lab` from a fresh machine: set-up, then the lab. On this machine's
# kernel (no IPVS) `ipvsmgr lab` boots a VM with Debian's kernel and runs
# itself there; everything it builds lives and dies inside that VM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
PYTHONPATH="$PWD" exec .venv/bin/python -m ipvsmgr lab "$@"
