"""tools/analysis/bias_diagnostics.py on detectors (configs/bias_detection): two tiny
Oriented R-CNN checkpoints (random weights, the LoRA row's plain ``mmdet.FasterRCNN``) on
a generated bias target; the report's shape, and its numbers against a hand extraction."""
import copy
import json
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO, run_tool

CFG = osp.join(REPO, 'configs', 'bias_detection')
DEFAULT_SCOPE = 'mmrotate'
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def _options(target: str) -> list:
    return ['model.backbone.pretrained=None',
            *[f'{k}.dataset.data_root={target}' for k in LOADERS]]


def _cfg(name: str, target: str) -> Config:
    """The config with what ``_options`` sets on the command line."""
    cfg = Config.fromfile(osp.join(CFG, name))
    cfg.merge_from_dict({'model.backbone.pretrained': None,
                         **{f'{k}.dataset.data_root': target for k in LOADERS}})
    return cfg


@pytest.fixture(scope='module')
def run(bias_target, tmp_path_factory):
    """The tool on two randomly initialised LoRA-row detectors (seeds 0 and 1)."""
    from mmdeblora.engine.stage2 import build_model
    target = osp.join(bias_target, 'target') + '/'
    out = tmp_path_factory.mktemp('bias_det_diag')
    cfg = _cfg('bias_det_lora.py', target)
    ckpts = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model(cfg)  # plain mmdet.FasterRCNN: the tool builds the subclass
        model.init_weights()
        ckpts.append(str(out / f'seed{seed}.pth'))
        torch.save({'state_dict': model.state_dict()}, ckpts[-1])
    res_path = str(out / 'diag.json')
    proc = run_tool('analysis/bias_diagnostics.py', osp.join(CFG, 'bias_det_lora.py'),
                    ckpts[0], '--oracle-checkpoint', ckpts[1], '--split', 'val', '--k', '4',
                    '--out', res_path, '--cfg-options', *_options(target))
    with open(res_path) as fh:
        res = json.load(fh)
    return dict(target=target, ckpts=ckpts, path=res_path, res=res, stdout=proc.stdout)


@pytest.mark.slow
def test_detection_report_structure(run):
    res = run['res']
    assert res['kind'] == 'detection' and res['split'] == 'val'
    assert res['oracle_config'].endswith('bias_det_lora_oracle.py')  # the default
    assert len(res['classes']) == 15 and set(res['groups']) == {'head', 'middle', 'tail'}
    assert res['siblings']['helicopter'] == 'plane'  # from target.json
    for side in ('model', 'oracle'):
        r = res[side]
        for part in ('own', 'probe'):
            assert set(r[part]) == {'head_f1', 'middle_f1', 'tail_f1', 'macro_f1'}
            assert all(0 <= v <= 100 for v in r[part].values())
        assert set(r['distances']) >= {'head_tail', 'tail_tail', 'intra_tail'}
        assert set(r['sibling_distance_per_class']) == set(res['siblings'])
        for key in ('nearest_centroid_head_share', 'head_cluster_share'):
            assert 0 <= r[key] <= 1
    # number 1 is informative for a detector: no pass / fail
    assert set(res['prechecks']) == {'1_gt_roi_tail_f1_gap', '2_probe_tail_f1_gap',
                                     '3_sibling_distance_ratio', 'a_tail_spread_ratio',
                                     'b_centers_own_nearest', 'c_center_mean_ratio'}
    assert set(res['passed']) == {'2', '3', 'a', 'b', 'c'}
    # the premise numbers: h_c per tail class, from the switch's default settings
    assert res['switch_settings']['num_clusters'] == 32
    for side in ('model', 'oracle'):
        prem = res[side]['premise']
        assert set(prem['centers']) == set(res['groups']['tail'])
        assert all(r['ratio'] > 0 and r['nearest'] in res['classes']
                   for r in prem['centers'].values())
        assert 0 <= prem['centers_own_nearest'] <= prem['centers_compared'] == 6
    assert res['prechecks']['a_tail_spread_ratio'] == pytest.approx(
        res['model']['premise']['tail_spread'] / res['oracle']['premise']['tail_spread'])
    assert res['prechecks']['2_probe_tail_f1_gap'] == pytest.approx(
        res['oracle']['probe']['tail_f1'] - res['model']['probe']['tail_f1'])
    assert 'GT-RoI classifier tail macro-F1' in run['stdout']
    assert 'pre-check 1 is the tail mAP gap of the detection table' in run['stdout']
    agg = run_tool('analysis/bias_diagnostics.py', '--aggregate', run['path'], run['path'])
    assert 'GT-RoI classifier tail macro-F1' in agg.stdout
    assert 'informative' in agg.stdout and 'passed in' in agg.stdout


@pytest.mark.slow
def test_detection_features_are_the_gt_boxes_roi_features(run, bias_target):
    """Every annotated box once, and the probe numbers of a hand extraction with
    ``instance_features(pool='avg', normalize=False)`` on the train / val scenes."""
    from mmdeblora.engine import DebiasSettings, build_extraction_loader
    from mmdeblora.engine.stage2 import load_debias_model
    from mmdeblora.evaluation import bias_diagnostics as bd
    res = run['res']
    with open(osp.join(bias_target, 'target', 'target.json')) as fh:
        counts = json.load(fh)['counts']
    assert res['instances'] == dict(train=counts['train'], eval=counts['val'])

    cfg = _cfg('bias_det_lora.py', run['target'])
    cfg.model.type = 'DebLoRAFasterRCNN'
    model = load_debias_model(cfg, run['ckpts'][0]).eval()
    settings = DebiasSettings(where='test')
    val_cfg = copy.deepcopy(cfg)
    val_cfg.train_dataloader = cfg.val_dataloader

    @torch.no_grad()
    def features(c):
        xs, ys = [], []
        for batch in build_extraction_loader(c, settings):
            data = model.data_preprocessor(batch, False)
            x, y = model.instance_features(data['inputs'], data['data_samples'], pool='avg',
                                           normalize=False)
            xs.append(x)
            ys.append(y)
        return torch.cat(xs), torch.cat(ys)

    (tx, ty), (ex, ey) = features(cfg), features(val_cfg)
    assert tx.shape == (sum(counts['train'].values()), 64)  # the RoI extractor's channels
    probe = bd.balanced_probe(tx, ty, len(res['classes']))
    f1 = bd.group_f1(probe(ex).argmax(1), ey, res['classes'], res['groups'])
    assert f1 == pytest.approx(res['model']['probe'], abs=1e-6)
