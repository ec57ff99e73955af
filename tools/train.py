"""Train a detector: ``python tools/train.py CONFIG [--work-dir D] [--resume [CKPT] |
--resume-or-start] [--amp]``.

Runs on ``CheckedRunner`` (unless the config names a ``runner_type``): ``load_from`` /
``--resume`` checkpoints must fit the model (``--allow-mismatch`` warns instead for
``load_from``), and ``DivergenceHook`` stops the run at a non-finite loss before a bad
checkpoint is written (config key ``divergence_guard``).
"""
import argparse
import logging

from mmengine.logging import print_log

from mmdeblora.engine import use_checked_runner
from mmdeblora.utils import register_all_modules
from mmdeblora.utils.launch import (add_common_args, apply_resume, build_runner, close_distributed,
                                    load_config)
from mmdeblora.utils.preflight import check_inputs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by the actual batch size')
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or from the latest one in the work '
        'dir when no path is given (an error when the work dir has none)')
    resume.add_argument(
        '--resume-or-start', action='store_true',
        help='resume from the latest checkpoint in the work dir if there is one, else '
        'start a new run (for scripts that rerun the same command)')
    parser.add_argument(
        '--allow-mismatch', action='store_true',
        help='load_from: warn instead of failing when the checkpoint does not fit the '
        'model, e.g. to fine-tune from a detector with other classes (config key '
        'checkpoint_mismatch=\'warn\'); --resume always needs the same model')
    add_common_args(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    register_all_modules()
    cfg = load_config(args)
    check_inputs(cfg, 'train')

    if args.amp:
        if cfg.optim_wrapper.type == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in your config.',
                      logger='current', level=logging.WARNING)
        else:
            assert cfg.optim_wrapper.type == 'OptimWrapper', \
                f'--amp needs OptimWrapper, got {cfg.optim_wrapper.type}'
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        if not cfg.get('auto_scale_lr', {}).get('base_batch_size'):
            raise RuntimeError('--auto-scale-lr needs auto_scale_lr.base_batch_size '
                               'in the config')
        cfg.auto_scale_lr.enable = True

    apply_resume(cfg, args.resume, args.resume_or_start)
    use_checked_runner(cfg, args.allow_mismatch)
    runner = build_runner(cfg)
    runner.train()
    close_distributed()


if __name__ == '__main__':
    main()
