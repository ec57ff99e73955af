#!/usr/bin/env bash
# Lint the repository as CI does: flake8 and isort --check-only, settings in setup.cfg,
# versions in requirements/lint.txt (installed into .venv/ when missing).
#   bash tools/lint.sh            # check
#   bash tools/lint.sh --fix      # let isort rewrite the imports, then check
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
if [ ! -x "$PY" ]; then
  echo "[lint] $PY not found: run bash tools/install.sh first" >&2
  exit 1
fi
if ! "$PY" - <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
want = dict(line.strip().split('==') for line in open('requirements/lint.txt')
            if '==' in line and not line.startswith('#'))
try:
    sys.exit(0 if all(version(k) == v for k, v in want.items()) else 1)
except PackageNotFoundError:
    sys.exit(1)
PYEOF
then
  echo "[lint] installing requirements/lint.txt into $(dirname "$(dirname "$PY")")"
  "$PY" -m pip install --disable-pip-version-check -q -r requirements/lint.txt
fi
if [ "${1:-}" = "--fix" ]; then
  "$PY" -m isort .
fi
status=0
echo "[lint] flake8"
"$PY" -m flake8 . || status=1
echo "[lint] isort --check-only"
"$PY" -m isort --check-only --diff . || status=1
if [ "$status" -ne 0 ]; then
  echo "[lint] FAILED (import order: bash tools/lint.sh --fix; flake8: fix by hand)" >&2
  exit 1
fi
echo "[lint] ok"
