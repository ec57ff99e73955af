"""Any mmrotate detector on the toy data, through config inheritance: the detector's
`model` as a model-only base beside configs/_base_/datasets/toy_dota.py."""
import os.path as osp

from mmengine.config import Config

from tests.conftest import REPO

MMROTATE_CFG = {
    'rotated_retinanet': 'rotated_retinanet/rotated-retinanet-rbox-le90_r50_fpn_1x_dota.py',
    'roi_trans': 'roi_trans/roi-trans-le90_r50_fpn_1x_dota.py',
}
TOY_DATA = osp.join(REPO, 'configs', '_base_', 'datasets', 'toy_dota.py')
# ResNet-18 without downloads, as the toy configs use it
SMALL = ('model = dict(backbone=dict(depth=18, init_cfg=None),\n'
         '             neck=dict(in_channels=[64, 128, 256, 512]))\n')


def mmrotate_config(rel: str, tmp_path) -> Config:
    """mmrotate's config ``rel`` read as a ``mmrotate::`` base is (with its scope)."""
    child = tmp_path / ('via_' + osp.basename(rel))
    child.write_text(f"_base_ = 'mmrotate::{rel}'\n")
    return Config.fromfile(str(child))


def write_toy_detector(tmp_path, name: str, extra: str = '') -> str:
    """Write `<name>_toy.py`: mmrotate's `name` model + the toy data + mmrotate's 1x
    schedule and runtime, with a ResNet-18; returns its path."""
    upstream = mmrotate_config(MMROTATE_CFG[name], tmp_path)
    model_base = tmp_path / f'{name}_model.py'
    Config(dict(model=upstream.model, angle_version=upstream.angle_version)).dump(
        str(model_base))
    cfg = tmp_path / f'{name}_toy.py'
    cfg.write_text(f'_base_ = [{str(model_base)!r}, {TOY_DATA!r},\n'
                   "          'mmrotate::_base_/schedules/schedule_1x.py',\n"
                   "          'mmrotate::_base_/default_runtime.py']\n" + SMALL + extra)
    return str(cfg)
