"""Split raw DOTA-v1.0 into 1024 x 1024 patches with mmrotate's own ``img_split.py``.

    .venv/bin/python tools/data/dota/split_dota.py data/DOTA                  # single scale
    .venv/bin/python tools/data/dota/split_dota.py data/DOTA --ms             # 0.5/1.0/1.5
    .venv/bin/python tools/data/dota/split_dota.py data/DOTA --splits trainval test

DOTA_ROOT holds the raw splits as DOTA ships them: ``train/`` and ``val/`` with ``images/``
and ``labelTxt/`` (the DOTA-v1.0 labels, ``imagesource:``/``gsd:`` headers included), and
``test/images/`` without labels. Each split goes to ``OUT/<split>/{images,annfiles}``
(OUT defaults to ``data/split_ss_dota`` or ``data/split_ms_dota``), the layout the DOTA
configs read; ``trainval`` is train and val split together. Patches are named
``P0001__1024__824___0.png`` (image, size, x, y), which mmrotate's ``DOTAMetric`` needs to
merge detections back to full images.

Why a wrapper: the mmrotate-dev wheel ships ``img_split.py`` but not the
``split_configs/*.json`` its docs use. The settings of those files (size 1024, padding value
104 116 124, image-rate threshold 0.6, IoF threshold 0.7, .png) are the defaults here and
are passed as command-line flags; gap 200 for both scales (mmrotate's multi-scale json used
gap 500: ``--gap 500``). An existing split folder is kept unless ``--force`` is given.
"""
import argparse
import os
import os.path as osp
import shutil
import subprocess
import sys
from typing import Dict, List, Optional

SPLITS = ('train', 'val', 'trainval', 'test')
SOURCES = {'train': ['train'], 'val': ['val'], 'trainval': ['train', 'val'], 'test': ['test']}


def img_split_script() -> str:
    """mmrotate's img_split.py inside the installed package (``.mim/tools``)."""
    import mmrotate
    path = osp.join(osp.dirname(mmrotate.__file__), '.mim', 'tools', 'data', 'dota', 'split',
                    'img_split.py')
    if not osp.isfile(path):
        raise FileNotFoundError(f'mmrotate\'s img_split.py not found at {path}; is '
                                'mmrotate-dev installed in this environment?')
    return path


def split_command(args: argparse.Namespace, split: str, out_dir: str) -> List[str]:
    """The img_split.py command line for one split (labels for all but ``test``)."""
    img_dirs, ann_dirs = [], []
    for src in SOURCES[split]:
        img_dir = osp.join(args.dota_root, src, args.img_subdir)
        if not osp.isdir(img_dir):
            raise FileNotFoundError(f'{split}: image folder {img_dir} does not exist '
                                    f'(DOTA_ROOT={args.dota_root!r}, --img-subdir)')
        img_dirs.append(img_dir)
        if split != 'test':
            ann_dir = osp.join(args.dota_root, src, args.ann_subdir)
            if not osp.isdir(ann_dir):
                raise FileNotFoundError(f'{split}: label folder {ann_dir} does not exist '
                                        '(DOTA-v1.0 labelTxt files; --ann-subdir)')
            ann_dirs.append(ann_dir)
    rates = ['0.5', '1.0', '1.5'] if args.ms else ['1.0']
    cmd = [sys.executable, img_split_script(), '--img-dirs', *img_dirs]
    if ann_dirs:
        cmd += ['--ann-dirs', *ann_dirs]
    cmd += ['--sizes', str(args.size), '--gaps', str(args.gap), '--rates', *rates,
            '--img-rate-thr', '0.6', '--iof-thr', '0.7',
            '--padding-value', '104', '116', '124',
            '--save-dir', out_dir, '--save-ext', '.png', '--nproc', str(args.nproc)]
    return cmd


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Split raw DOTA-v1.0 into patches '
                                     '(mmrotate img_split.py with its DOTA settings)')
    parser.add_argument('dota_root', help='raw DOTA: train/, val/ (images/, labelTxt/), '
                        'test/ (images/)')
    parser.add_argument('--out', help='output root (default data/split_ss_dota or '
                        'data/split_ms_dota with --ms)')
    parser.add_argument('--splits', nargs='+', choices=SPLITS,
                        default=['train', 'val', 'test'],
                        help='which splits to write (default: train val test)')
    parser.add_argument('--ms', action='store_true',
                        help='multi-scale: rates 0.5, 1.0, 1.5 of the window size')
    parser.add_argument('--size', type=int, default=1024, help='patch size')
    parser.add_argument('--gap', type=int, default=200, help='overlap between patches')
    parser.add_argument('--img-subdir', default='images')
    parser.add_argument('--ann-subdir', default='labelTxt')
    parser.add_argument('--nproc', type=int, default=os.cpu_count() or 1)
    parser.add_argument('--force', action='store_true',
                        help='delete and rewrite split folders that already exist')
    parser.add_argument('--dry-run', action='store_true',
                        help='print the img_split.py commands only')
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = osp.join('data', 'split_ms_dota' if args.ms else 'split_ss_dota')
    return args


def main(argv: Optional[List[str]] = None) -> Dict[str, str]:
    args = parse_args(argv)
    plan = {split: osp.join(args.out, split) for split in args.splits}
    commands = {split: split_command(args, split, out) for split, out in plan.items()}
    existing = [out for out in plan.values() if osp.exists(out)]
    if existing and not args.force and not args.dry_run:
        raise SystemExit(f'already split: {", ".join(existing)} (use --force to rewrite, '
                         'or --out for another folder)')
    for split, cmd in commands.items():
        print(f'[split_dota] {split}: {" ".join(cmd)}', flush=True)
        if args.dry_run:
            continue
        if osp.exists(plan[split]):
            shutil.rmtree(plan[split])
        os.makedirs(osp.dirname(osp.abspath(plan[split])), exist_ok=True)
        subprocess.run(cmd, check=True)
        n = len(os.listdir(osp.join(plan[split], 'images')))
        print(f'[split_dota] {split}: {n} patches in {plan[split]}', flush=True)
    return plan


if __name__ == '__main__':
    main()
