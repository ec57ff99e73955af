"""tools/analysis/collect_reach.py: one row per setting, every seed listed, the columns of
the table the runs came from (macro-F1 for classification, mAP in % for detection)."""
import json

from tests.conftest import run_tool


def result(dir_, seed, metrics, cal_gap=0.5):
    run = dir_ / 'lora_deblora' / f'seed{seed}'
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
