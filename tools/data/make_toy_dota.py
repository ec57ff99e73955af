"""Generate the long-tailed toy DOTA: ``python tools/data/make_toy_dota.py [OUT]``."""
import argparse
import os.path as osp

from mmdeblora.datasets.toy_dota import make_toy_dota


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('out', nargs='?', default='data/toy_dota', help='output folder')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--img-size', type=int, default=256)
    p.add_argument('--max-count', type=int, default=1000,
                   help='training instances of the most frequent class')
    p.add_argument('--imbalance-ratio', type=float, default=100.0,
                   help='most / least frequent class')
    p.add_argument('--profile', choices=['exp', 'linear'], default='exp')
    p.add_argument('--objects-per-image', type=float, default=10.0)
    p.add_argument('--test-fraction', type=float, default=0.25)
    p.add_argument('--test-min-per-class', type=int, default=15)
    p.add_argument('--force', action='store_true', help='overwrite an existing folder')
    a = p.parse_args()
    if osp.exists(osp.join(a.out, 'summary.json')) and not a.force:
        print(f'{a.out} already holds a generated data set (summary.json); '
              'use --force to regenerate')
        return
    make_toy_dota(a.out, seed=a.seed, img_size=a.img_size, max_count=a.max_count,
                  imbalance_ratio=a.imbalance_ratio, profile=a.profile,
                  objects_per_image=a.objects_per_image, test_fraction=a.test_fraction,
                  test_min_per_class=a.test_min_per_class)


if __name__ == '__main__':
    main()
