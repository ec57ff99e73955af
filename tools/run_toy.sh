#!/usr/bin/env bash
# The main job on the built-in default: install, generate the long-tailed toy DOTA,
# train Oriented R-CNN (ResNet-18) on the CPU, and test it (per-class and group AP table).
# CONFIG=... picks another toy config; WORK_DIR=... the output folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CONFIG="${CONFIG:-configs/baselines/oriented_rcnn_r18_toy.py}"
WORK_DIR="${WORK_DIR:-work_dirs/$(basename "$CONFIG" .py)}"
bash tools/install.sh
PY=.venv/bin/python
$PY tools/data/make_toy_dota.py data/toy_dota
$PY tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
CKPT="$(ls -t "$WORK_DIR"/epoch_*.pth | head -n 1)"
$PY tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR"
