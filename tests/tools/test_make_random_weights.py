"""tools/make_random_weights.py: SD v1.5's exact architecture, a valid CLIP tokenizer, a
folder SDBackbone reads, and torchvision's ResNet-50 file layout."""
import importlib.util
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO, run_tool


def _tool():
    spec = importlib.util.spec_from_file_location(
        'make_random_weights', osp.join(REPO, 'tools', 'make_random_weights.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_architecture_is_sd_v15():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    tool = _tool()
    with torch.device('meta'):  # counts without allocating 4 GB
        models = dict(unet=UNet2DConditionModel.from_config(tool.SD15_UNET),
                      vae=AutoencoderKL.from_config(tool.SD15_VAE),
                      text_encoder=CLIPTextModel(CLIPTextConfig(**tool.SD15_TEXT)))
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    assert counts == tool.SD15_PARAMS == dict(unet=859_520_964, vae=83_653_863,
                                              text_encoder=123_060_480)
    # the configs' own copy of the architecture (read for single-file checkpoints) agrees
    base = Config.fromfile(osp.join(REPO, 'configs', '_base_', 'models', 'sd_v15_unet.py'))
    for cfg, ours, model in ((base.sd_v15_unet.unet_cfg, tool.SD15_UNET, models['unet']),
                             (base.sd_v15_unet.vae_cfg, tool.SD15_VAE, models['vae'])):
        for key, value in cfg.items():
            want = list(value) if isinstance(value, tuple) else value
            assert ours[key] == want == (list(model.config[key])
                                         if isinstance(model.config[key], tuple)
                                         else model.config[key]), key


def test_synthetic_tokenizer_is_a_clip_tokenizer_of_clip_size(tmp_path):
    from transformers import CLIPTokenizer
    _tool().write_tokenizer(str(tmp_path))
    tok = CLIPTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert len(tok) == 49408 and tok.model_max_length == 77
    ids = tok(['an aerial image'], padding='max_length', max_length=77).input_ids[0]
    assert ids[0] == 49406 and 49407 in ids and len(ids) == 77  # <|startoftext|>, <|endoftext|>
    words = ids[1:ids.index(49407)]
    assert 3 <= len(words) < len('anaerialimage')  # merged BPE tokens, not characters
    assert tok.decode(words) == 'an aerial image'


@pytest.mark.slow  # runs the tool
def test_tiny_folder_loads_in_sdbackbone_and_resnet50_file_is_torchvision(tmp_path,
                                                                          monkeypatch):
    from torchvision.models import resnet50

    from mmdeblora.models.backbones import LoRABackbone, SDBackbone
    out = tmp_path / 'weights'
    run_tool('make_random_weights.py', str(out), '--arch', 'tiny')
    folder = out / 'sd-tiny-random'
    assert json.loads((folder / 'unet' / 'config.json').read_text())['block_out_channels'] \
        == [32, 64, 64, 64]
    sd = SDBackbone(pretrained=str(folder), text_mode='prompt', prompt='an aerial image')
    assert sd.context.shape == (1, 77, 32) and sd.context.abs().sum() > 0
    feats = sd(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [32, 32, 64, 64, 64]

    r50 = torch.load(out / 'resnet50-random.pth', weights_only=True)
    assert list(r50) == list(resnet50().state_dict())  # torchvision://resnet50's keys
    model = LoRABackbone(backbone=dict(type='mmdet.ResNet', depth=50, init_cfg=None),
                         pretrained=str(out / 'resnet50-random.pth'), pretrained_prefix=None,
                         rank=2, target_modules=['conv2'])  # strict: every tensor fits
    assert torch.equal(model.base.conv1.weight, r50['conv1.weight'])

    before = (folder / 'unet' / 'diffusion_pytorch_model.safetensors').stat().st_mtime_ns
    monkeypatch.setattr('sys.argv', ['make_random_weights.py', str(out), '--arch', 'tiny'])
    with pytest.raises(SystemExit, match='--force'):
        _tool().main()  # nothing overwritten without --force
    assert (folder / 'unet' / 'diffusion_pytorch_model.safetensors').stat().st_mtime_ns == before
