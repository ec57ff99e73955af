"""tools/analysis/detection_table.py: the table in %, the shared stage 1 as the runners get
it, and the reduced table end to end (every row, 2 seeds, the debLoRA rows resuming the
LoRA runs), resumed."""
import importlib.util
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO

TOOL = osp.join(REPO, 'tools', 'analysis', 'detection_table.py')
DEFAULT_SCOPE = 'mmrotate'


def load_tool():
    spec = importlib.util.spec_from_file_location('detection_table', TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake(row, seed, tail, params=100, stage1_from=None):
    return dict(row=row, seed=seed, trainable_params=params, train_seconds=1.0,
                stage1_from=stage1_from,
                metrics={'dota/head_mAP': 0.9, 'dota/middle_mAP': 0.8,
                         'dota/tail_mAP': tail, 'dota/mAP': 0.7})


def test_table_in_percent_with_shared_stage1():
    tool = load_tool()
    results = {'lora': [fake('lora', 0, 0.10), fake('lora', 1, 0.20)],
               'lora_deblora': [fake('lora_deblora', 0, 0.14, 200, 'l/seed0/epoch_8.pth'),
                                fake('lora_deblora', 1, 0.26, 200, 'l/seed1/epoch_8.pth')]}
    summary = tool.summarize(results)
    assert summary['rows']['lora']['dota/tail_mAP'] == pytest.approx((15., math.sqrt(50)))
    (pair, ) = summary['pairs']  # the other pairs lack a row
    assert pair['stats']['dota/tail_mAP']['mean'] == pytest.approx(5.)  # (4 + 6) / 2
    text = tool.markdown(summary, 'python tools/analysis/detection_table.py')
    assert text.startswith('`python tools/analysis/detection_table.py`\n\nmAP (%')
    assert '| LoRA | 90.0 ± 0.0 | 80.0 ± 0.0 | 15.0 ± 7.1 | 70.0 ± 0.0 | 100 | 2 |' in text
    assert '| LoRA + debLoRA − LoRA | 2 | +0.0' in text and '+5.0 [' in text
    assert ('Shared stage 1: LoRA + debLoRA continues the LoRA run of its seed at the '
            'switch (2 of 2 seeds)') in text
    assert 'Tail mAP per seed:\n\n- LoRA: seed 0 10.0, seed 1 20.0\n' in text


def checkpoint_hook(runner):
    from mmengine.hooks import CheckpointHook
    (hook, ) = [h for h in runner.hooks if isinstance(h, CheckpointHook)]
    return hook


def test_a_control_row_keeps_its_own_option_over_the_users(tmp_path):
    """--cfg-options DebLoRAHook.loss_weight=0.2 sets the debLoRA row's lambda, and the
    lambda-0 row stays lambda 0: before, the user's option won and the 'control' silently
    trained with the pull."""
    from mmengine.config import Config
    tool = load_tool()
    args = tool.parse_args(['--work-dir', str(tmp_path), '--cfg-options',
                            'DebLoRAHook.loss_weight=0.2', 'DebLoRAHook.replay=4'])
    got = {}
    for row in ('lora_deblora', 'lora_deblora_l0'):
        cfg = Config.fromfile(osp.join(tool.CFG_DIR, tool.ROWS[row][1]))
        (i, ) = [i for i, h in enumerate(cfg.custom_hooks) if h['type'] == 'DebLoRAHook']
        opts = tool.run_options(cfg, row, 0, args)
        got[row] = (opts[f'custom_hooks.{i}.loss_weight'], opts[f'custom_hooks.{i}.replay'])
    assert got == {'lora_deblora': (0.2, 4), 'lora_deblora_l0': (0.0, 4)}


def test_shared_stage1_is_what_the_runners_get(tmp_path):
    """Every row with a DebLoRAHook shares the LoRA row's stage 1; the LoRA runner keeps its
    checkpoint at the switch epoch the debLoRA config has after the options, and the debLoRA
    runners resume it; --no-shared-stage1 leaves the configs as they are."""
    from mmengine.config import Config

    from mmdeblora.engine import use_checked_runner
    from mmdeblora.utils.launch import build_runner
    from mmdeblora.utils.seed_table import build_train_cfg
    tool = load_tool()
    cfgs = {row: Config.fromfile(osp.join(tool.CFG_DIR, name))
            for row, (_, name, _) in tool.ROWS.items()}
    for row, cfg in cfgs.items():
        hooks = [h for h in cfg.get('custom_hooks', []) if h['type'] == 'DebLoRAHook']
        assert bool(hooks) == (row in tool.SHARED_STAGE1), row
    assert set(tool.SHARED_STAGE1.values()) == {'lora'}
    (own, ) = [h['switch_epoch'] for h in cfgs['lora_deblora'].custom_hooks
               if h['type'] == 'DebLoRAHook']
    ckpt = cfgs['lora'].default_hooks.checkpoint

    wd = str(tmp_path / 'table')

    def runner(row, *extra):
        args = tool.parse_args(['--work-dir', wd, '--foundation', 'none', '--data-root',
                                str(tmp_path / 'none'), *extra])
        cfg, opts, stage1 = build_train_cfg(tool.PROTOCOL, row, 3, args,
                                            str(tmp_path / 'runs' / row / str(len(extra))))
        cfg.experiment_name += f'_{len(extra)}'  # a logger of its own
        use_checked_runner(cfg)
        return build_runner(cfg), stage1

    switch = own + 1  # not the config's: the option must reach the LoRA row
    opts = ('--cfg-options', f'DebLoRAHook.switch_epoch={switch}')
    lora, stage1 = runner('lora', *opts)
    hook = checkpoint_hook(lora)
    assert (hook.interval, hook.max_keep_ckpts, hook.save_last) == (switch, -1, True)
    assert stage1 is None and not lora._resume
    want = osp.join(wd, 'lora', 'seed3', 'train', f'epoch_{switch}.pth')
    for row in ('lora_deblora', 'lora_deblora_l0'):
        deb, stage1 = runner(row, *opts)
        (debias, ) = [h for h in deb.hooks if type(h).__name__ == 'DebLoRAHook']
        assert stage1 == want and deb._resume and deb._load_from == want
        assert debias.switch_epoch == switch
    assert debias.stage2.loss_weight == 0.0  # the lambda-0 row's own option

    lora, _ = runner('lora', '--no-shared-stage1')
    hook = checkpoint_hook(lora)
    assert (hook.interval, hook.max_keep_ckpts) == (ckpt.interval, ckpt.max_keep_ckpts)
    deb, stage1 = runner('lora_deblora', '--no-shared-stage1')
    assert stage1 is None and not deb._resume and deb._load_from is None


def run_table(*args: str, timeout: int) -> subprocess.CompletedProcess:
    """The tool in a fresh interpreter, as a user runs it, on one thread: its tensors are
    tiny, and beside other processes on the 2 cores OpenMP's waiting threads made one
    training iteration 30 times slower (7.5 s instead of 0.23 s, measured)."""
    env = dict(os.environ, PYTHONUNBUFFERED='1', OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, TOOL, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f'{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}'
    return proc


def state_dict(path):
    from mmdeblora.utils.checkpoint import load_checkpoint_file
    return load_checkpoint_file(path)['state_dict']


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_reduced_table_shared_stage1_and_resume(tmp_path):
    tool = load_tool()
    wd = str(tmp_path / 'table')
    # every row but LoRA asked for: the debLoRA rows run it first, for their stage 1
    others = [r for r in tool.ROWS if r != 'lora']
    proc = run_table('--reduced', '--work-dir', wd, '--rows', *others, timeout=900)
    assert ('lora: seeds [0, 1] to run first, the shared stage 1 of lora_deblora, '
            'lora_deblora_l0') in proc.stdout
    for seed in (0, 1):
        assert (f'[lora_deblora seed {seed}] its stage 1 is lora seed {seed}, whose result '
                'or checkpoint at the switch is missing: running it first') in proc.stdout
        assert f'[lora seed {seed}] trained in ' in proc.stdout
    runs = {(row, seed): osp.join(wd, row, f'seed{seed}', 'result.json')
            for row in tool.ROWS for seed in (0, 1)}
    mtimes = {k: os.path.getmtime(p) for k, p in runs.items()}

    # resumed with every row: nothing is trained again
    again = run_table('--reduced', '--work-dir', wd, timeout=600)
    for row in tool.ROWS:
        assert f'{row}: all 2 seeds done, skipped' in again.stdout
    assert {k: os.path.getmtime(p) for k, p in runs.items()} == mtimes
    with open(osp.join(wd, 'table.md')) as fh:
        table = fh.read()
    assert table in again.stdout
    res = {k: json.load(open(p)) for k, p in runs.items()}
    for (row, seed), r in res.items():
        assert f'| {tool.ROWS[row][0]} |' in table
        assert set(r['metrics']) >= {k for k, _ in tool.SCORES}
        assert all(0 <= r['metrics'][k] <= 1 for k, _ in tool.SCORES)
        if row not in tool.SHARED_STAGE1:
            assert r['stage1_from'] is None, row
            continue
        # the LoRA run's checkpoint at the switch, resumed: the stage-1 model the debLoRA
        # run saved at its switch is that checkpoint's, tensor for tensor
        lora_ckpt = osp.join(wd, 'lora', f'seed{seed}', 'train', 'epoch_1.pth')
        assert r['stage1_from'] == lora_ckpt and osp.isfile(lora_ckpt)
        own = state_dict(osp.join(wd, row, f'seed{seed}', 'train', 'stage1_final.pth'))
        shared = state_dict(lora_ckpt)
        assert own.keys() == shared.keys()
        assert all(torch.equal(own[k], shared[k]) for k in own), (row, seed)
        # the stage-2 adapter on top of the LoRA row's trainable set
        assert r['stage2_params'] > 0
        assert r['trainable_params'] == res['lora', seed]['trainable_params'] + \
            r['stage2_params']
        assert r['reach'] is not None and r['reach']['stage2_epochs'] == 1
    assert res['lora', 0]['options']['default_hooks.checkpoint.interval'] == 1
    for a, b in tool.PAIRS:
        assert f'| {tool.ROWS[a][0]} − {tool.ROWS[b][0]} | 2 |' in table
    assert ('Shared stage 1: LoRA + debLoRA continues the LoRA run of its seed at the '
            'switch (2 of 2 seeds)') in table
    tail = [100 * res['lora', s]['metrics']['dota/tail_mAP'] for s in (0, 1)]
    assert f'- LoRA: seed 0 {tail[0]:.1f}, seed 1 {tail[1]:.1f}' in table
    with open(osp.join(wd, 'reduced_data', 'target', 'target.json')) as fh:
        content = json.load(fh)['content']
    assert f'data {content}, foundation random' in table
