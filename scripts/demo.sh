#!/usr/bin/env bash
# ipvsmgr's main job, end to end, from a fresh machine: check the example
# configuration, then inside a VM booted from Debian's kernel (this machine's
# kernel has no IPVS) plan, apply, show `ipvsadm -Ln`, and plan again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" PYTHONPATH="$PWD"
CONFIG=${1:-etc/examples/all-methods.yaml}
python -m ipvsmgr check "$CONFIG"
KERNEL=$(ls /boot/vmlinuz-* | sort -V | tail -n 1)
inner="cd $PWD && export PYTHONPATH=$PWD IPVSMGR_STATE_DIR=/tmp/ipvsmgr-state && set -x &&
  (.venv/bin/python -m ipvsmgr plan -c $CONFIG || true) &&
  .venv/bin/python -m ipvsmgr apply -c $CONFIG &&
  ipvsadm -Ln &&
  .venv/bin/python -m ipvsmgr plan -c $CONFIG"
vng --run "$KERNEL" --user root --disable-kvm --memory 2G --exec "$inner"
