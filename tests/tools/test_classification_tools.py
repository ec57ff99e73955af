"""The classification track end to end on a tiny bias benchmark: generator + foundation
pretraining, tools/train.py and tools/test.py on classification configs, diagnostics."""
import json
import os.path as osp
import re

import pytest

from tests.conftest import REPO, run_tool

CFG = osp.join(REPO, 'configs', 'classification')


@pytest.fixture(scope='module')
def bench(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('bias'))
    run_tool('data/make_bias_benchmark.py', root, '--max-count', '24', '--imbalance-ratio',
             '8', '--val-per-class', '2', '--test-per-class', '2', '--source-per-class', '8',
             '--foundation-epochs', '1')
    return root


def _options(root, *extra, lora=True):
    weights = 'pretrained' if lora else 'init_cfg.checkpoint'
    opts = [f'model.backbone.{weights}={root}/foundation.pth', 'train_cfg.max_epochs=1',
            'train_dataloader.batch_size=16', 'default_hooks.logger.interval=1']
    for loader in ('train', 'val', 'test'):
        opts += [f'{loader}_dataloader.dataset.data_root={root}/target/',
                 f'{loader}_dataloader.dataset.cache_dir={root}/crops']
    return ['--cfg-options', *opts, *extra]


@pytest.mark.slow
def test_generator_caches_its_foundation(bench):
    with open(osp.join(bench, 'foundation.json')) as fh:
        meta = json.load(fh)
    assert 0 <= meta['source_val_accuracy'] <= 100
    again = run_tool('data/make_bias_benchmark.py', bench, '--max-count', '24',
                     '--imbalance-ratio', '8', '--val-per-class', '2', '--test-per-class',
                     '2', '--source-per-class', '8', '--foundation-epochs', '1')
    assert 'foundation up to date' in again.stdout
    other = run_tool('data/make_bias_benchmark.py', bench, '--max-count', '24',
                     '--imbalance-ratio', '8', '--val-per-class', '2', '--test-per-class',
                     '2', '--source-per-class', '8', '--foundation-epochs', '2', check=False)
    assert other.returncode != 0 and '--force' in other.stderr


@pytest.mark.slow
def test_lora_config_trains_tests_and_diagnoses(bench, tmp_path):
    cfg = osp.join(CFG, 'bias_lora.py')
    wd = str(tmp_path / 'lora')
    train = run_tool('train.py', cfg, '--work-dir', wd, *_options(bench))
    assert re.search(r'trainable parameters: [\d,]+ of [\d,]+ \(backbone', train.stdout)
    with open(osp.join(wd, 'trainable_params.json')) as fh:
        counts = json.load(fh)
    assert 0 < counts['trainable.backbone'] < counts['total'] / 4   # adapters only
    ckpt = osp.join(wd, 'epoch_1.pth')
    test = run_tool('test.py', cfg, ckpt, '--work-dir', wd, *_options(bench))
    for key in ('head_f1', 'middle_f1', 'tail_f1', 'macro_f1', 'accuracy'):
        assert re.search(rf'{key}: [0-9.]+', test.stdout), key
    out = str(tmp_path / 'diag.json')
    diag = run_tool('analysis/bias_diagnostics.py', cfg, ckpt, '--oracle-checkpoint', ckpt,
                    '--split', 'val', '--k', '4', '--out', out, *_options(bench))
    assert 'pre-check 3' in diag.stdout
    with open(out) as fh:
        res = json.load(fh)
    # the same model on both sides: no gap, distance ratio 1
    assert res['prechecks']['1_tail_f1_gap'] == pytest.approx(0)
    assert res['prechecks']['2_probe_tail_f1_gap'] == pytest.approx(0)
    assert res['prechecks']['3_sibling_distance_ratio'] == pytest.approx(1)
    assert res['siblings']['helicopter'] == 'plane'
    # the premise: the same model's tail spread ratio 1, the same h_c on both sides, built
    # with the default switch settings (a LoRA config has no DebLoRAHook)
    assert res['prechecks']['a_tail_spread_ratio'] == pytest.approx(1)
    assert res['model']['premise'] == res['oracle']['premise']
    assert res['switch_settings']['num_clusters'] == 32
    assert res['switch_settings']['weighting'] == 'balanced'
    assert set(res['model']['premise']['centers']) == set(res['groups']['tail'])
    assert 'premise c' in diag.stdout


@pytest.mark.slow
def test_zero_shot_trains_only_the_classifier(bench, tmp_path):
    cfg = osp.join(CFG, 'bias_zero_shot.py')
    wd = str(tmp_path / 'zs')
    run_tool('train.py', cfg, '--work-dir', wd, *_options(bench, lora=False))
    with open(osp.join(wd, 'trainable_params.json')) as fh:
        counts = json.load(fh)
    assert counts['trainable'] == counts['trainable.head'] == 128 * 15 + 15


def test_generator_refuses_a_folder_that_is_not_a_benchmark(tmp_path):
    (tmp_path / 'source').mkdir()
    (tmp_path / 'source' / 'notes.txt').write_text('mine')
    proc = run_tool('data/make_bias_benchmark.py', str(tmp_path), '--no-foundation',
                    check=False)
    assert proc.returncode != 0
    assert 'is not a generated bias benchmark' in proc.stderr and 'notes.txt' in proc.stderr
    assert 'other settings' not in proc.stderr
    # a foundation.pth without the record this tool writes is not replaced either
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'make_bias_benchmark', osp.join(REPO, 'tools', 'data', 'make_bias_benchmark.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    (tmp_path / 'foundation.pth').write_bytes(b'someone else\'s weights')
    with pytest.raises(FileExistsError, match='is not a foundation this tool finished'):
        tool.pretrain_foundation(str(tmp_path), dict(fingerprint='x'), 0, force=False)
    assert (tmp_path / 'foundation.pth').read_bytes() == b'someone else\'s weights'
