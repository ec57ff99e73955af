"""Cost of a debLoRA stage-2 training step against a stage-1 step of the same model and
batch; prints the ratios from one run.

    python benchmarks/bench_stage2.py [--models toy,sd,lora,clora] [--steps 10]
        [--warmup 2] [--threads 1] [--size 256] [--det-batch 2] [--cls-batch 64]
        [--replay 0]

Models: ``toy`` = configs/deblora/oriented_rcnn_r18_deblora_toy.py (Oriented R-CNN, LoRA
ResNet-18), ``sd`` = configs/deblora/oriented_rcnn_sd_tiny_deblora_toy.py (the tiny
random-weight SD UNet), ``lora`` / ``clora`` = configs/classification/bias_lora_deblora.py /
bias_clora_deblora.py; every model with random weights (``model.backbone.pretrained=None``).

A step is ``model.loss`` + backward + an SGD step over the parameters that require grad,
on one fixed batch (detectors: random images and rotated boxes; classifier: random 32 px
crops), called directly (no data preprocessor, no runner). The stage-1 model is built with
non-zero stage-1 adapters (as after stage 1); the stage-2 model is the same build after
``enter_debias_stage`` (the config's DebLoRAHook settings and a synthetic DebiasState whose
tail classes are calibrated), so its step runs the target pass (stage-1 adapters, no grad)
and the upstream loss with every adapter. SGD runs with lr 0: the update is computed and
applied at full cost but the weights stay put, so every step times the same two models.
Every round runs one step of each kind, (a) stage 1, (b) below, (c) stage 2, of every model
(``--warmup`` rounds untimed, then ``--steps`` timed), so that a change in the machine's
load hits every ratio alike; each time is the median over the timed rounds.

Where the stage-2 time goes: (b) is a stage-1 step preceded by one extra target pass on the
stage-1 model, the call ``debias_targets`` makes (``instance_features`` with the stage-1
adapters only, no grad, the backbone and neck in eval mode as in stage 2; the mode switches
are not timed). b / a is the cost the goal allows (the target pass), c / b everything else
stage 2 adds (the second adapter in the main pass, the targets and the feature loss, the
switches). In ``augment`` mode there is no target pass and (b) is a plain stage-1 step.

With ``--replay R`` a fourth step, (d), is stage 2 with R tail-replay images appended to the
batch (``DebLoRAHook.replay``: their target pass and their pass through the stage-2 model,
for the feature loss only); d / c is what the replay costs.

Goals (issue 19): stage 2 / stage 1 at most 1.3x (the target adds one no-grad backbone +
neck pass), read as "nothing but the target pass costs": stage 2 / (stage 1 + target pass)
at most 1.15x; cLoRA / LoRA at most routes + 0.3 (each route is one LoRA pass).
"""
import argparse
import copy
import os.path as osp
import statistics
import sys
import time
from typing import Dict, Sequence

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = dict(
    toy='configs/deblora/oriented_rcnn_r18_deblora_toy.py',
    sd='configs/deblora/oriented_rcnn_sd_tiny_deblora_toy.py',
    lora='configs/classification/bias_lora_deblora.py',
    clora='configs/classification/bias_clora_deblora.py')
DETECTORS = ('toy', 'sd')
STAGE2_GOAL = 1.3
REST_GOAL = 1.15  # stage 2 / (stage 1 + target pass)
ROUTES_EXTRA = 0.3


def build(key: str):
    """The config's model (random init, non-zero stage-1 adapters) and its stage-2 settings."""
    from mmengine.config import Config

    from mmdeblora.engine.stage2 import build_model, settings_from_config
    cfg = Config.fromfile(osp.join(REPO, CONFIGS[key]))
    cfg.model.backbone.pretrained = None  # random weights: the time does not depend on them
    torch.manual_seed(0)
    model = build_model(cfg)
    model.init_weights()
    _, stage2 = settings_from_config(cfg)
    with torch.no_grad():  # stage-1 adapters as after training: B != 0
        for name, p in model.backbone.named_parameters():
            if '.lora_B.' in name:
                p.normal_(0, 0.05)
    return model.train(), stage2


def detector_batch(num: int, size: int, num_classes: int):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    from mmrotate.structures import RotatedBoxes
    g = torch.Generator().manual_seed(0)
    inputs = torch.rand(num, 3, size, size, generator=g)
    samples = []
    for i in range(num):
        s = DetDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                        batch_input_shape=(size, size), scale_factor=(1, 1),
                                        ori_shape=(size, size)))
        n = 6
        xy = torch.rand(n, 2, generator=g) * (size * 0.7) + size * 0.15
        wh = torch.rand(n, 2, generator=g) * (size * 0.1) + size * 0.05
        ang = torch.rand(n, 1, generator=g) - 0.5
        labels = (torch.arange(n) * 3 + i) % num_classes  # head to tail classes
        s.gt_instances = InstanceData(bboxes=RotatedBoxes(torch.cat([xy, wh, ang], 1)),
                                      labels=labels)
        samples.append(s)
    return inputs, samples


def classifier_batch(num: int, num_classes: int):
    from mmpretrain.structures import DataSample
    x = torch.rand(num, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return x, [DataSample().set_gt_label(i % num_classes) for i in range(num)]


def synthetic_state(model, inputs, samples):
    """A DebiasState of the model's feature size; the last third of the classes calibrated."""
    from mmdeblora.deblora import DebiasState
    was = model.training
    with torch.no_grad():
        z, _ = model.eval().instance_features(inputs, copy.deepcopy(samples))
    model.train(was)
    num = model.debias_num_classes
    g = torch.Generator().manual_seed(1)
    centers = torch.nn.functional.normalize(torch.randn(num, z.shape[1], generator=g), dim=1)
    alphas = torch.zeros(num)
    alphas[num - num // 3:] = 0.5
    return DebiasState(centers=centers[:4] * 0.6, counts=torch.ones(4, num, dtype=torch.long),
                       class_centers=centers * 0.6, alphas=alphas, calibrated=alphas > 0,
                       class_names=[str(i) for i in range(num)])


def target_pass(model, plan, inputs, samples) -> float:
    """Time (s) of stage 2's target pass (``debias_targets``' ``instance_features`` call:
    stage-1 adapters only, no grad, the stage-1 path in eval mode) run on the stage-1 model;
    the mode switches around it are not timed."""
    for module in model._stage1_path():
        module.eval()
    try:
        start = time.perf_counter()
        with torch.no_grad():
            model.instance_features(inputs, samples, plan.stage1_adapters, plan.pool,
                                    plan.normalize)
        return time.perf_counter() - start
    finally:
        model.train()


def timed_step(model, optimizer, inputs, samples, plan=None) -> float:
    """Time (s) of one training step; with a stage-2 ``plan``, plus one target pass first."""
    extra = 0.0
    if plan is not None and plan.adapter is not None:
        extra = target_pass(model, plan, inputs, copy.deepcopy(samples))
    samples = copy.deepcopy(samples)  # (a loss may write to them); not timed
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss, _ = model.parse_losses(model.loss(inputs, samples))
    loss.backward()
    optimizer.step()
    return extra + time.perf_counter() - start


def prepare(key: str, args: argparse.Namespace) -> dict:
    """The steps of one config, (a) stage 1, (b) stage 1 + target pass, (c) stage 2: their
    models, optimizers and the batch."""
    model, stage2 = build(key)
    num = model.debias_num_classes
    inputs, samples = (detector_batch(args.det_batch, args.size, num) if key in DETECTORS
                       else classifier_batch(args.cls_batch, num))
    state = synthetic_state(model, inputs, samples)
    stage2_model, _ = build(key)  # the same weights (a deepcopy would share SD's taps)
    stage2_model.enter_debias_stage(state, stage2)
    stage2_model.train()
    models = (model, stage2_model)
    opts = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.0,
                            momentum=0.9, weight_decay=1e-4) for m in models]
    steps = [(m, o, inputs, samples) for m, o in zip(models, opts)]
    steps.insert(1, steps[0] + (stage2_model.debias_plan, ))
    if args.replay:  # (d): the same stage-2 step with R marked tail-replay images appended
        from mmdeblora.engine.replay import REPLAY_KEY
        r_inputs, r_samples = (detector_batch(args.replay, args.size, num)
                               if key in DETECTORS else classifier_batch(args.replay, num))
        for sample in r_samples:
            sample.set_metainfo({REPLAY_KEY: True})
        steps.append((stage2_model, opts[1], torch.cat([inputs, r_inputs]),
                      list(samples) + r_samples))
    return dict(steps=steps,
                routes=len(getattr(model.backbone, 'routes', [None])),
                batch=tuple(inputs.shape))


def measure(keys: Sequence[str], args: argparse.Namespace) -> Dict[str, dict]:
    """Median step times (s) of every model: stage 1, stage 1 + target pass, stage 2; one
    step of each per round, so that the machine's load changes hit every ratio alike."""
    runs = {key: prepare(key, args) for key in keys}
    times = {key: tuple([] for _ in run['steps']) for key, run in runs.items()}
    for i in range(args.warmup + args.steps):
        for key, run in runs.items():
            for stage, step in enumerate(run['steps']):
                t = timed_step(*step)
                if i >= args.warmup:
                    times[key][stage].append(t)
    return {key: dict(stage1=statistics.median(times[key][0]),
                      stage1_target=statistics.median(times[key][1]),
                      stage2=statistics.median(times[key][2]),
                      replay=statistics.median(times[key][3]) if args.replay else None,
                      routes=run['routes'], batch=run['batch'])
            for key, run in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', default='toy,sd,lora,clora',
                        help=f'comma-separated, of {",".join(CONFIGS)}')
    parser.add_argument('--steps', type=int, default=10, help='timed steps per stage (median)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps per stage first')
    parser.add_argument('--threads', type=int, default=1, help='torch.set_num_threads')
    parser.add_argument('--size', type=int, default=256, help='detector image size')
    parser.add_argument('--det-batch', type=int, default=2)
    parser.add_argument('--cls-batch', type=int, default=64)
    parser.add_argument('--replay', type=int, default=0,
                        help='also time stage 2 with this many tail-replay images (d)')
    args = parser.parse_args()
    keys = [k for k in args.models.split(',') if k]
    unknown = [k for k in keys if k not in CONFIGS]
    if unknown or not keys:
        sys.exit(f'--models {args.models!r}: unknown {unknown}; choose from {list(CONFIGS)}')
    if args.steps < 1 or args.warmup < 0 or args.replay < 0:
        sys.exit('--steps must be >= 1, --warmup and --replay >= 0')
    torch.set_num_threads(args.threads)

    from mmengine.logging import MMLogger

    from mmdeblora.utils import register_all_modules
    register_all_modules()
    MMLogger.get_instance('bench_stage2', log_level='WARNING')  # no init_weights report
    print(f'threads={torch.get_num_threads()} warmup={args.warmup} steps={args.steps} '
          '(median; each round steps every model and stage once)', flush=True)
    results = measure(keys, args)
    for key, r in results.items():
        ratio = r['stage2'] / r['stage1']
        print(f'{key:<6} input {"x".join(map(str, r["batch"]))}: stage 1 {r["stage1"]:.4f} s, '
              f'stage 2 {r["stage2"]:.4f} s, stage-2/stage-1 {ratio:.3f}x '
              f'(goal <= {STAGE2_GOAL}x) {"ok" if ratio <= STAGE2_GOAL else "OVER"}',
              flush=True)
    for key, r in results.items():  # where the stage-2 time goes
        a, b, c = r['stage1'], r['stage1_target'], r['stage2']
        print(f'{key:<6} (a) stage 1 {a:.4f} s, (b) stage 1 + target pass {b:.4f} s, '
              f'(c) stage 2 {c:.4f} s: b/a {b / a:.3f}x (allowed), c/b {c / b:.3f}x '
              f'(the rest, goal <= {REST_GOAL}x) {"ok" if c / b <= REST_GOAL else "OVER"}',
              flush=True)
    for key, r in results.items():
        if r['replay'] is not None:
            print(f'{key:<6} (d) stage 2 + {args.replay} replay images {r["replay"]:.4f} s: '
                  f'd/c {r["replay"] / r["stage2"]:.3f}x, d/a {r["replay"] / r["stage1"]:.3f}x',
                  flush=True)
    if 'lora' in results and 'clora' in results:
        lora, clora = results['lora'], results['clora']
        goal = clora['routes'] + ROUTES_EXTRA
        for stage in ('stage1', 'stage2'):
            ratio = clora[stage] / lora[stage]
            print(f'clora/lora {stage[:-1]} {stage[-1]}: {ratio:.3f}x (goal <= {goal:.1f}x: '
                  f'{clora["routes"]} routes + {ROUTES_EXTRA}) '
                  f'{"ok" if ratio <= goal else "OVER"}', flush=True)


if __name__ == '__main__':
    main()
