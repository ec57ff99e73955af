"""benchmarks/bench_stage2.py in its smallest mode: every model builds, enters stage 2 and
steps, and one run prints a stage-2 / stage-1 ratio per model, where the stage-2 time goes
(stage 1 + target pass), the cost of one tail-replay image and the cLoRA / LoRA ratios. A
benchmark, not a timing test: the values are not asserted beyond being positive, finite and
consistent with each other."""
import math
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
           '--det-batch', '1', '--cls-batch', '4', '--replay', '1']
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=280,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    number = r'\d+\.\d{3}'
    for key in ('toy', 'sd', 'lora', 'clora'):
        assert re.search(rf'^{key} +input .*: stage 1 {number}\d s, stage 2 {number}\d s, '
                         rf'stage-2/stage-1 {number}x \(goal <= 1\.3x\) (ok|OVER)$',
                         proc.stdout, re.M), proc.stdout
    float_ = r'(\d+\.\d+|inf|nan)'
    for key in ('toy', 'sd', 'lora', 'clora'):
        m = re.search(rf'^{key} +\(a\) stage 1 {float_} s, \(b\) stage 1 \+ target pass '
                      rf'{float_} s, \(c\) stage 2 {float_} s: b/a {float_}x \(allowed\), '
                      rf'c/b {float_}x \(the rest, goal <= 1\.15x\) (ok|OVER)$',
                      proc.stdout, re.M)
        assert m, proc.stdout
        a, b, c, b_a, c_b = map(float, m.groups()[:5])
        for v in (a, b, c, b_a, c_b):
            assert math.isfinite(v) and v > 0, m.group(0)
        # the ratios are of the printed times (rounded to 0.1 ms) and labelled right
        assert b_a == pytest.approx(b / a, rel=0.05), m.group(0)
        assert c_b == pytest.approx(c / b, rel=0.05), m.group(0)
        if abs(c_b - 1.15) > 1e-3:  # (1.150 may be either side of the goal)
            assert (m.group(6) == 'ok') == (c_b <= 1.15), m.group(0)
    for key in ('toy', 'sd', 'lora', 'clora'):  # (d): stage 2 with one tail-replay image
        m = re.search(rf'^{key} +\(a\) .*\(c\) stage 2 {float_} s:.*\n(?:.*\n)*?'
                      rf'^{key} +\(d\) stage 2 \+ 1 replay images {float_} s: '
                      rf'd/c {float_}x, d/a {float_}x$', proc.stdout, re.M)
        assert m, proc.stdout
        c, d, d_c = float(m.group(1)), float(m.group(2)), float(m.group(3))
        assert math.isfinite(d) and d > 0 and d_c == pytest.approx(d / c, rel=0.05)
    for stage in (1, 2):
        assert re.search(rf'^clora/lora stage {stage}: {number}x \(goal <= 3\.3x: 3 routes',
                         proc.stdout, re.M), proc.stdout


def test_unknown_model_is_refused():
    proc = subprocess.run([sys.executable, osp.join(REPO, 'benchmarks', 'bench_stage2.py'),
                           '--models', 'toy,nope'], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "unknown ['nope']" in proc.stderr
