"""The foundation as a factor: one comparison over several pretrained foundations.

    python tools/analysis/foundation_factor.py DIR [DIR ...] [--rows lora lora_deblora
        lora_deblora_l0] [--metric tail_f1] [--out F.md]

Each DIR is a ``classification_table.py`` work dir made with one foundation
(``--foundation``) and the same data and seeds. A conclusion drawn from one foundation rests
on one pretraining draw; this prints, per foundation, the rows' values per seed and the
paired differences of the second row against the others (same seed), then the same
differences over every (foundation, seed) pair, and over the foundations' means (one value
per foundation: the interval that treats the foundation as the random factor).
"""
import argparse
import glob
import json
import math
import os.path as osp
from typing import Dict, List, Optional, Sequence

from mmdeblora.utils.atomic import atomic_open
from mmdeblora.utils.seed_table import paired_interval
from mmdeblora.utils.summary import mean_sd


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('dirs', nargs='+', help='one classification_table.py work dir a foundation')
    p.add_argument('--rows', nargs='+', default=['lora', 'lora_deblora', 'lora_deblora_l0'],
                   help='the rows; the second is compared with each of the others')
    p.add_argument('--metric', default='tail_f1', help='key of result.json "metrics"')
    p.add_argument('--scale', type=float, default=1.0,
                   help='multiplies the metric (100 for detection mAP, stored as a fraction)')
    p.add_argument('--out', help='also write the table to this markdown file')
    return p.parse_args(argv)


def load(dir_: str, row: str, metric: str, scale: float = 1.0) -> Dict[int, float]:
    """seed -> metric (x scale) of one row; a run without the metric is an error naming it."""
    out = {}
    for path in sorted(glob.glob(osp.join(dir_, row, 'seed*', 'result.json'))):
        with open(path) as fh:
            r = json.load(fh)
        if metric not in r.get('metrics', {}):
            raise KeyError(f'{path} has no metric {metric!r} '
                           f'(has {sorted(r.get("metrics", {}))[:8]})')
        out[int(r['seed'])] = scale * r['metrics'][metric]
    return out


def foundation_of(dir_: str, rows: Sequence[str]) -> str:
    """The foundation fingerprint the runs recorded (one per dir, or an error)."""
    prints = set()
    for row in rows:
        for path in glob.glob(osp.join(dir_, row, 'seed*', 'result.json')):
            with open(path) as fh:
                prints.add((json.load(fh).get('fingerprints') or {}).get('foundation'))
    prints.discard(None)
    if len(prints) > 1:
        raise ValueError(f'{dir_} mixes runs of several foundations: {sorted(prints)}')
    return prints.pop() if prints else '?'


def interval_text(iv: Optional[dict]) -> str:
    if iv is None:
        return '-'
    if iv['n'] < 2 or math.isnan(iv['low']):
        return f"{iv['mean']:+.1f} (n={iv['n']})"
    return f"{iv['mean']:+.1f} [{iv['low']:+.1f}, {iv['high']:+.1f}] (n={iv['n']})"


def table(dirs: Sequence[str], rows: Sequence[str], metric: str, scale: float = 1.0) -> str:
    main, others = rows[1], [rows[0]] + list(rows[2:])
    lines = [f'{metric}, per foundation: mean +- sd (per seed); paired differences of '
             f'{main} (same seed), mean [95 % t interval].', '',
             '| foundation | ' + ' | '.join(rows) + ' | ' +
             ' | '.join(f'{main} - {o}' for o in others) + ' |',
             '| --- ' * (1 + len(rows) + len(others)) + '|']
    pooled: Dict[str, Dict[int, float]] = {r: {} for r in rows}
    per_foundation: Dict[str, List[float]] = {o: [] for o in others}
    for k, dir_ in enumerate(dirs):
        vals = {r: load(dir_, r, metric, scale) for r in rows}
        cells = []
        for r in rows:
            v = vals[r]
            if not v:
                cells.append('-')
                continue
            m, sd = mean_sd(list(v.values()))
            cells.append((f'{m:.1f} +- {sd:.1f} (' if len(v) > 1 else '(') +
                         ' / '.join(f'{v[s]:.1f}' for s in sorted(v)) + ')')
            # a (foundation, seed) pair is one unit of the pooled comparison
            pooled[r].update({k * 10_000 + s: x for s, x in v.items()})
        diffs = []
        for o in others:
            iv = paired_interval(vals[main], vals[o])
            diffs.append(interval_text(iv))
            if iv is not None:
                per_foundation[o].append(iv['mean'])
        lines.append(f'| {foundation_of(dir_, rows)} ({dir_}) | ' + ' | '.join(cells) +
                     ' | ' + ' | '.join(diffs) + ' |')
    lines += ['', 'Over all (foundation, seed) pairs and over the foundations\' means:', '']
    for o in others:
        iv_all = paired_interval(pooled[main], pooled[o])
        means = per_foundation[o]
        iv_f = paired_interval(dict(enumerate(means)), dict.fromkeys(range(len(means)), 0.0))
        lines.append(f'- {main} - {o}: pairs {interval_text(iv_all)}; '
                     f'foundations {interval_text(iv_f)}')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if len(args.rows) < 2:
        raise SystemExit('--rows needs at least two rows (the second is compared)')
    text = table(args.dirs, args.rows, args.metric, args.scale)
    print(text)
    if args.out:
        with atomic_open(args.out) as fh:
            fh.write(text)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
