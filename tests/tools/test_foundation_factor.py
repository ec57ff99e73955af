"""tools/analysis/foundation_factor.py: the foundation as a factor of one comparison."""
import importlib.util
import json
import os
import os.path as osp

import pytest

from tests.conftest import REPO

_spec = importlib.util.spec_from_file_location(
    'foundation_factor', osp.join(REPO, 'tools', 'analysis', 'foundation_factor.py'))
ff = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ff)


def write(dir_, row, seed, tail, foundation):
    out = osp.join(dir_, row, f'seed{seed}')
    os.makedirs(out)
    with open(osp.join(out, 'result.json'), 'w') as fh:
        json.dump(dict(row=row, seed=seed, metrics=dict(tail_f1=tail),
                       fingerprints=dict(data='d', foundation=foundation)), fh)


def test_pooled_and_per_foundation_differences(tmp_path):
    # two foundations, 2 seeds each; debLoRA - LoRA is +1, +3 (f0) and -2, -2 (f1)
    values = {'f0': dict(lora=[10, 20], lora_deblora=[11, 23]),
              'f1': dict(lora=[30, 40], lora_deblora=[28, 38])}
    dirs = []
    for f, rows in values.items():
        d = str(tmp_path / f)
        dirs.append(d)
        for row, tails in rows.items():
            for seed, t in enumerate(tails):
                write(d, row, seed, t, foundation=f'print_{f}')
    text = ff.table(dirs, ['lora', 'lora_deblora'], 'tail_f1')
    assert 'print_f0' in text and 'print_f1' in text
    assert '+2.0' in text.split('\n')[4]  # f0: mean of +1 and +3
    assert '-2.0' in text.split('\n')[5]  # f1
    pooled = [ln for ln in text.splitlines() if ln.startswith('- lora_deblora - lora')][0]
    # 4 pairs: mean of (+1, +3, -2, -2) = 0.0; the foundations' means (+2, -2): 0.0, n=2
    assert 'pairs +0.0' in pooled and '(n=4)' in pooled and '(n=2)' in pooled


def test_a_dir_mixing_foundations_is_refused(tmp_path):
    d = str(tmp_path / 'mixed')
    write(d, 'lora', 0, 10, foundation='a')
    write(d, 'lora_deblora', 0, 11, foundation='b')
    with pytest.raises(ValueError, match='mixes runs of several foundations'):
        ff.table([d], ['lora', 'lora_deblora'], 'tail_f1')


def test_a_missing_metric_names_the_file(tmp_path):
    d = str(tmp_path / 'f')
    write(d, 'lora', 0, 10, foundation='a')
    with pytest.raises(KeyError, match='result.json has no metric'):
        ff.table([d], ['lora', 'lora_deblora'], 'mAP')
