"""Config structure: data-only and model-only bases, other mmrotate detectors on the toy
data, DOTA configs on the labelled val split, the test-split submission config, every
config loadable and indexed, and the configs shipped inside the package."""
import glob
import os.path as osp

import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmrotate.registry import DATASETS, MODELS
from mmrotate.utils import register_all_modules

import mmdeblora  # noqa: F401
from tests.configs.toy_detector import TOY_DATA, mmrotate_config, write_toy_detector
from tests.conftest import REPO

register_all_modules()
CONFIGS = sorted(osp.relpath(p, osp.join(REPO, 'configs'))
                 for p in glob.glob(osp.join(REPO, 'configs', '*', '*.py'))
                 if '/_base_/' not in p)
DOTA_CONFIGS = [c for c in CONFIGS if '_dota' in c]
DATA_KEYS = {'custom_imports', 'data_root', 'img_scale', 'dataset_type', 'backend_args',
             'train_pipeline', 'val_pipeline', 'test_pipeline', 'train_dataloader',
             'val_dataloader', 'test_dataloader', 'val_evaluator', 'test_evaluator'}


def _cfg(name: str) -> Config:
    return Config.fromfile(osp.join(REPO, 'configs', name))


def test_every_config_loads():
    assert len(CONFIGS) >= 20
    for name in CONFIGS:
        if 'classification' in name:
            continue  # mmpretrain configs: their own tests
        cfg = _cfg(name)
        assert cfg.model.type and cfg.train_dataloader.dataset.type, name


@pytest.mark.parametrize('base', ['toy_dota.py', 'dota.py'])
def test_dataset_bases_hold_only_data(base):
    cfg = Config.fromfile(osp.join(REPO, 'configs', '_base_', 'datasets', base))
    keys = set(cfg.to_dict())
    assert keys <= DATA_KEYS, keys - DATA_KEYS
    assert 'model' not in keys and 'train_cfg' not in keys


def test_model_base_is_mmrotates_oriented_rcnn(tmp_path):
    ours = Config.fromfile(osp.join(REPO, 'configs', '_base_', 'models',
                                    'oriented_rcnn_le90_r50_fpn.py'))
    upstream = mmrotate_config('oriented_rcnn/oriented-rcnn-le90_r50_fpn_1x_dota.py', tmp_path)
    assert set(ours.to_dict()) == {'model', 'angle_version'}
    assert ours.model.to_dict() == upstream.model.to_dict()


@pytest.mark.parametrize('detector,head', [('rotated_retinanet', 'RetinaHead'),
                                           ('roi_trans', 'CascadeRoIHead')])
def test_toy_data_beside_another_detector(tmp_path, toy_root, detector, head):
    """mmrotate's rotated RetinaNet / RoI Transformer on the toy data by inheritance:
    the config resolves, the model builds and computes finite losses on a toy batch."""
    cfg = Config.fromfile(write_toy_detector(tmp_path, detector))
    assert cfg.train_dataloader.dataset.type == 'CheckedDOTADataset'
    assert cfg.val_evaluator.type == 'GroupDOTAMetric'
    model = MODELS.build(cfg.model)
    assert head in type(getattr(model, 'roi_head', getattr(model, 'bbox_head', None))).__name__
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root = toy_root + '/'
    dataset = DATASETS.build(ds_cfg)
    torch.manual_seed(0)
    data = model.data_preprocessor(pseudo_collate([dataset[0], dataset[1]]), True)
    losses = model.loss(data['inputs'], data['data_samples'])
    total, _ = model.parse_losses(losses)  # mmengine's sum over the loss terms
    assert torch.isfinite(total) and total > 0


@pytest.mark.parametrize('name', DOTA_CONFIGS)
def test_dota_configs_validate_on_the_labelled_val_split(name):
    cfg = _cfg(name)
    if name.startswith('classification/'):  # object crops: DOTA train -> train / val,
        for split in ('train', 'val', 'test'):  # DOTA val -> test, never val = test
            ds = cfg[f'{split}_dataloader'].dataset
            assert ds.folders == dict(train='train', test='val') and ds.split == split
        return
    assert cfg.train_dataloader.dataset.ann_file == 'train/annfiles/'
    assert cfg.val_dataloader.dataset.ann_file == 'val/annfiles/'
    assert cfg.val_dataloader.dataset.data_prefix.img_path == 'val/images/'
    if name.endswith('_test_submission.py'):
        test = cfg.test_dataloader.dataset
        assert test.ann_file == '' and test.data_prefix.img_path == 'test/images/'
        assert not any('LoadAnnotations' in t['type'] for t in test.pipeline)
        ev = cfg.test_evaluator
        assert ev.type == 'DOTAMetric' and ev.format_only and ev.merge_patches
    else:
        assert cfg.test_dataloader.dataset.ann_file == 'val/annfiles/'


def test_preflight_names_the_keys_of_the_submission_config(tmp_path):
    from mmdeblora.utils.preflight import missing_inputs
    cfg = _cfg('deblora/oriented_rcnn_sd_dota_test_submission.py')
    cfg.test_dataloader.dataset.data_root = str(tmp_path) + '/'
    problems = '\n'.join(missing_inputs(cfg, 'test'))
    assert 'test_dataloader.dataset.data_root / data_prefix.img_path' in problems
    assert 'model.backbone.backbone.pretrained' in problems
    assert 'ann_file' not in problems  # the unlabelled split has none


def test_model_index_lists_every_config():
    index = yaml.safe_load(open(osp.join(REPO, 'model-index.yml')))
    listed = []
    for meta in index['Import']:
        metafile = yaml.safe_load(open(osp.join(REPO, meta)))
        collections = {c['Name']: c for c in metafile['Collections']}
        for coll in collections.values():
            assert osp.isfile(osp.join(REPO, coll['README'])), (meta, coll['README'])
        for model in metafile['Models']:
            assert osp.isfile(osp.join(REPO, model['Config'])), model['Config']
            assert model['Name'] == osp.splitext(osp.basename(model['Config']))[0]
            assert model['In Collection'] in collections, (meta, model['Name'])
            listed.append(osp.relpath(model['Config'], 'configs'))
    assert sorted(listed) == CONFIGS  # detection and classification configs alike


def test_configs_ship_inside_the_package():
    """mmdeblora/.mim/configs (a symlink in editable installs, copies in wheels)."""
    mim = osp.join(osp.dirname(mmdeblora.__file__), '.mim')
    shipped = sorted(osp.relpath(p, osp.join(mim, 'configs'))
                     for p in glob.glob(osp.join(mim, 'configs', '*', '*.py'))
                     if '/_base_/' not in p)
    assert shipped == CONFIGS
    assert osp.isfile(osp.join(mim, 'model-index.yml'))
    assert osp.isfile(osp.join(mim, 'tools', 'train.py'))
    # a config read from the package resolves its relative _base_ files there
    cfg = Config.fromfile(osp.join(mim, 'configs', 'baselines', 'oriented_rcnn_r18_toy.py'))
    assert cfg.train_dataloader.dataset.type == 'CheckedDOTADataset'
    assert osp.isfile(TOY_DATA)
