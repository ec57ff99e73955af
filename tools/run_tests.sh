#!/usr/bin/env bash
# Install (tools/install.sh, idempotent) and run the test suite: the README's test command.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh tests/datasets -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/install.sh
export MPLBACKEND=Agg HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
