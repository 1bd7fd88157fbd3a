#!/usr/bin/env bash
# The whole test suite from a fresh machine: set-up, lint, types, unit tests,
# and the kernel suite inside one virtme-ng VM (started by the test run); then
# the VRRP and daemon tests again with the newest pyroute2.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" PYTHONPATH="$PWD"
ruff check .
ruff format --check .
mypy
make -s -C bpf_offload  # the XDP object from source (no binary is committed)
python -m pytest -p no:cacheprovider -ra tests "$@"
# VRRP and the daemon again with PyPI's newest pyroute2 (issue 16: 0.9 is asyncio-based);
# the daemons these tests start run on this interpreter, so on that pyroute2 too.
.venv-pyroute2-latest/bin/python -m pytest -p no:cacheprovider -ra \
  tests/netns/test_netlink_host.py tests/netns/test_vrrp_*.py tests/netns/test_bgp.py
