"""Probe debLoRA's stage 2 before a long run: which loss part moves the new adapter, and
does the feature loss shrink or grow?

``.venv/bin/python tools/analysis/stage2_probe.py CONFIG STAGE1_CKPT STATE_DIR``

Loads the stage-1 model (``stage1_final.pth``, saved by DebLoRAHook at the switch) and the
de-biasing state that the switch wrote (``<work_dir>/deblora``, or ``tools/debias.py
--out``), enters stage 2 exactly as the hook does, then trains ``--iters`` iterations with
the config's optimizer wrapper (clipping included) at a constant ``--lr`` (default: the
config's), no scheduler and no validation. Per iteration it prints and writes to ``--out``
(csv): the task loss, the weighted feature loss, its two parts divided by the loss scale
(``cal_gap``: mean gap of the batch's calibrated instances, 1 at the start by design;
``other_gap``: the drift of the other instances, 0 at the start), the gradient norm of
each loss on the new adapter's parameters alone (before clipping).
Why: on the toy data the default lambda of an earlier design let stage 2 diverge only
after ~30 iterations (docs/deblora.md); this shows it in minutes, per lambda and lr.
"""
import argparse
import csv
import math
import os
import os.path as osp

import torch


def parse_args() -> argparse.Namespace:
    from mmdeblora.utils.launch import add_common_args
    p = argparse.ArgumentParser(description='short stage-2 run with the loss parts logged')
    p.add_argument('config')
    p.add_argument('checkpoint', help='the stage-1 model (stage1_final.pth)')
    p.add_argument('state', help='folder with deblora_state.json/npz')
    p.add_argument('--iters', type=int, default=100)
    p.add_argument('--loss-weight', type=float, help='lambda (default: the config\'s)')
    p.add_argument('--lr', type=float, help='constant lr (default: the config\'s)')
    p.add_argument('--adamw', type=float, metavar='LR',
                   help='AdamW at this lr instead of the config\'s optimizer (clipping kept)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--out', help='csv file (default <work_dir>/stage2_probe.csv); never '
                   'written over')
    add_common_args(p)
    return p.parse_args()


def grad_norm(loss: torch.Tensor, params) -> float:
    if not loss.requires_grad:
        return 0.0
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return math.sqrt(sum(float((g.detach() ** 2).sum()) for g in grads if g is not None))


def probe_step(model, batch, adapter) -> dict:
    """One stage-2 step's loss parts (``debias_loss_parts``, the model's own stage-2 loss);
    the total to optimise is returned under ``'_total'``."""
    data = model.data_preprocessor(batch, True)
    parts = model.debias_loss_parts(data['inputs'], data['data_samples'])
    task, _ = model.parse_losses(parts.task)
    feat = parts.feature if parts.feature is not None else task * 0
    if parts.augment is not None:  # the classifier's loss on calibrated copies
        task = task + parts.augment
    return dict(cal_gap=parts.gaps.cal_gap, other_gap=parts.gaps.other_gap,
                task_loss=float(task), feat_loss=float(feat),
                calibrated=parts.gaps.num_cal,
                instances=parts.gaps.num_cal + parts.gaps.num_other,
                grad_task=grad_norm(task, adapter), grad_feat=grad_norm(feat, adapter),
                _total=task + feat)


def main() -> None:
    args = parse_args()
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    from mmdeblora.engine.stage2 import load_debias_model, settings_from_config, stage2_parameters
    from mmdeblora.utils.launch import load_config, register_all
    register_all()
    cfg = load_config(args)
    init_default_scope(cfg.get('default_scope', 'mmrotate'))
    overrides = {} if args.loss_weight is None else dict(loss_weight=args.loss_weight)
    _, stage2 = settings_from_config(cfg, **overrides)
    out = args.out or osp.join(cfg.work_dir, 'stage2_probe.csv')
    if osp.exists(out):
        raise FileExistsError(f'{out} exists; give another --out')
    if args.iters < 1:
        raise ValueError(f'--iters must be >= 1, got {args.iters}')

    torch.manual_seed(args.seed)
    model = load_debias_model(cfg, args.checkpoint, state=args.state, stage2=stage2)
    model.train()
    adapter = stage2_parameters(model)
    if args.adamw is not None:
        cfg.optim_wrapper.optimizer = dict(type='AdamW', lr=args.adamw, weight_decay=1e-4)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    if args.lr is not None:
        for group in optim.param_groups:
            group['lr'] = args.lr
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=args.seed)
    it, writer = 0, None
    f = open(out, 'x', newline='')  # row by row: an interrupted probe keeps its rows
    try:
        while it < args.iters:
            for batch in loader:
                row = dict(iter=it, **probe_step(model, batch, adapter))
                optim.update_params(row.pop('_total'))
                if writer is None:
                    writer = csv.DictWriter(f, fieldnames=list(row))
                    writer.writeheader()
                writer.writerow(row)
                f.flush()
                print(' '.join(f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}'
                               for k, v in row.items()), flush=True)
                it = it + 1 if math.isfinite(row['task_loss'] + row['feat_loss']) \
                    else args.iters
                if it >= args.iters:
                    break
    finally:
        f.close()
        if writer is None:  # nothing measured: leave no empty file behind
            os.remove(out)
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
