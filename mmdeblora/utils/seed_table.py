"""The machinery of the paper's tables over seeds (``tools/analysis/classification_table.py``,
``tools/analysis/detection_table.py``): every (row, seed) trained with its row's config on
mmengine's runner as ``tools/train.py`` does (``CheckedRunner``), its last checkpoint tested in
a fresh runner as ``tools/test.py`` does, one ``result.json`` per run (resumable), then mean
+- sd over the seeds and paired differences (same seed) with a t interval.

What differs between the tables (rows, scores, the reduced mode) is a
:class:`TableProtocol`; everything here takes one. A script is the protocol plus thin
wrappers, so the two tables cannot drift apart.

Shared stage 1 (``TableProtocol.shared_stage1``, ``--no-shared-stage1`` turns it off): a
debLoRA row does not train its stage 1 again; it resumes its stage-1 row (LoRA) of the same
seed at the switch epoch (``<work-dir>/<stage-1 row>/seed<s>/train/epoch_<switch>.pth``,
which that row is made to keep). Sound because up to the switch a debLoRA row is the LoRA
recipe with the same seed: its config is the LoRA config plus the hook, which acts only at
the switch (the de-biasing model is the plain one until it enters stage 2), so the LoRA
run's first epochs are a stage 1 of the debLoRA row. And the resume is exact:
``CheckedRunner``'s ``RandomStateHook`` restores the random state and the loader's seeds
saved with the checkpoint, so the resumed run goes on as an uninterrupted one would. It
saves the stage-1 epochs of every debLoRA row and removes stage-1 noise from the paired
differences against the stage-1 row: both sides share one stage 1, so the difference
measures stage 2 alone. (A debLoRA run trained from scratch is *not* the LoRA run of its
seed bit for bit: ``DebLoRAHook.before_run`` dry-runs the feature extraction, which draws
random numbers before mmengine initialises the weights, so its neck and heads start from
other weights.) ``train_seconds`` of a sharing row counts its stage 2 only.
"""
import argparse
import functools
import gc
import json
import math
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
from collections import OrderedDict, namedtuple
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

LORA_BACKBONES = ('LoRABackbone', 'CLoRABackbone')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
HOOK = 'DebLoRAHook'
PHASES_HOOK = 'TrainingPhasesHook'

Row = Tuple[str, str, Dict[str, object]]  # (label in the table, config file, extra options)


@dataclass(frozen=True)
class TableProtocol:
    """What one table is made of; the machinery of this module does the rest.

    Args:
        name: the table's name (``'classification'``): the run marker
            ``.<name>_table_run`` and the default work dir ``work_dirs/<name>_table``.
        tool: the script's path, ``<repo>/tools/analysis/<script>.py``; its worker
            processes run it again.
        doc: the script's docstring (``--help``).
        cfg_dir: the folder of the rows' configs.
        rows: row -> (label, config file in ``cfg_dir``, extra ``--cfg-options``), in
            table order.
        default_rows: the rows run without ``--rows``.
        pairs: (a, b) rows whose paired difference a - b is tabulated.
        scores: (metric key of ``runner.test()``, column name), head / middle / tail / all.
        tail: the metric key of the per-seed lines and the progress line.
        tail_text: its words in the progress line and the per-seed heading
            (``'tail macro-F1'``).
        unit: the table's caption, what the numbers are (``'Macro-F1 (%)'``).
        reduced_options: ``(cfg, args) -> options`` of ``--reduced`` (after data root,
            foundation and seed; before the user's ``--cfg-options``).
        reduced_data: ``work_dir -> data root`` of ``--reduced`` (made once, reused).
        scale: metric -> table value (100 for a metric in 0..1 shown in %).
        shared_stage1: debLoRA row -> the row whose stage 1 it resumes (module docstring).
    """
    name: str
    tool: str
    doc: str
    cfg_dir: str
    rows: Mapping[str, Row]
    default_rows: Tuple[str, ...]
    pairs: Tuple[Tuple[str, str], ...]
    scores: Tuple[Tuple[str, str], ...]
    tail: str
    tail_text: str
    unit: str
    reduced_options: Callable[[Any, argparse.Namespace], Dict[str, object]]
    reduced_data: Callable[[str], str]
    scale: float = 1.0
    seeds: Tuple[int, ...] = (0, 1, 2, 3, 4)
    reduced_seeds: Tuple[int, ...] = (0, 1)
    shared_stage1: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        named = set(self.default_rows) | {r for p in self.pairs for r in p} | \
            set(self.shared_stage1) | set(self.shared_stage1.values())
        unknown = sorted(named - set(self.rows))
        if unknown:
            raise ValueError(f'{self.name} table: rows {unknown} are not in its rows')
        chained = sorted(set(self.shared_stage1) & set(self.shared_stage1.values()))
        if chained:
            raise ValueError(f'{self.name} table: rows {chained} both share and give a '
                             'stage 1 (shared_stage1)')
        if self.tail not in dict(self.scores):
            raise ValueError(f'{self.name} table: tail {self.tail!r} is not a score')

    @property
    def marker(self) -> str:
        return f'.{self.name}_table_run'

    @property
    def work_dir(self) -> str:
        return f'work_dirs/{self.name}_table'

    @property
    def command(self) -> str:
        """How the table's caption names the script: from the repo root."""
        tool = osp.abspath(self.tool)
        return 'python ' + osp.relpath(tool, osp.dirname(osp.dirname(osp.dirname(tool))))


# ---------------------------------------------------------------------- arguments
def parse_args(proto: TableProtocol,
               argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=proto.doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--rows', nargs='+', default=None, choices=list(proto.rows),
                   help='rows to run, in table order (default: '
                   f'{" ".join(proto.default_rows)})')
    seeds = ' '.join(map(str, proto.seeds))
    reduced = ' '.join(map(str, proto.reduced_seeds))
    p.add_argument('--seeds', nargs='+', type=int, default=None,
                   help=f'seeds (default {seeds}; --reduced: {reduced})')
    p.add_argument('--work-dir', default=proto.work_dir)
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
    if proto.shared_stage1:
        sharing = ', '.join(f'{a} from {b}' for a, b in proto.shared_stage1.items())
        p.add_argument('--no-shared-stage1', dest='shared_stage1', action='store_false',
                       help='train the stage 1 of every debLoRA row in the row itself '
                       f'(default: resumed from the stage-1 row of the same seed: {sharing})')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='config overrides applied to every run, key=value; '
                   'DebLoRAHook.<option>=value addresses the de-biasing hook by name')
    p.add_argument('--worker', nargs='+', default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if not proto.shared_stage1:
        a.shared_stage1 = False
    if a.seeds is None:
        a.seeds = list(proto.reduced_seeds if a.reduced else proto.seeds)
    if len(set(a.seeds)) != len(a.seeds):
        raise SystemExit(f'--seeds repeats a seed: {a.seeds}')
    a.rows = a.rows or list(proto.default_rows)
    a.work_dir = osp.abspath(a.work_dir)
    return a


# ---------------------------------------------------------------------- configs
def reduced_target(work_dir: str, settings: Dict[str, object]) -> str:
    """Tiny generated target domain of a ``--reduced`` table under ``work_dir`` (made once,
    reused): its data root."""
    from mmdeblora.datasets.bias_benchmark import make_bias_target
    out = osp.join(work_dir, 'reduced_data')
    make_bias_target(out, log=None, **settings)
    return osp.join(out, 'target') + '/'


def reduced_hook_options(cfg) -> Dict[str, object]:
    """``--reduced`` settings of the config's DebLoRAHook: the switch after epoch 1, K = 4,
    one k-means start, no plot; of its TrainingPhasesHook: one epoch per phase (the run
    gets as many epochs as it has phases)."""
    opts: Dict[str, object] = {}
    for i, hook in enumerate(cfg.get('custom_hooks', [])):
        if hook['type'] == HOOK:
            opts.update({f'custom_hooks.{i}.switch_epoch': 1,
                         f'custom_hooks.{i}.num_clusters': 4,
                         f'custom_hooks.{i}.kmeans': dict(n_init=1, seed=0),
                         f'custom_hooks.{i}.plot': None})
        if hook['type'] == PHASES_HOOK:
            phases = hook['phases']
            opts.update({f'custom_hooks.{i}.phases.{j}.begin': j + 1
                         for j in range(len(phases))})
            opts['train_cfg.max_epochs'] = len(phases) + 1
    return opts


def run_options(proto: TableProtocol, cfg, row: str, seed: int,
                args: argparse.Namespace) -> Dict[str, object]:
    """The --cfg-options of one run (data, foundation, seed, reduced mode, user's, and what
    a shared stage 1 needs last). ``DebLoRAHook.<option>`` options address the rows whose
    config has the hook; the other rows leave them out (a stage-1 row still reads them
    through the switch epoch of the rows it serves)."""
    opts: Dict[str, object] = {'randomness.seed': seed}
    data_root = proto.reduced_data(args.work_dir) if args.reduced else args.data_root
    if data_root:
        opts.update({f'{k}.dataset.data_root': data_root for k in LOADERS})
    foundation = 'none' if args.reduced and args.foundation is None else args.foundation
    if foundation:
        path = None if foundation.lower() == 'none' else foundation
        if cfg.model.backbone.type in LORA_BACKBONES:
            opts['model.backbone.pretrained'] = path
        else:
            opts['model.backbone.init_cfg'] = None if path is None else dict(
                type='Pretrained', checkpoint=path, prefix='backbone.')
    if args.reduced:
        opts.update(proto.reduced_options(cfg, args))
    opts.update(args.cfg_options)
    # the row's own options after the user's: a control row stays a control (with
    # --cfg-options DebLoRAHook.loss_weight=0.2 the lambda-0 row keeps lambda 0)
    opts.update(proto.rows[row][2])
    opts.update(stage1_keep_options(proto, row, seed, args))
    from mmdeblora.utils.launch import HOOK_PREFIX, hook_keys
    if not debias_hooks(cfg):  # DebLoRAHook.<option> is for the rows that have the hook
        opts = {k: v for k, v in opts.items() if not k.startswith(HOOK_PREFIX)}
    return hook_keys(cfg, opts)


def debias_hooks(cfg) -> List[dict]:
    return [h for h in cfg.get('custom_hooks') or [] if h.get('type') == HOOK]


def build_cfg(proto: TableProtocol, row: str, seed: int, args: argparse.Namespace,
              work_dir: str):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(proto.cfg_dir, proto.rows[row][1]))
    opts = run_options(proto, cfg, row, seed, args)
    cfg.merge_from_dict(opts)
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    cfg.experiment_name = f'{row}_seed{seed}_{time.strftime("%Y%m%d_%H%M%S")}'
    return cfg, opts


def build_train_cfg(proto: TableProtocol, row: str, seed: int, args: argparse.Namespace,
                    work_dir: str):
    """The training run's config (:func:`build_cfg`), resuming the stage-1 row's checkpoint
    for a row that shares its stage 1; returns it, its options and that checkpoint."""
    cfg, opts = build_cfg(proto, row, seed, args, work_dir)
    stage1 = stage1_checkpoint(proto, row, seed, args)
    if stage1 is not None:  # continue the stage-1 row's run (the test run loads its own)
        cfg.resume, cfg.load_from = True, stage1
    return cfg, opts, stage1


# ---------------------------------------------------------------------- shared stage 1
def stage1_row(proto: TableProtocol, row: str, args: argparse.Namespace) -> Optional[str]:
    """The row whose stage 1 ``row`` resumes, or None (not a sharing row, or switched off)."""
    return proto.shared_stage1.get(row) if args.shared_stage1 else None


_SWITCH: Dict[Tuple[str, str, int, str], int] = {}


def switch_epoch(proto: TableProtocol, row: str, seed: int, args: argparse.Namespace) -> int:
    """The DebLoRAHook ``switch_epoch`` of ``row``'s run, after its options (read once per
    process and arguments: a config read takes about a second)."""
    key = (proto.name, row, seed, repr(sorted(vars(args).items())))
    if key not in _SWITCH:
        cfg, _ = build_cfg(proto, row, seed, args, work_dir='')
        hooks = debias_hooks(cfg)
        if len(hooks) != 1:
            raise ValueError(f'{proto.name} table: row {row} shares a stage 1 '
                             f'(shared_stage1), so its config {proto.rows[row][1]} needs '
                             f'exactly one {HOOK} in custom_hooks; it has {len(hooks)}')
        _SWITCH[key] = int(hooks[0]['switch_epoch'])
    return _SWITCH[key]


def stage1_switch(proto: TableProtocol, source: str, seed: int,
                  args: argparse.Namespace) -> Optional[int]:
    """The one switch epoch of the rows that resume ``source``'s stage 1 (None: none do);
    the checkpoint interval of ``source`` is set to it, so they must agree."""
    rows = [r for r, s in proto.shared_stage1.items() if s == source]
    if not rows or not args.shared_stage1:
        return None
    epochs = {r: switch_epoch(proto, r, seed, args) for r in rows}
    if len(set(epochs.values())) > 1:
        raise ValueError(f'rows {sorted(epochs)} resume the stage 1 of {source} at '
                         f'different switch epochs {epochs}; give them one '
                         'DebLoRAHook.switch_epoch or pass --no-shared-stage1')
    return next(iter(epochs.values()))


def stage1_keep_options(proto: TableProtocol, row: str, seed: int,
                        args: argparse.Namespace) -> Dict[str, object]:
    """A stage-1 row keeps its checkpoint at the switch epoch: the checkpoint interval is the
    switch epoch and no checkpoint is rotated out (``save_last`` stays)."""
    epoch = stage1_switch(proto, row, seed, args)
    if not epoch or epoch < 1:
        return {}
    return {'default_hooks.checkpoint.interval': epoch,
            'default_hooks.checkpoint.max_keep_ckpts': -1}


def stage1_checkpoint(proto: TableProtocol, row: str, seed: int,
                      args: argparse.Namespace) -> Optional[str]:
    """The checkpoint ``row`` resumes its stage 1 from (None: it trains its own)."""
    source = stage1_row(proto, row, args)
    if source is None:
        return None
    epoch = switch_epoch(proto, row, seed, args)
    if epoch < 1:
        return None  # no stage 1 to share
    return osp.join(args.work_dir, source, f'seed{seed}', 'train', f'epoch_{epoch}.pth')


def stage1_missing(proto: TableProtocol, row: str, seed: int,
                   args: argparse.Namespace) -> Optional[str]:
    """The stage-1 row that must run (again) before ``row`` for ``seed``: its result or the
    checkpoint ``row`` resumes is missing. None when nothing is missing."""
    ckpt = stage1_checkpoint(proto, row, seed, args)
    if ckpt is None:
        return None
    source = proto.shared_stage1[row]
    done = osp.isfile(result_path(args.work_dir, source, seed)) and osp.isfile(ckpt)
    return None if done else source


# ---------------------------------------------------------------------- one run
def prepare_run_dir(path: str, marker: str) -> None:
    """A fresh run directory; a half-done one of ours is started again."""
    if osp.isdir(path) and os.listdir(path):
        if not osp.isfile(osp.join(path, marker)):
            raise FileExistsError(f'{path} exists and was not made by this tool; move it '
                                  'or pick another --work-dir')
        shutil.rmtree(path)
    os.makedirs(path, exist_ok=True)
    open(osp.join(path, marker), 'w').close()


def stage2_params(runner) -> int:
    """Parameters of the adapter a debLoRA stage added (0 when no switch happened)."""
    from mmengine.model import is_model_wrapper
    hook = next((h for h in runner.hooks if type(h).__name__ == HOOK), None)
    if hook is None or hook.stage != 2:
        return 0
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    tag = f'.{hook.stage2.adapter_name}.'
    return sum(p.numel() for n, p in model.backbone.named_parameters()
               if 'lora_' in n and tag in n)


def run_one(proto: TableProtocol, row: str, seed: int, args: argparse.Namespace) -> dict:
    """Train and test one (row, seed); returns (and writes) its result."""
    from mmdeblora.engine import use_checked_runner
    from mmdeblora.utils.launch import build_runner
    out = osp.join(args.work_dir, row, f'seed{seed}')
    stage1 = stage1_checkpoint(proto, row, seed, args)
    if stage1 is not None and not osp.isfile(stage1):
        raise FileNotFoundError(f'{row} seed {seed} resumes the stage 1 of '
                                f'{proto.shared_stage1[row]} from {stage1}, which does not '
                                'exist; run that row first or pass --no-shared-stage1')
    prepare_run_dir(out, proto.marker)
    cfg, opts, stage1 = build_train_cfg(proto, row, seed, args, osp.join(out, 'train'))
    use_checked_runner(cfg, False)
    start, cpu = time.time(), time.process_time()
    runner = build_runner(cfg)
    runner.train()
    train_s, train_cpu = time.time() - start, time.process_time() - cpu
    with open(osp.join(cfg.work_dir, 'trainable_params.json')) as fh:
        trainable = json.load(fh)['trainable']
    extra = stage2_params(runner)
    with open(osp.join(cfg.work_dir, 'last_checkpoint')) as fh:
        ckpt = fh.read().strip()
    del runner
    gc.collect()
    tcfg, _ = build_cfg(proto, row, seed, args, osp.join(out, 'test'))
    tcfg.load_from = ckpt
    use_checked_runner(tcfg, False)
    start = time.time()
    metrics = build_runner(tcfg).test()
    result = dict(row=row, label=proto.rows[row][0], config=proto.rows[row][1], seed=seed,
                  options={k: v for k, v in opts.items()}, checkpoint=ckpt)
    if proto.shared_stage1:
        result['stage1_from'] = stage1
    result.update(metrics={k: float(v) for k, v in metrics.items()},
                  reach=last_reach(cfg.work_dir), fingerprints=run_fingerprints(cfg),
                  trainable_params=trainable + extra, stage2_params=extra,
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


def worker(proto: TableProtocol, args: argparse.Namespace) -> int:
    """Run the unfinished seeds of the given rows in this process; 1 if any failed."""
    from mmdeblora.utils import register_all_modules
    register_all_modules()
    failed = []
    for row in args.worker:
        for seed in args.seeds:
            if osp.isfile(result_path(args.work_dir, row, seed)):
                continue
            try:
                source = stage1_missing(proto, row, seed, args)
                if source is not None:
                    print(f'[{row} seed {seed}] its stage 1 is {source} seed {seed}, whose '
                          'result or checkpoint at the switch is missing: running it first',
                          flush=True)
                    report(proto, run_one(proto, source, seed, args))
                report(proto, run_one(proto, row, seed, args))
            except Exception as e:  # keep going: the other runs are independent
                import traceback
                traceback.print_exc()
                failed.append(f'{row} seed {seed}: {type(e).__name__}: {e}')
    for f in failed:
        print(f'FAILED {f}', file=sys.stderr)
    return 1 if failed else 0


def report(proto: TableProtocol, r: dict) -> None:
    """One line per finished run."""
    print(f'[{r["row"]} seed {r["seed"]}] trained in {r["train_seconds"]} s, '
          f'{proto.tail_text} {proto.scale * r["metrics"][proto.tail]:.2f}', flush=True)


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


def summarize(proto: TableProtocol, results: Dict[str, List[dict]]) -> dict:
    """Mean +- sd per row and the paired intervals, in table units (``proto.scale``)."""
    from mmdeblora.utils.summary import mean_sd

    def value(r: dict, key: str) -> float:
        return proto.scale * r['metrics'][key]

    rows = OrderedDict()
    for row, runs in results.items():
        entry = dict(label=proto.rows[row][0], config=proto.rows[row][1],
                     seeds=[r['seed'] for r in runs])
        for key, _ in proto.scores:
            vals = [value(r, key) for r in runs]
            entry[key] = mean_sd(vals) if vals else (float('nan'), float('nan'))
        params = sorted({r['trainable_params'] for r in runs})
        entry['trainable_params'] = params
        entry['train_seconds'] = mean_sd([r['train_seconds'] for r in runs]) if runs else None
        entry['per_seed_tail'] = {r['seed']: value(r, proto.tail) for r in runs}
        if proto.shared_stage1:
            entry['stage1_shared'] = sum(bool(r.get('stage1_from')) for r in runs)
        rows[row] = entry
    pairs = []
    for a, b in proto.pairs:
        if a in results and b in results:
            by_seed = {k: ({r['seed']: value(r, k) for r in results[a]},
                           {r['seed']: value(r, k) for r in results[b]})
                       for k, _ in proto.scores}
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


def markdown(proto: TableProtocol, summary: dict, command: str) -> str:
    scores = proto.scores
    lines = [f'`{command}`', '',
             f'{proto.unit} on the test split, mean ± sd over seeds; trainable parameters: '
             'what the run updates.', '',
             '| method | ' + ' | '.join(n.lower() for _, n in scores) +
             ' | trainable params | seeds |',
             '| --- | ' + ' | '.join('---' for _ in scores) + ' | --- | --- |']
    for row in summary['rows'].values():
        params = ' / '.join(f'{p:,}' for p in row['trainable_params']) or '-'
        lines.append(f"| {row['label']} | " + ' | '.join(fmt(row[k]) for k, _ in scores) +
                     f" | {params} | {len(row['seeds'])} |")
    shared = {r: proto.shared_stage1[r] for r, e in summary['rows'].items()
              if e.get('stage1_shared')}
    if shared:
        lines += ['', 'Shared stage 1: ' + '; '.join(
            f'{proto.rows[r][0]} continues the {proto.rows[s][0]} run of its seed at the '
            f'switch ({summary["rows"][r]["stage1_shared"]} of '
            f'{len(summary["rows"][r]["seeds"])} seeds)' for r, s in shared.items()) +
            '; a paired difference against that run measures stage 2 alone.']
    if summary['pairs']:
        lines += ['', 'Paired differences (same seed), mean [95 % t interval]:', '',
                  '| comparison | n | ' + ' | '.join(n for _, n in scores) + ' |',
                  '| --- | --- | ' + ' | '.join('---' for _ in scores) + ' |']
        for p in summary['pairs']:
            cells = []
            for k, _ in scores:
                s = p['stats'][k]
                cells.append(f"{s['mean']:+.1f} [{s['low']:+.1f}, {s['high']:+.1f}]"
                             if not math.isnan(s['low']) else f"{s['mean']:+.1f}")
            n = p['stats'][proto.tail]['n']
            lines.append(f"| {proto.rows[p['a']][0]} − {proto.rows[p['b']][0]} | {n} | " +
                         ' | '.join(cells) + ' |')
    lines += ['', f'{proto.tail_text[0].upper()}{proto.tail_text[1:]} per seed:', '']
    for row in summary['rows'].values():
        lines.append(f"- {row['label']}: " + ', '.join(
            f'seed {s} {v:.1f}' for s, v in sorted(row['per_seed_tail'].items())))
    if summary.get('fingerprints'):
        lines += ['', 'Made from (data as drawn / foundation weights, sha256 prefixes): ' +
                  '; '.join(f"data {p.get('data')}, foundation {p.get('foundation')}"
                            for p in summary['fingerprints'])]
    return '\n'.join(lines) + '\n'


# ---------------------------------------------------------------------- main
def plan(proto: TableProtocol, args: argparse.Namespace) -> 'OrderedDict[str, List[int]]':
    """The unfinished seeds of each requested row (printed), and the stage-1 runs that must
    come first although not requested or already done (printed, run by the workers)."""
    todo: 'OrderedDict[str, List[int]]' = OrderedDict()
    for row in args.rows:
        seeds = [s for s in args.seeds if not osp.isfile(result_path(args.work_dir, row, s))]
        print(f'{row}: ' + (f'seeds {seeds} to run' if seeds else
                            f'all {len(args.seeds)} seeds done, skipped'), flush=True)
        if seeds:
            todo[row] = seeds
    first: 'OrderedDict[str, Tuple[List[int], List[str]]]' = OrderedDict()
    for row, seeds in todo.items():
        for s in seeds:
            source = stage1_missing(proto, row, s, args)
            if source is not None and s not in todo.get(source, []):
                missing, rows = first.setdefault(source, ([], []))
                missing += [] if s in missing else [s]
                rows += [] if row in rows else [row]
    for source, (seeds, rows) in first.items():
        print(f'{source}: seeds {sorted(seeds)} to run first, the shared stage 1 of '
              f'{", ".join(rows)} (its result or its checkpoint at the switch is missing; '
              '--no-shared-stage1 trains stage 1 in the row itself)', flush=True)
    return todo


def main(proto: TableProtocol, argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(proto, argv)
    if args.worker:
        return worker(proto, args)
    os.makedirs(args.work_dir, exist_ok=True)
    status = 0
    if not args.table_only:
        if args.reduced:
            proto.reduced_data(args.work_dir)  # once, before the rows share it
        passthrough = list(argv if argv is not None else sys.argv[1:])
        todo = plan(proto, args)
        # one process per row (a crash loses at most that row's unfinished seeds); the
        # reduced table's runs are seconds each, so they share one process
        groups = [list(todo)] if args.reduced else [[row] for row in todo]
        for rows in filter(None, groups):
            cmd = [sys.executable, osp.abspath(proto.tool), *passthrough, '--worker', *rows]
            status |= subprocess.call(cmd, cwd=os.getcwd())
    summary = summarize(proto, collect(args.work_dir, args.rows, args.seeds))
    command = f'{proto.command} ' + ' '.join(
        a for a in (argv if argv is not None else sys.argv[1:]))
    text = markdown(proto, summary, command.strip())
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


Bound = namedtuple('Bound', ['parse_args', 'run_options', 'build_cfg', 'prepare_run_dir',
                             'run_one', 'worker', 'summarize', 'markdown', 'main'])


def bind(proto: TableProtocol) -> Bound:
    """The machinery bound to one table: the module-level functions its script exposes."""
    fns = {name: functools.partial(globals()[name], proto) for name in Bound._fields}
    fns['prepare_run_dir'] = functools.partial(prepare_run_dir, marker=proto.marker)
    return Bound(**fns)
