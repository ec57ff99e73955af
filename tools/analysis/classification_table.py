"""The paper's classification table on the bias benchmark, over several seeds.

    python tools/analysis/classification_table.py [--rows ROW ...] [--seeds 0 1 2 3 4]
        [--work-dir work_dirs/classification_table] [--data-root data/bias_benchmark/target/]
        [--foundation data/bias_benchmark/foundation.pth] [--reduced] [--cfg-options k=v ...]

Every (row, seed) is trained with the row's config (``configs/classification/``) on
mmengine's runner, as ``tools/train.py`` does (``CheckedRunner``), then its last checkpoint
is evaluated on the test split in a fresh runner, as ``tools/test.py`` does. Rows run one
after another, each in its own process (the seeds of a row in sequence inside it). A run
whose ``<work-dir>/<row>/seed<s>/result.json`` exists is skipped, so an interrupted table is
resumed by running the same command again; a run left half-done is started again.

Printed (and written to ``<work-dir>/table.md`` and ``table.json``): mean +- sd over the
seeds of head / middle / tail / all macro-F1 (%) and the trainable parameters, in the
paper's layout, and the paired differences (same seed) of LoRA + debLoRA against LoRA and
against its lambda-0 control (stage 2 without the feature loss) and of cLoRA + debLoRA
against cLoRA, with a 95 % t interval.

Trainable parameters: what the run updates; for the debLoRA rows the stage-1 set plus the
stage-2 adapter (``deblora``).

``--reduced``: tiny generated data (written under the work dir), a random-weight
foundation, 2 epochs (the debLoRA switch after 1) and 2 seeds: a check that every row runs
end to end and the table is assembled, in a few minutes; its numbers mean nothing.
"""
import argparse
import gc
import json
import math
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

CFG_DIR = osp.join(REPO, 'configs', 'classification')
# row -> (label in the table, config, extra --cfg-options)
ROWS: 'OrderedDict[str, Tuple[str, str, Dict[str, object]]]' = OrderedDict([
    ('zero_shot', ('Zero-shot', 'bias_zero_shot.py', {})),
    ('finetune', ('Fine-tune', 'bias_finetune.py', {})),
    ('clora', ('cLoRA', 'bias_clora.py', {})),
    ('clora_deblora', ('cLoRA + debLoRA', 'bias_clora_deblora.py', {})),
    ('lora', ('LoRA', 'bias_lora.py', {})),
    ('lora_reweight', ('LoRA + Reweight', 'bias_lora_reweight.py', {})),
    ('lora_logit_adjust', ('LoRA + logit adjustment', 'bias_lora_logit_adjust.py', {})),
    ('lora_smote', ('LoRA + SMOTE', 'bias_lora_smote.py', {})),
    ('lora_dro_lt', ('LoRA + DRO-LT', 'bias_lora_dro_lt.py', {})),
    ('lora_reslt', ('LoRA + ResLT', 'bias_lora_reslt.py', {})),
    ('lora_deblora', ('LoRA + debLoRA', 'bias_lora_deblora.py', {})),
    ('lora_deblora_l0', ('LoRA + debLoRA, lambda 0 (control)', 'bias_lora_deblora.py',
                         {'DebLoRAHook.loss_weight': 0.0})),
    ('oracle', ('LoRA, balanced training data (oracle, reference)', 'bias_lora_oracle.py',
                {})),
])
DEFAULT_ROWS = [r for r in ROWS if r != 'oracle']
PAIRS = [('lora_deblora', 'lora'), ('lora_deblora', 'lora_deblora_l0'),
         ('clora_deblora', 'clora')]
SCORES = (('head_f1', 'Head'), ('middle_f1', 'Middle'), ('tail_f1', 'Tail'),
          ('macro_f1', 'All'))
LORA_BACKBONES = ('LoRABackbone', 'CLoRABackbone')
MARKER = '.classification_table_run'
REDUCED_DATA = dict(max_count=24, imbalance_ratio=8, val_per_class=3, test_per_class=3,
                    img_size=96, objects_per_image=6.0)
REDUCED_SEEDS = [0, 1]


# ---------------------------------------------------------------------- arguments
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--rows', nargs='+', default=None, choices=list(ROWS),
                   help=f'rows to run, in table order (default: {" ".join(DEFAULT_ROWS)})')
    p.add_argument('--seeds', nargs='+', type=int, default=None,
                   help='seeds (default 0 1 2 3 4; --reduced: 0 1)')
    p.add_argument('--work-dir', default='work_dirs/classification_table')
    p.add_argument('--data-root', default=None,
                   help="the target domain folder (default: the configs' "
                   'data/bias_benchmark/target/)')
    p.add_argument('--foundation', default=None,
                   help="the foundation checkpoint (default: the configs' "
                   "data/bias_benchmark/foundation.pth); 'none' for random weights")
    p.add_argument('--reduced', action='store_true',
                   help='tiny generated data, random foundation, 2 epochs, 2 seeds')
    p.add_argument('--table-only', action='store_true',
                   help='only assemble the table from the finished runs')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='config overrides applied to every run, key=value; '
                   'DebLoRAHook.<option>=value addresses the de-biasing hook by name')
    p.add_argument('--worker', nargs='+', default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.seeds is None:
        a.seeds = REDUCED_SEEDS if a.reduced else [0, 1, 2, 3, 4]
    if len(set(a.seeds)) != len(a.seeds):
        raise SystemExit(f'--seeds repeats a seed: {a.seeds}')
    a.rows = a.rows or list(DEFAULT_ROWS)
    a.work_dir = osp.abspath(a.work_dir)
    return a


# ---------------------------------------------------------------------- configs
def reduced_data(work_dir: str) -> str:
    """Tiny generated target domain for ``--reduced`` (made once, reused)."""
    from mmdeblora.datasets.bias_benchmark import make_bias_target
    out = osp.join(work_dir, 'reduced_data')
    make_bias_target(out, log=None, **REDUCED_DATA)
    return osp.join(out, 'target') + '/'


def run_options(cfg, row: str, seed: int, args: argparse.Namespace) -> Dict[str, object]:
    """The --cfg-options of one run (data, foundation, seed, reduced mode, user's last)."""
    opts: Dict[str, object] = dict(ROWS[row][2])
    opts['randomness.seed'] = seed
    data_root = reduced_data(args.work_dir) if args.reduced else args.data_root
    loaders = ('train_dataloader', 'val_dataloader', 'test_dataloader')
    if data_root:
        opts.update({f'{k}.dataset.data_root': data_root for k in loaders})
    foundation = 'none' if args.reduced and args.foundation is None else args.foundation
    if foundation:
        path = None if foundation.lower() == 'none' else foundation
        if cfg.model.backbone.type in LORA_BACKBONES:
            opts['model.backbone.pretrained'] = path
        else:
            opts['model.backbone.init_cfg'] = None if path is None else dict(
                type='Pretrained', checkpoint=path, prefix='backbone.')
    if args.reduced:
        opts.update({f'{k}.dataset.cache_dir': osp.join(args.work_dir, 'crop_cache')
                     for k in loaders})
        opts.update({'train_cfg.max_epochs': 2, 'train_dataloader.batch_size': 64,
                     'optim_wrapper.optimizer.lr': 0.01,
                     'default_hooks.logger.interval': 1,
                     # no validation during training: the table reads the test split
                     'val_dataloader': None, 'val_cfg': None, 'val_evaluator': None})
        for i, hook in enumerate(cfg.get('custom_hooks', [])):
            if hook['type'] == 'DebLoRAHook':
                opts.update({f'custom_hooks.{i}.switch_epoch': 1,
                             f'custom_hooks.{i}.num_clusters': 4,
                             f'custom_hooks.{i}.kmeans': dict(n_init=1, seed=0),
                             f'custom_hooks.{i}.plot': None})
    opts.update(args.cfg_options)
    from mmdeblora.utils.launch import hook_keys
    return hook_keys(cfg, opts)


def build_cfg(row: str, seed: int, args: argparse.Namespace, work_dir: str):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(CFG_DIR, ROWS[row][1]))
    opts = run_options(cfg, row, seed, args)
    cfg.merge_from_dict(opts)
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    cfg.experiment_name = f'{row}_seed{seed}_{time.strftime("%Y%m%d_%H%M%S")}'
    return cfg, opts


# ---------------------------------------------------------------------- one run
def prepare_run_dir(path: str) -> None:
    """A fresh run directory; a half-done one of ours is started again."""
    if osp.isdir(path) and os.listdir(path):
        if not osp.isfile(osp.join(path, MARKER)):
            raise FileExistsError(f'{path} exists and was not made by this tool; move it '
                                  'or pick another --work-dir')
        shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)
    open(osp.join(path, MARKER), 'w').close()


def stage2_params(runner) -> int:
    """Parameters of the adapter a debLoRA stage added (0 when no switch happened)."""
    from mmengine.model import is_model_wrapper
    hook = next((h for h in runner.hooks if type(h).__name__ == 'DebLoRAHook'), None)
    if hook is None or hook.stage != 2:
        return 0
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    tag = f'.{hook.stage2.adapter_name}.'
    return sum(p.numel() for n, p in model.backbone.named_parameters()
               if 'lora_' in n and tag in n)


def run_one(row: str, seed: int, args: argparse.Namespace) -> dict:
    """Train and test one (row, seed); returns (and writes) its result."""
    from mmdeblora.engine import use_checked_runner
    from mmdeblora.utils.launch import build_runner
    out = osp.join(args.work_dir, row, f'seed{seed}')
    prepare_run_dir(out)
    cfg, opts = build_cfg(row, seed, args, osp.join(out, 'train'))
    use_checked_runner(cfg, False)
    start, cpu = time.time(), time.process_time()
    runner = build_runner(cfg)
    runner.train()
    train_s, train_cpu = time.time() - start, time.process_time() - cpu
    with open(osp.join(cfg.work_dir, 'trainable_params.json')) as fh:
        stage1 = json.load(fh)['trainable']
    extra = stage2_params(runner)
    with open(osp.join(cfg.work_dir, 'last_checkpoint')) as fh:
        ckpt = fh.read().strip()
    del runner
    gc.collect()
    tcfg, _ = build_cfg(row, seed, args, osp.join(out, 'test'))
    tcfg.load_from = ckpt
    use_checked_runner(tcfg, False)
    start = time.time()
    metrics = build_runner(tcfg).test()
    result = dict(row=row, label=ROWS[row][0], config=ROWS[row][1], seed=seed,
                  options={k: v for k, v in opts.items()}, checkpoint=ckpt,
                  metrics={k: float(v) for k, v in metrics.items()},
                  reach=last_reach(cfg.work_dir), fingerprints=run_fingerprints(cfg),
                  trainable_params=stage1 + extra, stage2_params=extra,
                  train_seconds=round(train_s, 1), train_cpu_seconds=round(train_cpu, 1),
                  test_seconds=round(time.time() - start, 1))
    from mmdeblora.utils.atomic import atomic_open
    with atomic_open(osp.join(out, 'result.json')) as fh:  # whole, or not at all
        json.dump(result, fh, indent=2, default=str)
    return result


_WEIGHTS_FP: Dict[str, str] = {}


def run_fingerprints(cfg) -> Dict[str, str]:
    """What a run was made from: the target data as drawn (``content`` of its
    ``target.json``, or hashed now) and the foundation's weights (``random`` without one),
    so that a table made elsewhere can be told apart from this one."""
    from mmdeblora.datasets.bias_benchmark.generate import content_fingerprint
    from mmdeblora.utils.checkpoint import load_checkpoint_file
    from mmdeblora.utils.summary import state_dict_fingerprint
    root = cfg.train_dataloader.dataset.get('data_root') or ''
    try:
        with open(osp.join(root, 'target.json')) as fh:
            data = json.load(fh).get('content')
    except (OSError, ValueError):
        data = None
    data = data or (content_fingerprint(root) if osp.isdir(root) else 'unknown')
    bb = cfg.model.backbone
    path = bb.get('pretrained') or (bb.get('init_cfg') or {}).get('checkpoint')
    if path and path not in _WEIGHTS_FP:
        ckpt = load_checkpoint_file(path)
        _WEIGHTS_FP[path] = state_dict_fingerprint(ckpt.get('state_dict', ckpt))
    return dict(data=data, foundation=_WEIGHTS_FP[path] if path else 'random')


def last_reach(work_dir: str) -> Optional[dict]:
    """The last target-reach row DebLoRAHook wrote (``deblora/reach.csv``), if any."""
    import csv
    path = osp.join(work_dir, 'deblora', 'reach.csv')
    if not osp.isfile(path):
        return None
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return {k: float(v) for k, v in rows[-1].items()} if rows else None


def result_path(work_dir: str, row: str, seed: int) -> str:
    return osp.join(work_dir, row, f'seed{seed}', 'result.json')


def worker(args: argparse.Namespace) -> int:
    """Run the unfinished seeds of the given rows in this process; 1 if any failed."""
    from mmdeblora.utils import register_all_modules
    register_all_modules()
    failed = []
    for row in args.worker:
        for seed in args.seeds:
            if osp.isfile(result_path(args.work_dir, row, seed)):
                continue
            try:
                r = run_one(row, seed, args)
                print(f'[{row} seed {seed}] trained in {r["train_seconds"]} s, tail '
                      f'macro-F1 {r["metrics"]["tail_f1"]:.2f}', flush=True)
            except Exception as e:  # keep going: the other runs are independent
                import traceback
                traceback.print_exc()
                failed.append(f'{row} seed {seed}: {type(e).__name__}: {e}')
    for f in failed:
        print(f'FAILED {f}', file=sys.stderr)
    return 1 if failed else 0


# ---------------------------------------------------------------------- statistics
def paired_interval(a: Dict[int, float], b: Dict[int, float],
                    level: float = 0.95) -> Optional[dict]:
    """Mean of a - b over the seeds both have, with its two-sided t interval."""
    from scipy import stats
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    d = [a[s] - b[s] for s in seeds]
    from mmdeblora.utils.summary import mean_sd
    mean, sd = mean_sd(d)
    if len(d) < 2:
        return dict(n=1, mean=mean, sd=sd, low=float('nan'), high=float('nan'), seeds=seeds)
    half = stats.t.ppf(0.5 + level / 2, len(d) - 1) * sd / math.sqrt(len(d))
    return dict(n=len(d), mean=mean, sd=sd, low=mean - half, high=mean + half, seeds=seeds)


def collect(work_dir: str, rows: Sequence[str], seeds: Sequence[int]) -> Dict[str, List[dict]]:
    out: Dict[str, List[dict]] = OrderedDict()
    for row in rows:
        runs = []
        for seed in seeds:
            path = result_path(work_dir, row, seed)
            if osp.isfile(path):
                with open(path) as fh:
                    runs.append(json.load(fh))
        out[row] = runs
    return out


def summarize(results: Dict[str, List[dict]]) -> dict:
    from mmdeblora.utils.summary import mean_sd
    rows = OrderedDict()
    for row, runs in results.items():
        entry = dict(label=ROWS[row][0], config=ROWS[row][1], seeds=[r['seed'] for r in runs])
        for key, _ in SCORES:
            vals = [r['metrics'][key] for r in runs]
            entry[key] = mean_sd(vals) if vals else (float('nan'), float('nan'))
        params = sorted({r['trainable_params'] for r in runs})
        entry['trainable_params'] = params
        entry['train_seconds'] = mean_sd([r['train_seconds'] for r in runs]) if runs else None
        entry['per_seed_tail'] = {r['seed']: r['metrics']['tail_f1'] for r in runs}
        rows[row] = entry
    pairs = []
    for a, b in PAIRS:
        if a in results and b in results:
            by_seed = {k: ({r['seed']: r['metrics'][k] for r in results[a]},
                           {r['seed']: r['metrics'][k] for r in results[b]})
                       for k, _ in SCORES}
            stats = {k: paired_interval(*v) for k, v in by_seed.items()}
            if all(stats.values()):
                pairs.append(dict(a=a, b=b, stats=stats))
    prints = sorted({tuple(sorted((r.get('fingerprints') or {}).items()))
                     for runs in results.values() for r in runs})
    return dict(rows=rows, pairs=pairs, fingerprints=[dict(p) for p in prints if p])


def fmt(ms: Tuple[float, float]) -> str:
    mean, sd = ms
    if math.isnan(mean):
        return '-'
    return f'{mean:.1f}' if math.isnan(sd) else f'{mean:.1f} ± {sd:.1f}'


def markdown(summary: dict, command: str) -> str:
    lines = [f'`{command}`', '',
             'Macro-F1 (%) on the test split, mean ± sd over seeds; trainable parameters: '
             'what the run updates.', '',
             '| method | head | middle | tail | all | trainable params | seeds |',
             '| --- | --- | --- | --- | --- | --- | --- |']
    for row in summary['rows'].values():
        params = ' / '.join(f'{p:,}' for p in row['trainable_params']) or '-'
        lines.append(f"| {row['label']} | " + ' | '.join(fmt(row[k]) for k, _ in SCORES) +
                     f" | {params} | {len(row['seeds'])} |")
    if summary['pairs']:
        lines += ['', 'Paired differences (same seed), mean [95 % t interval]:', '',
                  '| comparison | n | ' + ' | '.join(n for _, n in SCORES) + ' |',
                  '| --- | --- | ' + ' | '.join('---' for _ in SCORES) + ' |']
        for p in summary['pairs']:
            cells = []
            for k, _ in SCORES:
                s = p['stats'][k]
                cells.append(f"{s['mean']:+.1f} [{s['low']:+.1f}, {s['high']:+.1f}]"
                             if not math.isnan(s['low']) else f"{s['mean']:+.1f}")
            n = p['stats']['tail_f1']['n']
            lines.append(f"| {ROWS[p['a']][0]} − {ROWS[p['b']][0]} | {n} | " +
                         ' | '.join(cells) + ' |')
    lines += ['', 'Tail macro-F1 per seed:', '']
    for row in summary['rows'].values():
        lines.append(f"- {row['label']}: " + ', '.join(
            f'seed {s} {v:.1f}' for s, v in sorted(row['per_seed_tail'].items())))
    if summary.get('fingerprints'):
        lines += ['', 'Made from (data as drawn / foundation weights, sha256 prefixes): ' +
                  '; '.join(f"data {p.get('data')}, foundation {p.get('foundation')}"
                            for p in summary['fingerprints'])]
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    os.makedirs(args.work_dir, exist_ok=True)
    status = 0
    if not args.table_only:
        if args.reduced:
            reduced_data(args.work_dir)  # once, before the rows share it
        passthrough = list(argv if argv is not None else sys.argv[1:])
        todo = OrderedDict()
        for row in args.rows:
            seeds = [s for s in args.seeds
                     if not osp.isfile(result_path(args.work_dir, row, s))]
            print(f'{row}: ' + (f'seeds {seeds} to run' if seeds else
                                f'all {len(args.seeds)} seeds done, skipped'), flush=True)
            if seeds:
                todo[row] = seeds
        # one process per row (a crash loses at most that row's unfinished seeds); the
        # reduced table's runs are seconds each, so they share one process
        groups = [list(todo)] if args.reduced else [[row] for row in todo]
        for rows in filter(None, groups):
            cmd = [sys.executable, osp.abspath(__file__), *passthrough, '--worker', *rows]
            status |= subprocess.call(cmd, cwd=os.getcwd())
    summary = summarize(collect(args.work_dir, args.rows, args.seeds))
    command = 'python tools/analysis/classification_table.py ' + ' '.join(
        a for a in (argv if argv is not None else sys.argv[1:]))
    text = markdown(summary, command.strip())
    from mmdeblora.utils.atomic import atomic_open  # renamed into place, not written through
    with atomic_open(osp.join(args.work_dir, 'table.md')) as fh:
        fh.write(text)
    with atomic_open(osp.join(args.work_dir, 'table.json')) as fh:
        json.dump(summary, fh, indent=2)
    print(text)
    missing = [(r, s) for r in args.rows for s in args.seeds
               if not osp.isfile(result_path(args.work_dir, r, s))]
    if missing:
        print(f'{len(missing)} run(s) missing: {missing}', file=sys.stderr)
        status = 1
    return status


if __name__ == '__main__':
    sys.exit(main())
