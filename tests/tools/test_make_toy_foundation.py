"""The toy tables' starting point: one seeded command makes it (tools/make_toy_foundation.sh),
the toy LoRA configs load it by default and, without it, stop before building anything with
the command that makes it (issue 20)."""
import os
import os.path as osp
import subprocess

import pytest
from mmengine.config import Config

from tests.conftest import REPO, run_tool

FOUNDATION = 'work_dirs/toy_foundation/epoch_6.pth'
SCRIPT = osp.join(REPO, 'tools', 'make_toy_foundation.sh')
TOY_LORA = ['baselines/oriented_rcnn_r18_lora_toy.py',
            'baselines/oriented_rcnn_r18_lora_reweight_toy.py',
            'baselines/oriented_rcnn_r18_lora_ecm_toy.py',
            'baselines/oriented_rcnn_r18_lora_reslt_toy.py',
            'deblora/oriented_rcnn_r18_deblora_toy.py']


@pytest.mark.parametrize('name', TOY_LORA)
def test_toy_lora_configs_start_from_the_foundation_or_say_how_to_make_it(name, tmp_path):
    from mmdeblora.utils.preflight import check_inputs
    cfg = Config.fromfile(osp.join(REPO, 'configs', name))
    assert cfg.model.backbone.pretrained == FOUNDATION
    cfg.model.backbone.pretrained = str(tmp_path / FOUNDATION)  # not made yet
    with pytest.raises(FileNotFoundError) as err:
        check_inputs(cfg)
    assert f"model.backbone.pretrained='{tmp_path / FOUNDATION}' does not exist" in \
        str(err.value)
    assert 'bash tools/make_toy_foundation.sh' in str(err.value)


def test_training_without_the_foundation_stops_before_building(tmp_path, toy_root):
    cfg = osp.join(REPO, 'configs', 'deblora', 'oriented_rcnn_r18_deblora_toy.py')
    proc = run_tool('train.py', cfg, '--work-dir', str(tmp_path / 'wd'), '--cfg-options',
                    *(f'{k}_dataloader.dataset.data_root={toy_root}/'
                      for k in ('train', 'val', 'test')),
                    f'model.backbone.pretrained={tmp_path / FOUNDATION}', check=False)
    assert proc.returncode != 0
    assert 'model.backbone.pretrained=' in proc.stderr
    assert 'bash tools/make_toy_foundation.sh' in proc.stderr
    assert 'data_root' not in proc.stderr.split('missing:')[-1].split('Point')[0]  # data: ok
    assert 'Epoch(train)' not in proc.stdout + proc.stderr


def test_the_script_trains_the_plain_toy_config_seeded_into_the_fixed_path(tmp_path):
    """The script's command line, with a stand-in interpreter that records it (the training
    itself is tools/train.py's, tested elsewhere) and writes the checkpoint."""
    record = tmp_path / 'calls.txt'
    shim = tmp_path / 'py'
    shim.write_text('#!/usr/bin/env bash\n'
                    f'echo "$*" >> {record}\n'
                    'if [ "$1" = tools/train.py ]; then mkdir -p "$4"; '
                    'touch "$4/epoch_6.pth"; fi\n')
    shim.chmod(0o755)
    env = dict(os.environ, PY=str(shim), WORK_DIR=str(tmp_path / 'wd'))
    out = subprocess.run(['bash', SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=True).stdout
    train = [c for c in record.read_text().splitlines() if c.startswith('tools/train.py')]
    assert train == [f'tools/train.py configs/baselines/oriented_rcnn_r18_toy.py '
                     f'--work-dir {tmp_path}/wd --cfg-options randomness.seed=0']
    assert f'wrote {tmp_path}/wd/epoch_6.pth' in out
    again = subprocess.run(['bash', SCRIPT], env=env, capture_output=True, text=True,
                           check=True).stdout
    assert 'exists' in again and len(record.read_text().splitlines()) == \
        len(set(record.read_text().splitlines()))  # not trained twice
    # the default output is the path the toy LoRA configs and toy_results.sh read
    text = open(SCRIPT).read()
    assert 'WORK_DIR="${WORK_DIR:-work_dirs/toy_foundation}"' in text
    assert f'FOUNDATION="${{FOUNDATION:-{FOUNDATION}}}"' in open(
        osp.join(REPO, 'tools', 'analysis', 'toy_results.sh')).read()
