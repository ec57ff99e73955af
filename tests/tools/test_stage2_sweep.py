"""tools/analysis/stage2_sweep.sh: each setting's options, the table it drives, and the
shared LoRA stage 1 (``LORA_FROM``), checked with ``PY=echo`` (no training)."""
import os
import os.path as osp
import subprocess

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(REPO, 'tools', 'analysis', 'stage2_sweep.sh')


def sweep(tmp_path, *settings, **env):
    full = dict(os.environ, PY='echo', OUT=str(tmp_path / 'out'), **env)
    return subprocess.run(['bash', SCRIPT, *settings], env=full, capture_output=True,
                          text=True, cwd=REPO)


def table_calls(out: str):
    return [line.split() for line in out.splitlines() if '_table.py' in line]


def test_each_setting_passes_its_options_to_the_chosen_table(tmp_path):
    r = sweep(tmp_path, 'sgd_l0.05', 'adamw1e-3_l0.2', 'augment', 'augment_a0', 'both_l0.1',
              'augment_a0_mean', TABLE='detection', SEEDS='0 2')
    assert r.returncode == 0, r.stderr
    calls = table_calls(r.stdout)
    assert len(calls) == 6
    assert all(c[0] == 'tools/analysis/detection_table.py' for c in calls)
    opts = [c[c.index('--cfg-options') + 1:] for c in calls]
    assert opts[0] == ['DebLoRAHook.loss_weight=0.05']
    assert 'DebLoRAHook.stage2_optim_wrapper.optimizer.type=AdamW' in opts[1]
    assert 'DebLoRAHook.stage2_optim_wrapper.optimizer.lr=1e-3' in opts[1]
    assert 'DebLoRAHook.loss_weight=0.2' in opts[1]
    assert opts[2] == ['DebLoRAHook.mode=augment']
    assert opts[3] == ['DebLoRAHook.mode=augment', 'DebLoRAHook.alpha_max=0.0']
    assert opts[4] == ['DebLoRAHook.mode=both', 'DebLoRAHook.loss_weight=0.1']
    assert opts[5] == ['DebLoRAHook.mode=augment', 'DebLoRAHook.alpha_max=0.0',
                       'DebLoRAHook.augment_reduction=mean']
    for c, s in zip(calls, ['sgd_l0.05', 'adamw1e-3_l0.2', 'augment', 'augment_a0',
                            'both_l0.1']):
        assert c[c.index('--work-dir') + 1] == str(tmp_path / 'out' / s)
        assert c[c.index('--seeds') + 1:c.index('--work-dir')] == ['0', '2']
        assert c[c.index('--rows') + 1:c.index('--seeds')] == ['lora_deblora']


@pytest.mark.parametrize('bad', [dict(setting='adam_l0.1'), dict(TABLE='segmentation')])
def test_unknown_setting_or_table_fails(tmp_path, bad):
    env = {k: v for k, v in bad.items() if k != 'setting'}
    r = sweep(tmp_path, bad.get('setting', 'augment'), **env)
    assert r.returncode != 0 and not table_calls(r.stdout)
    assert (bad.get('setting') or bad['TABLE']) in r.stderr


def test_lora_from_links_the_lora_row_and_pairs_against_it(tmp_path):
    src = tmp_path / 'table'
    for seed in (0, 1):
        (src / 'lora' / f'seed{seed}').mkdir(parents=True)
        (src / 'lora' / f'seed{seed}' / 'result.json').write_text('{}')
    r = sweep(tmp_path, 'augment', SEEDS='0 1', LORA_FROM=str(src))
    assert r.returncode == 0, r.stderr
    (call, ) = table_calls(r.stdout)
    assert call[call.index('--rows') + 1:call.index('--seeds')] == ['lora', 'lora_deblora']
    link = tmp_path / 'out' / 'augment' / 'lora'
    assert link.is_symlink() and osp.realpath(link) == osp.realpath(src / 'lora')


def test_lora_from_without_a_seed_refuses_before_any_run(tmp_path):
    src = tmp_path / 'table'
    (src / 'lora' / 'seed0').mkdir(parents=True)
    (src / 'lora' / 'seed0' / 'result.json').write_text('{}')
    r = sweep(tmp_path, 'augment', SEEDS='0 1', LORA_FROM=str(src))
    assert r.returncode != 0 and not table_calls(r.stdout)
    assert 'seed 1' in r.stderr


def test_table_args_reach_the_table(tmp_path):
    r = sweep(tmp_path, 'augment', TABLE_ARGS='--data-root data/x/target/')
    assert r.returncode == 0, r.stderr
    (call, ) = table_calls(r.stdout)
    assert call[call.index('--data-root') + 1] == 'data/x/target/'
    assert call.index('--data-root') < call.index('--cfg-options')


def test_hold_suffix_adds_the_hold_weight(tmp_path):
    r = sweep(tmp_path, 'sgd_l0.2_h0', 'adamw1e-3_l0.2_h0.5', 'sgd_l0.2')
    assert r.returncode == 0, r.stderr
    calls = table_calls(r.stdout)
    opts = [c[c.index('--cfg-options') + 1:] for c in calls]
    assert opts[0] == ['DebLoRAHook.loss_weight=0.2', 'DebLoRAHook.hold_weight=0']
    assert 'DebLoRAHook.loss_weight=0.2' in opts[1]
    assert opts[1][-1] == 'DebLoRAHook.hold_weight=0.5'
    assert opts[2] == ['DebLoRAHook.loss_weight=0.2']  # no suffix, no hold option
    assert calls[0][calls[0].index('--work-dir') + 1] == str(tmp_path / 'out' / 'sgd_l0.2_h0')


def test_replay_suffix_adds_the_replay_option_with_or_without_a_hold(tmp_path):
    r = sweep(tmp_path, 'sgd_l0.05_r4', 'adamw1e-3_l0.2_h0_r2', 'sgd_l0_r4')
    assert r.returncode == 0, r.stderr
    opts = [c[c.index('--cfg-options') + 1:] for c in table_calls(r.stdout)]
    assert opts[0] == ['DebLoRAHook.loss_weight=0.05', 'DebLoRAHook.replay=4']
    assert opts[1][-3:] == ['DebLoRAHook.loss_weight=0.2', 'DebLoRAHook.replay=2',
                            'DebLoRAHook.hold_weight=0']
    assert opts[2] == ['DebLoRAHook.loss_weight=0', 'DebLoRAHook.replay=4']
