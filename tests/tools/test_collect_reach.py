"""tools/analysis/collect_reach.py: one row per setting, every seed listed, the columns of
the table the runs came from (macro-F1 for classification, mAP in % for detection)."""
import json

from tests.conftest import run_tool


def result(dir_, seed, metrics, cal_gap=0.5, row='lora_deblora'):
    run = dir_ / row / f'seed{seed}'
    run.mkdir(parents=True)
    run.joinpath('result.json').write_text(json.dumps(dict(
        seed=seed, metrics=metrics, reach=dict(cal_gap=cal_gap, other_drift=0.1))))


def test_classification_settings_show_macro_f1(tmp_path):
    for seed, tail in ((0, 20.0), (1, 30.0)):
        result(tmp_path / 'sgd_l0.05', seed,
               dict(head_f1=70.0, tail_f1=tail, macro_f1=50.0), cal_gap=0.4 + seed / 10)
    out = run_tool('analysis/collect_reach.py', str(tmp_path / 'sgd_l0.05')).stdout
    assert '| setting | seeds | calibrated gap (rel.) | others\' drift (s) | head F1 |' in out
    assert '| sgd_l0.05 | 0 1 | 0.450 +- 0.071 (0.400 / 0.500) |' in out
    assert '25.0 +- 7.1 (20.0 / 30.0)' in out


def test_detection_settings_show_map_in_percent(tmp_path):
    result(tmp_path / 'adamw1e-3_l0.2_h0', 0, {'dota/head_mAP': 0.64, 'dota/middle_mAP': 0.6,
                                               'dota/tail_mAP': 0.355, 'dota/mAP': 0.52})
    out = run_tool('analysis/collect_reach.py', str(tmp_path / 'adamw1e-3_l0.2_h0')).stdout
    assert '| head mAP | middle mAP | tail mAP | all mAP |' in out
    assert '| adamw1e-3_l0.2_h0 | 0 | 0.500 (0.500) | 0.1000 (0.1000) | 64.0 (64.0) | ' \
           '60.0 (60.0) | 35.5 (35.5) | 52.0 (52.0) |' in out


def test_pairs_are_differences_over_shared_seeds_with_a_t_interval(tmp_path):
    """--pair A B: A − B per seed both have, mean [95 % t]; A:ROW reads another row."""
    for seed, (a, b, lora) in enumerate(((40.0, 38.0, 36.0), (42.0, 41.0, 37.0),
                                         (39.0, 36.0, 35.0))):
        result(tmp_path / 'augment', seed, dict(head_f1=70.0, tail_f1=a, macro_f1=50.0))
        result(tmp_path / 'augment', seed, dict(head_f1=71.0, tail_f1=lora, macro_f1=50.0),
               row='lora')
        result(tmp_path / 'augment_a0', seed, dict(head_f1=70.0, tail_f1=b, macro_f1=50.0))
    result(tmp_path / 'augment_a0', 3, dict(head_f1=1.0, tail_f1=1.0, macro_f1=1.0))
    out = run_tool('analysis/collect_reach.py', str(tmp_path / 'augment'),
                   str(tmp_path / 'augment_a0'), '--pair', 'augment', 'augment_a0',
                   '--pair', 'augment', 'augment:lora').stdout
    # tail differences 2, 1, 3: mean 2, sd 1, t(0.975, 2) = 4.303 -> +- 2.48
    assert '| augment − augment_a0 | 3 | +0.0 [+0.0, +0.0] | +2.0 [-0.5, +4.5] | +0.0 [' in out
    # 4, 5, 4 against the LoRA row: mean 4.33, sd 0.577 -> +- 1.43; head -1 every seed
    assert '| augment − augment:lora | 3 | -1.0 [-1.0, -1.0] | +4.3 [+2.9, +5.8] |' in out
    bad = run_tool('analysis/collect_reach.py', str(tmp_path / 'augment'), '--pair',
                   'augment', 'nothing', check=False)
    assert bad.returncode != 0 and "no setting 'nothing'" in bad.stderr
