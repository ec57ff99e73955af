"""configs/deblora/oriented_rcnn_r50_lora_deblora_dota.py: debLoRA on DOTA without Stable
Diffusion is the R50 LoRA baseline plus the debLoRA model and hook, nothing else (the
rehearsal step r50_deblora in tools/rehearse_dota.sh runs it; docs/rehearsal.md)."""
import os.path as osp

from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmrotate.registry import MODELS

import mmdeblora  # noqa: F401
from tests.conftest import REPO

DEFAULT_SCOPE = 'mmrotate'
BASE = osp.join(REPO, 'configs', 'baselines', 'oriented_rcnn_r50_lora_dota.py')
OURS = osp.join(REPO, 'configs', 'deblora', 'oriented_rcnn_r50_lora_deblora_dota.py')


def test_states_only_the_debLoRA_model_and_hook():
    base, ours = Config.fromfile(BASE), Config.fromfile(OURS)
    sd = Config.fromfile(osp.join(REPO, 'configs', 'deblora', 'oriented_rcnn_sd_dota.py'))
    assert ours.model.to_dict() == dict(base.model.to_dict(), type='DebLoRAFasterRCNN')
    assert ours.custom_hooks == sd.custom_hooks  # the SD config's switch, K, lambda ...
    assert 'custom_hooks' not in base
    for key in set(base.keys()) | set(ours.keys()):
        if key not in ('model', 'custom_hooks', 'deblora_hook'):
            assert Config(dict(v=ours.get(key))).to_dict() == \
                Config(dict(v=base.get(key))).to_dict(), key


def test_builds_a_debLoRA_detector_around_the_lora_resnet50():
    cfg = Config.fromfile(OURS)
    cfg.model.backbone.pretrained = None  # the build only; no weights file here
    with DefaultScope.overwrite_default_scope('mmrotate'):
        model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'DebLoRAFasterRCNN'
    assert type(model.backbone).__name__ == 'LoRABackbone'
    assert model.roi_head.bbox_head.num_classes == 15
