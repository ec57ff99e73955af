"""benchmarks/bench_stage2.py in its smallest mode: every model builds, enters stage 2 and
steps, and one run prints a stage-2 / stage-1 ratio per model and the cLoRA / LoRA ratios.
A benchmark, not a timing test: the values are not asserted."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.timeout(300)
def test_smallest_run_prints_a_ratio_line_per_model():
    cmd = [sys.executable, osp.join(REPO, 'benchmarks', 'bench_stage2.py'),
           '--models', 'toy,sd,lora,clora', '--steps', '1', '--warmup', '0', '--size', '64',
           '--det-batch', '1', '--cls-batch', '4']
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=280,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    number = r'\d+\.\d{3}'
    for key in ('toy', 'sd', 'lora', 'clora'):
        assert re.search(rf'^{key} +input .*: stage 1 {number}\d s, stage 2 {number}\d s, '
                         rf'stage-2/stage-1 {number}x \(goal <= 1\.3x\) (ok|OVER)$',
                         proc.stdout, re.M), proc.stdout
    for stage in (1, 2):
        assert re.search(rf'^clora/lora stage {stage}: {number}x \(goal <= 3\.3x: 3 routes',
                         proc.stdout, re.M), proc.stdout


def test_unknown_model_is_refused():
    proc = subprocess.run([sys.executable, osp.join(REPO, 'benchmarks', 'bench_stage2.py'),
                           '--models', 'toy,nope'], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "unknown ['nope']" in proc.stderr
