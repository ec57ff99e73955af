"""One training iteration of Oriented R-CNN with LoRA backbones through tools/train.py, and
the SD/DOTA config stopping at once when its local inputs are missing."""
import os.path as osp
import time

import pytest

from tests.conftest import REPO, run_tool, toy_options

# one iteration of 4 images, 2 validation images
ONE_ITER = ['train_dataloader.dataset.indices=4', 'val_dataloader.dataset.indices=2']


@pytest.mark.parametrize('name', ['oriented_rcnn_r18_lora_toy.py',
                                  'oriented_rcnn_sd_tiny_lora_toy.py'])
def test_one_training_iteration(name, toy_root, tmp_path):
    cfg = osp.join(REPO, 'configs', 'baselines', name)
    proc = run_tool('train.py', cfg, '--work-dir', str(tmp_path),
                    *toy_options(toy_root, ONE_ITER))
    log = proc.stdout + proc.stderr
    assert 'Epoch(train) [1][1/1]' in log and 'loss_rpn_cls' in log
    assert 'dota/mAP' in log
    # issue 20: the trainable-parameter count, as classification runs log it, and none of
    # upstream's known warnings (tools/ start-up, mmdeblora.utils.launch)
    assert 'trainable parameters: ' in log and (tmp_path / 'trainable_params.json').is_file()
    for noise in ('pkg_resources', 'The `clip` function does nothing',
                  'Failed to search registry with scope "mmrotate"', '"FileClient"'):
        assert noise not in log, noise
    import torch
    ckpt = torch.load(tmp_path / 'epoch_1.pth', map_location='cpu', weights_only=True)
    lora = [k for k in ckpt['state_dict'] if '.lora_A.default.' in k]
    assert lora and all(k.startswith('backbone.base.') for k in lora)


def test_sd_dota_config_stops_before_building_anything(tmp_path):
    cfg = osp.join(REPO, 'configs', 'deblora', 'oriented_rcnn_sd_dota.py')
    start = time.time()
    proc = run_tool('train.py', cfg, '--work-dir', str(tmp_path), '--cfg-options',
                    f'model.backbone.backbone.pretrained={tmp_path}/no-sd-v1-5',
                    *(f'{k}_dataloader.dataset.data_root={tmp_path}/no-dota/'
                      for k in ('train', 'val', 'test')), check=False)
    err = proc.stderr
    assert proc.returncode != 0 and 'FileNotFoundError' in err
    assert f"model.backbone.backbone.pretrained='{tmp_path}/no-sd-v1-5'" in err
    assert 'train_dataloader.dataset.data_root' in err
    assert '--cfg-options model.backbone.backbone.pretrained=' in err  # how to fix it
    assert 'Stable Diffusion v1.5' in err and 'tools/data/dota/split_dota.py' in err
    assert 'LoRABackbone' not in proc.stdout and not list(tmp_path.glob('*/*.log'))
    assert time.time() - start < 60
