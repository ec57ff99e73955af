"""Table of stage-2 sweep settings: target reach and test scores, mean +- sd over seeds.

    python tools/analysis/collect_reach.py DIR [DIR ...] [--row lora_deblora] [--out F.md]

Each DIR is a ``classification_table.py`` or ``detection_table.py`` work dir (one per
setting, as ``tools/analysis/stage2_sweep.sh`` makes them); the setting's name is the
folder's name. Per setting: the seeds found, the calibrated gap at the end of stage 2
relative to the switch (``cal_gap``, goal <= 0.5), the others' drift in units of s, and
head / tail / all macro-F1 (%) (detection: head / middle / tail / all mAP), with every
seed's value listed so the table can be checked run by run.

``--pair A B`` (repeatable) adds paired differences A − B of the scores over the seeds both
have, mean [95 % t interval]; A and B name settings (the folders' names), ``A:ROW`` another
row of that folder (``augment:lora``: the LoRA row linked into it by ``LORA_FROM``).
"""
import argparse
import glob
import json
import os.path as osp
from typing import List, Optional, Sequence

COLUMNS = (('reach', 'cal_gap', 'calibrated gap (rel.)', '{:.3f}'),
           ('reach', 'other_drift', 'others\' drift (s)', '{:.4f}'),
           ('metrics', 'head_f1', 'head F1', '{:.1f}'),
           ('metrics', 'tail_f1', 'tail F1', '{:.1f}'),
           ('metrics', 'macro_f1', 'all F1', '{:.1f}'))
DETECTION_COLUMNS = COLUMNS[:2] + tuple(
    ('metrics', f'dota/{k}', name, '{:.1f}', 100.0)  # DOTAMetric's mAP is a fraction
    for k, name in (('head_mAP', 'head mAP'), ('middle_mAP', 'middle mAP'),
                    ('tail_mAP', 'tail mAP'), ('mAP', 'all mAP')))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('dirs', nargs='+', help='one table work dir a setting')
    p.add_argument('--row', default='lora_deblora', help='the row to read in each dir')
    p.add_argument('--out', help='also write the table to this markdown file (new file)')
    p.add_argument('--pair', nargs=2, action='append', default=[], metavar=('A', 'B'),
                   help='paired differences A - B (settings, or SETTING:ROW)')
    return p.parse_args(argv)


def load(dir_: str, row: str) -> List[dict]:
    runs = []
    for path in sorted(glob.glob(osp.join(dir_, row, 'seed*', 'result.json'))):
        with open(path) as f:
            runs.append(json.load(f))
    return sorted(runs, key=lambda r: r['seed'])


def cell(runs: List[dict], part: str, key: str, fmt: str, scale: float = 1.0) -> str:
    from mmdeblora.utils.summary import mean_sd
    vals = [r[part][key] * scale for r in runs if r.get(part) and key in r[part]]
    if not vals:
        return 'n/a'
    mean, sd = mean_sd(vals)
    per_seed = ' / '.join(fmt.format(v) for v in vals)
    spread = '' if len(vals) < 2 else ' +- ' + fmt.format(sd)
    return f'{fmt.format(mean)}{spread} ({per_seed})'


def table(dirs: Sequence[str], row: str) -> str:
    found = {d: load(d, row) for d in dirs}
    detection = any('dota/mAP' in (r.get('metrics') or {}) for runs in found.values()
                    for r in runs)
    columns = DETECTION_COLUMNS if detection else COLUMNS
    head = ['setting', 'seeds'] + [c[2] for c in columns]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
    for d in dirs:
        runs = found[d]
        if not runs:
            continue
        seeds = ' '.join(str(r['seed']) for r in runs)
        cells = [cell(runs, *c[:2], *c[3:]) for c in columns]
        lines.append('| ' + ' | '.join([osp.basename(osp.normpath(d)), seeds] + cells) + ' |')
    if len(lines) == 2:
        raise SystemExit(f'no {row}/seed*/result.json under {list(dirs)}')
    return '\n'.join(lines)


def _runs_of(spec: str, dirs: Sequence[str], row: str) -> List[dict]:
    name, _, own_row = spec.partition(':')
    match = [d for d in dirs if osp.basename(osp.normpath(d)) == name]
    if not match:
        raise SystemExit(f'--pair {spec}: no setting {name!r} among '
                         f'{[osp.basename(osp.normpath(d)) for d in dirs]}')
    runs = load(match[0], own_row or row)
    if not runs:
        raise SystemExit(f'--pair {spec}: no {own_row or row}/seed*/result.json in {match[0]}')
    return runs


def pairs_table(pairs: Sequence[Sequence[str]], dirs: Sequence[str], row: str) -> str:
    """Paired differences of the score columns, one line per pair."""
    from mmdeblora.utils.seed_table import paired_interval
    detection = any('dota/mAP' in (r.get('metrics') or {})
                    for a, b in pairs for r in _runs_of(a, dirs, row))
    columns = [c for c in (DETECTION_COLUMNS if detection else COLUMNS) if c[0] == 'metrics']
    lines = ['| comparison | n | ' + ' | '.join(c[2] for c in columns) + ' |',
             '|' + ' --- |' * (len(columns) + 2)]
    for a, b in pairs:
        ra, rb = _runs_of(a, dirs, row), _runs_of(b, dirs, row)
        cells, n = [], 0
        for part, key, _, _, *scale in columns:
            k = scale[0] if scale else 1.0
            got = paired_interval(*({r['seed']: r[part][key] * k for r in runs
                                     if key in (r.get(part) or {})} for runs in (ra, rb)))
            if got is None:
                cells.append('n/a')
                continue
            n = got['n']
            cells.append(f"{got['mean']:+.1f}" if n < 2 else
                         f"{got['mean']:+.1f} [{got['low']:+.1f}, {got['high']:+.1f}]")
        lines.append(f'| {a} − {b} | {n} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    text = table(args.dirs, args.row)
    if args.pair:
        text += '\n\n' + pairs_table(args.pair, args.dirs, args.row)
    print(text)
    if args.out:
        with open(args.out, 'x') as f:  # never written over
            f.write(text + '\n')


if __name__ == '__main__':
    main()
