"""The Stable Diffusion object-crop configs for GPU users (configs/classification/
sd_lora_dota.py, sd_lora_deblora_dota.py): missing weights or data stop tools/train.py
before anything is built, naming the keys; with a tiny random SD in place of SD v1.5 the
debLoRA config trains through the switch and tools/test.py re-enters stage 2."""
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmdeblora.engine import use_checked_runner
from mmdeblora.utils.launch import build_runner, register_all
from tests.conftest import REPO, run_tool

CFG = osp.join(REPO, 'configs', 'classification')
SD_TINY = osp.join(REPO, 'configs', '_base_', 'models', 'sd_unet_tiny.py')


def test_level_pooling_concatenates_the_chosen_levels():
    from mmdeblora.models.necks import LevelPooling
    feats = tuple(torch.randn(2, c, s, s) for c, s in ((3, 8), (4, 4), (5, 2)))
    out, = LevelPooling(levels=(0, 2))(feats)
    assert torch.allclose(out, torch.cat([feats[0].mean((2, 3)), feats[2].mean((2, 3))], 1))
    with pytest.raises(IndexError, match='neck.levels'):
        LevelPooling(levels=(3, ))(feats)
    with pytest.raises(ValueError, match='neck.levels'):
        LevelPooling(levels=())


@pytest.mark.parametrize('name', ['sd_lora_dota', 'sd_lora_deblora_dota'])
def test_missing_weights_and_data_stop_before_anything_is_built(name, tmp_path):
    proc = run_tool('train.py', osp.join(CFG, name + '.py'), '--work-dir', str(tmp_path),
                    '--cfg-options', f'train_dataloader.dataset.data_root={tmp_path}/none/',
                    check=False)
    assert proc.returncode != 0
    assert 'model.backbone.backbone.pretrained' in proc.stderr
    assert 'train_dataloader.dataset.data_root / folders.train' in proc.stderr
    assert 'Stable Diffusion v1.5' in proc.stderr
    assert not osp.exists(tmp_path / 'epoch_1.pth')


@pytest.mark.slow
def test_sd_deblora_crop_config_through_the_switch_and_test(bias_target, tmp_path):
    root = bias_target
    register_all()
    cfg = Config.fromfile(osp.join(CFG, 'sd_lora_deblora_dota.py'))
    tiny = dict(Config.fromfile(SD_TINY).sd_unet_tiny, test_noise_draws=2)
    cfg.model.backbone.backbone = tiny
    opts = {'model.head.in_channels': 32 + 64 + 64 + 64,  # LevelPooling of levels 1-4
            'train_cfg.max_epochs': 2, 'train_cfg.val_interval': 10,
            'train_dataloader.batch_size': 512, 'default_hooks.logger.interval': 1,
            'custom_hooks.1.switch_epoch': 1, 'custom_hooks.1.num_clusters': 4,
            'custom_hooks.1.plot': None, 'param_scheduler.0.end': 1}
    for k in ('train', 'val', 'test'):
        opts.update({f'{k}_dataloader.dataset.data_root': root + '/target/',
                     f'{k}_dataloader.dataset.cache_dir': str(tmp_path / 'crops'),
                     f'{k}_dataloader.dataset.crop_size': 64,
                     f'{k}_dataloader.num_workers': 0,
                     f'{k}_dataloader.persistent_workers': False})
    cfg.merge_from_dict(opts)
    cfg.work_dir = str(tmp_path / 'work')
    use_checked_runner(cfg, False)
    runner = build_runner(cfg)
    runner.train()
    hook = next(h for h in runner.hooks if type(h).__name__ == 'DebLoRAHook')
    assert hook.stage == 2
    assert runner.model.backbone.active_adapters[-1] == 'deblora'
    feat = runner.message_hub.get_scalar('train/loss_deblora_feat').current()
    assert feat > 0 and torch.isfinite(torch.tensor(feat))
    with open(osp.join(cfg.work_dir, 'trainable_params.json')) as fh:
        assert json.load(fh)['trainable.backbone'] > 0
    # tools/test.py on the stage-2 checkpoint with the dumped config
    dumped = str(tmp_path / 'cfg.py')
    cfg.dump(dumped)
    test = run_tool('test.py', dumped, osp.join(cfg.work_dir, 'epoch_2.pth'), '--work-dir',
                    str(tmp_path / 'test'))
    assert 're-entering stage 2' in test.stdout
    for key in ('head_f1', 'middle_f1', 'tail_f1', 'macro_f1'):
        assert f'{key}: ' in test.stdout, key
