#!/usr/bin/env bash
# `ipvsmgr lab` from a fresh machine: set-up, then the lab inside a VM booted
# from Debian's kernel (this machine's kernel has no IPVS). Prints the tour
# and its summary; everything it builds lives and dies inside the VM.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
KERNEL=$(ls /boot/vmlinuz-* | sort -V | tail -n 1)
vng --run "$KERNEL" --user root --disable-kvm --memory 2G --cpus 2 \
  --exec "cd $PWD && PYTHONPATH=$PWD .venv/bin/python -m ipvsmgr lab"
