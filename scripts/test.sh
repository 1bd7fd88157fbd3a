#!/usr/bin/env bash
# The whole test suite from a fresh machine: set-up, lint, types, unit tests,
# and the kernel suite inside one virtme-ng VM (started by the test run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH" PYTHONPATH="$PWD"
ruff check .
ruff format --check .
mypy
make -s -C bpf_offload  # the XDP object from source (no binary is committed)
python -m pytest -p no:cacheprovider -ra --durations=20 tests "$@"
