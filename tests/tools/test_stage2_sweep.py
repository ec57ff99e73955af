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


def effective(call) -> dict:
    """The --cfg-options of a table call as mmengine's DictAction reads them (a later
    key wins), with the hook prefix dropped."""
    opts = {}
    for kv in call[call.index('--cfg-options') + 1:]:
        key, val = kv.split('=', 1)
        opts[key.replace('DebLoRAHook.', '')] = val
    return opts


RUN_OPT = {'stage2_optim_wrapper': 'None'}  # the run's own optimizer, not the config's


def test_each_setting_passes_its_options_to_the_chosen_table(tmp_path):
    r = sweep(tmp_path, 'sgd_l0.05', 'adamw1e-3_l0.2', 'augment', 'augment_a0', 'both_l0.1',
              'augment_a0_mean', TABLE='detection', SEEDS='0 2')
    assert r.returncode == 0, r.stderr
    calls = table_calls(r.stdout)
    assert len(calls) == 6
    assert all(c[0] == 'tools/analysis/detection_table.py' for c in calls)
    eff = [effective(c) for c in calls]
    assert eff[0] == dict(RUN_OPT, loss_weight='0.05', replay='0')
    assert eff[1] == {'stage2_optim_wrapper.optimizer.type': 'AdamW',
                      'stage2_optim_wrapper.optimizer.lr': '1e-3',
                      'stage2_optim_wrapper.optimizer.weight_decay': '0.0',
                      'loss_weight': '0.2', 'replay': '0'}
    assert eff[2] == dict(RUN_OPT, mode='augment', replay='0')
    assert eff[3] == dict(RUN_OPT, mode='augment', alpha_max='0.0', replay='0')
    assert eff[4] == dict(RUN_OPT, mode='both', loss_weight='0.1', replay='0')
    assert eff[5] == dict(RUN_OPT, mode='augment', alpha_max='0.0', augment_reduction='mean',
                          replay='0')
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
    eff = [effective(c) for c in calls]
    assert eff[0] == dict(RUN_OPT, loss_weight='0.2', replay='0', hold_weight='0')
    assert eff[1]['loss_weight'] == '0.2' and eff[1]['hold_weight'] == '0.5'
    assert eff[2] == dict(RUN_OPT, loss_weight='0.2', replay='0')  # no suffix, no hold
    assert calls[0][calls[0].index('--work-dir') + 1] == str(tmp_path / 'out' / 'sgd_l0.2_h0')


def test_replay_suffix_adds_the_replay_option_with_or_without_a_hold(tmp_path):
    r = sweep(tmp_path, 'sgd_l0.05_r4', 'adamw1e-3_l0.2_h0_r2', 'sgd_l0_r4')
    assert r.returncode == 0, r.stderr
    eff = [effective(c) for c in table_calls(r.stdout)]
    assert eff[0] == dict(RUN_OPT, loss_weight='0.05', replay='4')
    assert eff[1]['loss_weight'] == '0.2' and eff[1]['replay'] == '2' and \
        eff[1]['hold_weight'] == '0' and 'stage2_optim_wrapper' not in eff[1]
    assert eff[2] == dict(RUN_OPT, loss_weight='0', replay='4')
