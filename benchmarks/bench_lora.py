"""LoRA vs full fine-tuning of the same backbone on the same input: step time, peak memory,
trainable parameters; prints the ratios from one run.

    python benchmarks/bench_lora.py [--backbone sd-tiny|sd-small|sd-v15|r18] [--size 256]
        [--batch 2] [--steps 5] [--rank 8] [--device cpu|cuda] [--autocast bf16]
        [--grad-ckpt] [--pretrained PATH]

A training step is forward + backward of ``sum(feature.mean())`` over the backbone's
outputs + an AdamW step over the trainable parameters. Full fine-tuning trains every
backbone parameter except the frozen VAE (SD) ; LoRA trains only the adapters (peft, on
the UNet attention projections for SD, on conv1/conv2 for ResNet-18).

Each variant runs in its own child process so their memory does not mix. Peak memory:
the extra memory training needs on top of the built model (gradients, AdamW states,
activations), from before the first (warm-up) step to the end: on CUDA
``torch.cuda.max_memory_allocated`` minus the allocated memory before; on the CPU the
process's peak resident set size (``ru_maxrss``) minus its resident size before
(tracemalloc cannot see torch's CPU allocations).
"""
import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time

UNET_SMALL = dict(block_out_channels=(64, 128, 256, 256), layers_per_block=2,
                  cross_attention_dim=128, attention_head_dim=8)


def backbone_cfg(args: argparse.Namespace) -> dict:
    from mmengine.config import Config
    base = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', '_base_',
                    'models')
    if args.backbone == 'r18':
        return dict(type='mmdet.ResNet', depth=18, frozen_stages=-1, norm_eval=False,
                    init_cfg=None)
    if args.backbone == 'sd-v15':
        cfg = Config.fromfile(osp.join(base, 'sd_v15_unet.py')).sd_v15_unet.to_dict()
        cfg.update(pretrained=args.pretrained or cfg['pretrained'], text_mode='zeros')
    else:
        cfg = Config.fromfile(osp.join(base, 'sd_unet_tiny.py')).sd_unet_tiny.to_dict()
        if args.backbone == 'sd-small':
            cfg['unet_cfg'] = dict(cfg['unet_cfg'], **UNET_SMALL)
    cfg.update(gradient_checkpointing=args.grad_ckpt, autocast=args.autocast)
    return cfg


def rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def run_variant(args: argparse.Namespace) -> dict:
    """Build, train ``args.steps`` timed steps after ``args.warmup`` ones, report."""
    import torch
    from mmengine.registry import init_default_scope
    from mmrotate.registry import MODELS

    from mmdeblora.utils import register_all_modules
    register_all_modules()
    init_default_scope('mmrotate')
    torch.manual_seed(0)
    cfg = backbone_cfg(args)
    if args.variant == 'lora':
        targets = ['conv1', 'conv2'] if args.backbone == 'r18' else None
        cfg = dict(type='LoRABackbone', backbone=cfg, rank=args.rank, alpha=2 * args.rank,
                   target_modules=targets)
    model = MODELS.build(cfg)
    if hasattr(model, 'init_weights') and args.variant == 'full':
        model.init_weights()
    model.to(args.device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4)
    x = torch.rand(args.batch, 3, args.size, args.size, device=args.device,
                   generator=torch.Generator(args.device).manual_seed(0)) * 2 - 1
    cuda = args.device.startswith('cuda')

    def step():
        opt.zero_grad(set_to_none=True)
        loss = sum(f.float().mean() for f in model(x))
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()

    # memory is counted from the built model on: gradients, optimizer states and
    # activations all belong to training (the warm-up steps allocate the AdamW states)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated()
    base_rss = rss_bytes()
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        peak_extra = peak - base_mem
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        peak_extra = peak - base_rss
    return dict(variant=args.variant, step_s=statistics.median(times), peak_bytes=peak,
                peak_extra_bytes=peak_extra, trainable=trainable, total=total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--backbone', default='sd-tiny',
                        choices=['sd-tiny', 'sd-small', 'sd-v15', 'r18'])
    parser.add_argument('--pretrained', help='local SD v1.5 folder for --backbone sd-v15')
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--rank', type=int, default=8)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--autocast', choices=['bf16', 'fp16'], default=None)
    parser.add_argument('--grad-ckpt', action='store_true')
    parser.add_argument('--variant', choices=['lora', 'full'], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:  # child process
        print('RESULT ' + json.dumps(run_variant(args)), flush=True)
        return

    results = {}
    for variant in ('full', 'lora'):
        cmd = [sys.executable, osp.abspath(__file__), *sys.argv[1:], '--variant', variant]
        print(f'running {variant} fine-tuning ...', flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('RESULT ')]
        if proc.returncode != 0 or not lines:
            sys.exit(f'{variant} run failed:\n{proc.stderr[-3000:]}')
        results[variant] = json.loads(lines[-1][len('RESULT '):])

    full, lora = results['full'], results['lora']
    mib = 2 ** 20
    mem_kind = 'CUDA max_memory_allocated' if args.device.startswith('cuda') \
        else 'CPU peak RSS (ru_maxrss) above the RSS of the built model'
    print(f'\nbackbone={args.backbone} input={args.batch}x3x{args.size}x{args.size} '
          f'device={args.device} autocast={args.autocast} grad_ckpt={args.grad_ckpt} '
          f'rank={args.rank} steps={args.steps} (median)')
    print(f'{"":<8}{"step s":>10}{"peak MiB":>12}{"trainable":>14}{"total":>14}')
    for v in (full, lora):
        print(f'{v["variant"]:<8}{v["step_s"]:>10.3f}{v["peak_extra_bytes"] / mib:>12.1f}'
              f'{v["trainable"]:>14,}{v["total"]:>14,}')
    print(f'memory measured as: {mem_kind}')
    print(f'LoRA/full step time ratio:          {lora["step_s"] / full["step_s"]:.3f}')
    print(f'LoRA/full peak memory ratio:        '
          f'{lora["peak_extra_bytes"] / max(full["peak_extra_bytes"], 1):.3f}')
    print(f'LoRA/full trainable-parameter ratio: {lora["trainable"] / full["trainable"]:.5f}')


if __name__ == '__main__':
    main()
