"""tools/rehearse_dota.sh, reduced for CI: the SD LoRA and debLoRA DOTA configs on the real
DOTA sample patches, with a tiny random SD of SD v1.5's block layout at 64 px (the full
rehearsal uses SD v1.5's architecture: docs/rehearsal.md)."""
import csv
import os
import os.path as osp
import subprocess
import zipfile

import pytest
import torch

from tests.conftest import REPO

STEPS = ['weights_sd', 'sd_lora_train', 'sd_lora_resume', 'sd_lora_test', 'sd_lora_task1',
         'deblora_train', 'deblora_test', 'deblora_task1']


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_reduced_rehearsal(tmp_path, shared_data):
    out = tmp_path / 'out'
    env = dict(os.environ, ARCH='tiny', SIZE='64', STEPS='sd_lora deblora',
               WEIGHTS=str(tmp_path / 'weights'), MIN_FREE_GB='2',
               MMDEBLORA_SHARED_DATA=shared_data, OMP_NUM_THREADS='2')
    proc = subprocess.run(['bash', osp.join(REPO, 'tools', 'rehearse_dota.sh'), str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=1750)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    with open(out / 'summary.tsv') as f:
        rows = list(csv.DictReader(f, delimiter='\t'))
    assert [r['step'] for r in rows] == STEPS
    assert all(float(r['wall_s']) > 0 and float(r['peak_rss_gib']) > 0 for r in rows)

    # stage-1 LoRA: slim checkpoints, peft adapter folders, a resume from a slim checkpoint
    ckpt = torch.load(out / 'sd_lora' / 'epoch_1.pth', map_location='cpu', weights_only=True)
    left = ckpt['meta']['slim_checkpoint']['backbone']['keys']
    assert left and not set(left) & set(ckpt['state_dict'])
    assert (out / 'sd_lora' / 'epoch_2_adapters' / 'backbone' / 'adapter_config.json').is_file()
    resume = (out / 'logs' / 'sd_lora_resume.log').read_text()
    assert 'resumed epoch: 1' in resume and 'Epoch(train) [2][1/1]' in resume

    # debLoRA: stage 1, the switch, stage 2; tested; Task1 files merged to full images
    train = (out / 'logs' / 'deblora_train.log').read_text()
    assert 'Epoch(train) [1][1/1]' in train and 'Epoch(train) [2][1/1]' in train
    assert (out / 'deblora' / 'stage1_final.pth').is_file()
    stage2 = torch.load(out / 'deblora' / 'epoch_2.pth', map_location='cpu',
                        weights_only=True)['state_dict']
    assert [k for k in stage2 if '.lora_A.deblora.' in k]
    assert 'dota/mAP' in (out / 'logs' / 'deblora_test.log').read_text()
    for run in ('sd_lora_task1', 'deblora_task1'):
        with zipfile.ZipFile(out / run / 'Task1' / 'Task1.zip') as z:
            assert len(z.namelist()) == 15  # one Task1_<class>.txt per DOTA class
        lines = (out / run / 'Task1' / 'Task1_plane.txt').read_text().split('\n')
        assert {ln.split(' ')[0] for ln in lines if ln} <= {'P0004', 'P2805'}
