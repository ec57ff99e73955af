"""Evaluate a checkpoint: ``python tools/test.py CONFIG CHECKPOINT [--out R.pkl]``.

Runs on ``CheckedRunner`` (unless the config names a ``runner_type``): a checkpoint that
does not fit the config's model stops the run instead of printing a normal-looking mAP;
``--allow-mismatch`` turns that into a warning. Checkpoints load with ``weights_only=True``
whatever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says (``mmdeblora.utils.checkpoint``).
"""
import argparse

from mmdeblora.engine import use_checked_runner
from mmdeblora.utils import register_all_modules
from mmdeblora.utils.launch import add_common_args, build_runner, close_distributed, load_config
from mmdeblora.utils.preflight import check_inputs


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump predictions to a .pkl file')
    parser.add_argument('--show', action='store_true', help='show predictions')
    parser.add_argument('--show-dir', help='save painted predictions under the work dir')
    parser.add_argument('--wait-time', type=float, default=2, help='show interval (s)')
    parser.add_argument(
        '--allow-mismatch', action='store_true',
        help='evaluate even when the checkpoint does not fit the model (missing, unexpected or '
        'differently shaped tensors): warn instead of failing (config key '
        'checkpoint_mismatch=\'warn\')')
    add_common_args(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    register_all_modules()
    cfg = load_config(args)
    check_inputs(cfg, 'test')
    cfg.load_from = args.checkpoint
    use_checked_runner(cfg, args.allow_mismatch)

    if args.show or args.show_dir:
        vis = cfg.default_hooks.get('visualization')
        if vis is None:
            raise RuntimeError('--show / --show-dir need default_hooks.visualization')
        vis['draw'] = True
        if args.show:
            vis['show'], vis['wait_time'] = True, args.wait_time
        if args.show_dir:
            vis['test_out_dir'] = args.show_dir

    runner = build_runner(cfg)
    if args.out is not None:
        from mmengine.evaluator import DumpResults
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out must be a .pkl file, got {args.out!r}')
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    runner.test()
    close_distributed()


if __name__ == '__main__':
    main()
