"""tools/merge_lora.py: adapters merged into base weights give the same detector features."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from tests.conftest import REPO, run_tool

# the SD one (the method's backbone); ResNet merging is covered in test_lora_backbone.py
CONFIGS = ['oriented_rcnn_sd_tiny_lora_toy.py']


def _build(cfg: Config):
    from mmrotate.registry import MODELS

    from mmdeblora.utils.launch import register_all
    register_all()
    init_default_scope('mmrotate')
    return MODELS.build(copy.deepcopy(cfg.model))


@pytest.mark.parametrize('name', CONFIGS)
def test_merged_checkpoint_matches_the_lora_model(name, tmp_path):
    cfg_path = osp.join(REPO, 'configs', 'baselines', name)
    torch.manual_seed(0)
    model = _build(Config.fromfile(cfg_path)).eval()
    lora = model.backbone
    lora.add_adapter('second', activate=False)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # adapters as if trained: non-zero B
        for key, p in model.named_parameters():
            if '.lora_' in key:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    ckpt = tmp_path / 'epoch_1.pth'
    torch.save({'meta': {'epoch': 1}, 'state_dict': model.state_dict()}, ckpt)

    out = tmp_path / 'merged' / 'model.pth'
    run_tool('merge_lora.py', cfg_path, str(ckpt), str(out),
             '--save-adapters', str(tmp_path / 'adapters'))

    merged_ckpt = torch.load(out, map_location='cpu', weights_only=True)
    keys = list(merged_ckpt['state_dict'])
    assert not [k for k in keys if '.lora_' in k or 'base_layer' in k]
    plain_cfg = Config.fromfile(str(tmp_path / 'merged' / 'model.py'))
    assert 'LoRABackbone' not in plain_cfg.pretty_text
    plain = _build(plain_cfg).eval()
    plain.load_state_dict(merged_ckpt['state_dict'], strict=True)

    x = torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        torch.manual_seed(0)
        want = model.extract_feat(x)
        torch.manual_seed(0)
        got = plain.extract_feat(x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

    # the adapters alone, as safetensors, restore the LoRA model's adapters
    folder = tmp_path / 'adapters' / 'backbone'
    assert sorted(p.name for p in folder.iterdir()) == [
        'adapters.json', 'default.safetensors', 'second.safetensors']
    torch.manual_seed(0)
    fresh = _build(Config.fromfile(cfg_path)).backbone
    fresh.load_adapters(str(folder))
    for name_ in ('default', 'second'):
        a, b = fresh.adapter_state_dict(name_), lora.adapter_state_dict(name_)
        assert all(torch.equal(a[k], b[k]) for k in b)


def test_a_model_without_lora_is_refused(tmp_path):
    cfg = osp.join(REPO, 'configs', 'baselines', 'oriented_rcnn_r18_toy.py')
    ckpt = tmp_path / 'plain.pth'
    torch.manual_seed(0)
    torch.save({'state_dict': _build(Config.fromfile(cfg)).state_dict()}, ckpt)
    proc = run_tool('merge_lora.py', cfg, str(ckpt), str(tmp_path / 'out.pth'), check=False)
    assert proc.returncode != 0 and 'no LoRABackbone' in proc.stderr
