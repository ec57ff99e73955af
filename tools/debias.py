"""Offline de-biasing on a checkpoint: ``python tools/debias.py CONFIG CHECKPOINT``.

Runs the method's steps 1-3 (features, K-means, de-biased centers, alphas) with the same
public step as DebLoRAHook at the switch (``mmdeblora.engine.debias_model``; the settings
come from the config's DebLoRAHook, defaults when it has none), on the stage-1 model
(``stage1_adapters``) of the checkpoint, and writes a report to ``--out`` (default
``<work_dir>/debias_report``): ``counts.csv`` (cluster x class), ``centers.npy`` (mu_k),
``class_centers.npy`` (h_c), ``alphas.csv``, ``deblora_state.json/npz``, ``stats.json``
(head-tail / tail-tail / intra-tail before and after calibration) and ``embedding.png``
(t-SNE or PCA of the instance features by class, before and after calibration, with the
K-means centers and the de-biased centers).
"""
import argparse
import os.path as osp

from mmengine.logging import print_log


def parse_args() -> argparse.Namespace:
    from mmdeblora.utils.launch import add_common_args
    parser = argparse.ArgumentParser(description='debLoRA steps 1-3 on a checkpoint')
    parser.add_argument('config')
    parser.add_argument('checkpoint', help='a checkpoint of the config (stage 1 or 2)')
    parser.add_argument('--out', help='report folder (default <work_dir>/debias_report)')
    parser.add_argument('--max-points', type=int, default=2000,
                        help='instances shown in the embedding plot (seeded sample)')
    parser.add_argument('--embedding', choices=['tsne', 'pca'], default='tsne',
                        help='2-D embedding of the plot')
    add_common_args(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    from mmengine.registry import init_default_scope

    from mmdeblora.engine import build_extraction_loader, build_pool_loader, debias_model
    from mmdeblora.engine.debias_report import log_result, save_result
    from mmdeblora.engine.stage2 import load_debias_model, settings_from_config
    from mmdeblora.utils import register_all_modules
    from mmdeblora.utils.launch import load_config
    register_all_modules()
    cfg = load_config(args)
    init_default_scope(cfg.get('default_scope', 'mmrotate'))
    settings, stage2 = settings_from_config(cfg)
    model = load_debias_model(cfg, args.checkpoint, stage2=stage2)
    result = debias_model(model, build_extraction_loader(cfg, settings), settings,
                          adapters=stage2.stage1_adapters, log_fn=print_log,
                          pool_loader=build_pool_loader(cfg, settings))
    log_result(result, print_log)
    out = args.out or osp.join(cfg.work_dir, 'debias_report')
    save_result(result, out, args.embedding, args.max_points)
    print_log(f'debias report written to {out}')
    print(out)


if __name__ == '__main__':
    main()
