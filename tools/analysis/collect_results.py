"""Print a markdown table of the last validation metrics of several work dirs.

The docs' result tables are made with this, from the ``vis_data/scalars.json`` that
mmengine writes during ``tools/train.py`` (or ``tools/test.py``) runs::

    python tools/analysis/collect_results.py LoRA=work_dirs/lora_toy \
        debLoRA=work_dirs/deblora_toy --per-class
"""
import argparse
import glob
import json
import os.path as osp
import sys
from typing import Dict, List, Optional

GROUP_KEYS = ('head_mAP', 'middle_mAP', 'tail_mAP', 'mAP')


def last_val_metrics(work_dir: str, prefix: str = 'dota') -> Dict[str, float]:
    """The newest record holding ``<prefix>/mAP`` over all runs in ``work_dir``."""
    # mmengine's run folders are named by timestamp (YYYYmmdd_HHMMSS); other json files
    # in the work dir (e.g. deblora/deblora_state.json) are not logs
    run = osp.join(work_dir, '[0-9]*_[0-9]*')
    files = glob.glob(osp.join(run, 'vis_data', 'scalars.json'))
    files += glob.glob(osp.join(run, '[0-9]*_[0-9]*.json'))
    best: Optional[Dict[str, float]] = None
    for path in sorted(files, key=osp.getmtime):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line.startswith('{'):
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if f'{prefix}/mAP' in rec:
                    best = rec
    if best is None:
        raise FileNotFoundError(
            f'no record with {prefix}/mAP under {work_dir}/*/vis_data/scalars.json: '
            'did the run reach its validation?')
    return {k[len(prefix) + 1:]: v for k, v in best.items() if k.startswith(prefix + '/')}


def table(named: Dict[str, Dict[str, float]], per_class: bool) -> str:
    cols: List[str] = list(GROUP_KEYS)
    if per_class:
        first = next(iter(named.values()))
        cols += sorted(k for k in first if k.startswith('AP50/'))
    head = '| run | ' + ' | '.join(c.replace('AP50/', '') for c in cols) + ' |'
    lines = [head, '|' + ' --- |' * (len(cols) + 1)]
    for name, m in named.items():
        cells = [f'{100 * m[c]:.1f}' if c in m else '-' for c in cols]
        lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('runs', nargs='+', help='NAME=WORK_DIR (or WORK_DIR)')
    parser.add_argument('--prefix', default='dota', help='metric prefix')
    parser.add_argument('--per-class', action='store_true', help='add AP50 per class')
    args = parser.parse_args(argv)
    named = {}
    for run in args.runs:
        name, _, path = run.rpartition('=')
        named[name or osp.basename(osp.normpath(path))] = last_val_metrics(path, args.prefix)
    print(table(named, args.per_class))


if __name__ == '__main__':
    sys.exit(main())
