"""SD v1.5 Oriented R-CNN on DOTA: what a GPU user needs to know, printed as ratios.

On a GPU machine with SD v1.5 and split DOTA (one command):

    .venv/bin/python benchmarks/bench_sd_gpu.py --pretrained checkpoints/stable-diffusion-v1-5 \\
        --data-root data/split_ss_dota/

Reduced, on this CPU machine (how it is tested; random weights, the DOTA sample patches):

    .venv/bin/python benchmarks/bench_sd_gpu.py --device cpu --size 256 --batch 1 --steps 1 \\
        --random-weights work_dirs/rehearsal_weights/sd-v1-5-random \\
        --data-root ../shared/data/dota_samples/ --ann-dir annfiles/ --img-dir images/ \\
        --calibrate-groups head

What runs, each variant in its own process so that its peak memory is its own: one
training step (``model.train_step`` with the config's optimizer, as the runner does) of
``configs/baselines/oriented_rcnn_sd_lora_dota.py`` (LoRA) and ``..._sd_full_dota.py`` (full
fine-tuning), with SDBackbone's gradient checkpointing on and off, at ``--size`` px (the
configs' Resize scale), batch ``--batch``, SDBackbone autocast ``--autocast`` (bf16 on GPUs:
the VAE and UNet; the FPN and heads stay float32). Then ``configs/deblora/
oriented_rcnn_sd_dota.py``: its de-biasing step (``mmdeblora.engine.debias_model``: GT
instance features of the training images, K-means, calibration) and a stage-2 training step
(student and stage-1 passes, feature loss). Last, K-means at the config's DOTA scale
(15 classes x ``max_per_class`` instances, 256-d, K = ``num_clusters``): ours on
``--device`` against sklearn on the CPU.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over build + steps (what the GPU
must hold, weights included; the CUDA context and allocator cache come on top); on the CPU
the process's peak resident set size, which is not GPU memory (see docs/rehearsal.md).
"""
import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = dict(
    lora='configs/baselines/oriented_rcnn_sd_lora_dota.py',
    full='configs/baselines/oriented_rcnn_sd_full_dota.py',
    deblora='configs/deblora/oriented_rcnn_sd_dota.py')
DOTA_CLASSES = 15


# ---------------------------------------------------------------------- config
def sd_backbone_cfg(cfg) -> dict:
    """The SDBackbone dict of a config, wrapped by LoRABackbone or not."""
    bb = cfg.model.backbone
    return bb.backbone if bb.type == 'LoRABackbone' else bb


def unet_channels(folder: str) -> List[int]:
    with open(osp.join(folder, 'unet', 'config.json')) as f:
        return list(json.load(f)['block_out_channels'])


def prepare_cfg(args: argparse.Namespace, name: str, grad_ckpt: bool):
    """The shipped config, changed only in paths, size, batch and the switches measured."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, CONFIGS[name]))
    sd = sd_backbone_cfg(cfg)
    sd.pretrained = args.weights
    sd.gradient_checkpointing = grad_ckpt
    sd.autocast = None if args.autocast == 'none' else args.autocast
    chans = unet_channels(args.weights)  # SD v1.5: the config's 320/320/640/1280/1280
    cfg.model.neck.in_channels = [chans[0]] + chans
    loader = cfg.train_dataloader
    loader.batch_size, loader.num_workers, loader.persistent_workers = args.batch, 0, False
    loader.dataset.data_root = args.data_root
    loader.dataset.ann_file, loader.dataset.data_prefix.img_path = args.ann_dir, args.img_dir
    # the val pipeline too: the de-biasing step extracts features through it
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        for t in cfg[name].dataset.pipeline:
            if t.type.endswith('Resize'):
                t.scale = (args.size, args.size)
            if t.type.endswith('RandomFlip'):
                t.prob = 0.0  # the same input at every step
    return cfg


def write_synthetic_dota(folder: str, n: int, size: int) -> None:
    """``n`` random images with a few random boxes, as split DOTA (when no data is given)."""
    import numpy as np
    from PIL import Image
    rng = np.random.RandomState(0)
    os.makedirs(osp.join(folder, 'images'))
    os.makedirs(osp.join(folder, 'annfiles'))
    for i in range(n):
        Image.fromarray(rng.randint(0, 255, (size, size, 3), dtype=np.uint8)).save(
            osp.join(folder, 'images', f'P{i:04d}__1024__0___0.png'))
        lines = []
        for j in range(8):
            cx, cy = rng.uniform(0.2, 0.8, 2) * size
            w, h = rng.uniform(0.05, 0.15, 2) * size
            pts = [cx - w, cy - h, cx + w, cy - h, cx + w, cy + h, cx - w, cy + h]
            lines.append(' '.join(f'{p:.1f}' for p in pts) + f' {("plane", "ship")[j % 2]} 0')
        with open(osp.join(folder, 'annfiles', f'P{i:04d}__1024__0___0.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')


# ---------------------------------------------------------------------- child process
def _sync(device: str) -> None:
    import torch
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _peak(device: str) -> int:
    import torch
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _timed_steps(model, loader, optim, args) -> List[float]:
    batches = iter(loader)
    times = []
    for i in range(args.warmup + args.steps):
        try:
            data = next(batches)
        except StopIteration:
            batches = iter(loader)
            data = next(batches)
        start = time.perf_counter()
        model.train_step(data, optim)
        _sync(args.device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    return times


def run_variant(args: argparse.Namespace) -> dict:
    import torch
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmrotate.registry import MODELS

    from mmdeblora.utils import register_all_modules
    register_all_modules()
    init_default_scope('mmrotate')
    name, ckpt = args.variant.split(':')
    cfg = prepare_cfg(args, name, ckpt == 'ckpt')
    if args.device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.to(args.device).train()
    build_mem = _peak(args.device)
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=0)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out = dict(variant=args.variant, trainable=trainable, build_bytes=build_mem)
    times = _timed_steps(model, loader, optim, args)
    out.update(step_s=statistics.median(times), peak_bytes=_peak(args.device))
    if name != 'deblora':
        return out

    from mmdeblora.engine import build_extraction_loader, debias_model
    from mmdeblora.engine.stage2 import split_options
    hook = dict(next(h for h in cfg.custom_hooks if h['type'] == 'DebLoRAHook'))
    if args.calibrate_groups:
        hook['calibrate_groups'] = args.calibrate_groups
    settings, stage2 = split_options(hook)
    train_images = len(loader.dataset)
    if args.debias_images and args.debias_images < train_images:
        cfg.train_dataloader.dataset.indices = args.debias_images  # a sample, timed
    extract = build_extraction_loader(cfg, settings)
    start = time.perf_counter()
    result = debias_model(model, extract, settings, progress=False)
    _sync(args.device)
    out.update(debias_s=time.perf_counter() - start, debias_images=len(extract.dataset),
               train_images=train_images)
    model.enter_debias_stage(result.state, stage2)
    optim = build_optim_wrapper(model, cfg.optim_wrapper)  # the trainable set changed
    times = _timed_steps(model, loader, optim, args)
    out.update(stage2_step_s=statistics.median(times), peak_bytes=_peak(args.device))
    return out


def run_kmeans(args: argparse.Namespace) -> dict:
    """Ours on --device vs sklearn on the CPU, K and N from the debLoRA config."""
    import numpy as np
    import torch
    from mmengine.config import Config
    from sklearn.cluster import KMeans

    from mmdeblora.deblora import kmeans
    hook = next(h for h in Config.fromfile(osp.join(REPO, CONFIGS['deblora'])).custom_hooks
                if h['type'] == 'DebLoRAHook')
    k, km = hook['num_clusters'], dict(hook.get('kmeans', {}))
    n = args.kmeans_n or DOTA_CLASSES * hook['max_per_class']
    rng = np.random.RandomState(0)
    mu = rng.randn(k, args.kmeans_dim).astype(np.float32) * 2
    x = mu[rng.randint(k, size=n)] + rng.randn(n, args.kmeans_dim).astype(np.float32)
    opts = dict(n_init=km.get('n_init', 3), max_iter=km.get('max_iter', 100),
                tol=km.get('tol', 1e-4))
    start = time.perf_counter()
    ref = KMeans(k, random_state=km.get('seed', 0), **opts).fit(x)
    t_sk = time.perf_counter() - start
    xt = torch.from_numpy(x).to(args.device)
    kmeans(xt[:1000], k, n_init=1, max_iter=2, device=args.device)  # warm-up (CUDA init)
    _sync(args.device)
    start = time.perf_counter()
    ours = kmeans(xt, k, seed=km.get('seed', 0), device=args.device, **opts)
    _sync(args.device)
    return dict(n=n, dim=args.kmeans_dim, k=k, ours_s=time.perf_counter() - start,
                sklearn_s=t_sk, ours_inertia=float(ours.inertia),
                sklearn_inertia=float(ref.inertia_))


# ---------------------------------------------------------------------- parent
def child(args: argparse.Namespace, variant: str) -> Optional[dict]:
    cmd = [sys.executable, osp.abspath(__file__), *sys.argv[1:], '--variant', variant,
           '--data-root', args.data_root, '--ann-dir', args.ann_dir, '--img-dir', args.img_dir]
    print(f'running {variant} ...', flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('RESULT ')]
    if proc.returncode != 0 or not lines:
        print(f'{variant} FAILED ({proc.returncode}):\n{proc.stderr[-3000:]}', flush=True)
        return None
    return json.loads(lines[-1][len('RESULT '):])


def ratio(a: Optional[float], b: Optional[float]) -> str:
    return f'{a / b:.3f}' if a and b else 'n/a'


def report(results: Dict[str, dict], km: Optional[dict], args) -> None:
    gib = 1024 ** 3
    mem = 'GPU max_memory_allocated' if args.device.startswith('cuda') else 'CPU peak RSS'
    print(f'\nSD v1.5 Oriented R-CNN, {args.size} px, batch {args.batch}, autocast '
          f'{args.autocast}, {args.device}, median of {args.steps} step(s)')
    print(f'{"variant":<16}{"trainable":>14}{"step s":>10}{"peak GiB":>10}   ({mem})')
    for v, r in results.items():
        print(f'{v:<16}{r["trainable"]:>14,}{r["step_s"]:>10.2f}{r["peak_bytes"] / gib:>10.2f}')

    def pair(a: str, b: str) -> str:
        ra, rb = results.get(a, {}), results.get(b, {})
        return (f'step time {ratio(ra.get("step_s"), rb.get("step_s"))}, peak memory '
                f'{ratio(ra.get("peak_bytes"), rb.get("peak_bytes"))}')

    print('\nratios (one run)')
    for ck in ('ckpt', 'nockpt'):
        print(f'  full / LoRA, {ck:<6}: {pair(f"full:{ck}", f"lora:{ck}")}')
    for v in ('lora', 'full'):
        print(f'  {v} ckpt / no ckpt: {pair(f"{v}:ckpt", f"{v}:nockpt")}')
    d = results.get('deblora:ckpt')
    if d:
        print(f'  debLoRA stage 2 / stage 1 step time: {ratio(d["stage2_step_s"], d["step_s"])}')
        per_image = d['debias_s'] / max(d['debias_images'], 1)
        print(f'  de-biasing step: {d["debias_s"]:.1f} s for {d["debias_images"]} images '
              f'({per_image:.2f} s per image, {ratio(per_image, d["step_s"] / args.batch)} '
              f'of a stage-1 training step per image; x {d["train_images"]} training images '
              f'= {per_image * d["train_images"] / 60:.1f} min at the switch)')
    if km:
        print(f'  K-means {km["n"]} x {km["dim"]}, K={km["k"]}: ours ({args.device}) / '
              f'sklearn (CPU) time {ratio(km["ours_s"], km["sklearn_s"])} '
              f'({km["ours_s"]:.2f} s vs {km["sklearn_s"]:.2f} s), inertia '
              f'{ratio(km["ours_inertia"], km["sklearn_inertia"])}')


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    w = p.add_mutually_exclusive_group(required=True)
    w.add_argument('--pretrained', help='SD v1.5 in diffusers layout (local folder)')
    w.add_argument('--random-weights', help='a folder from tools/make_random_weights.py')
    p.add_argument('--data-root', help='split DOTA (default: random images and boxes)')
    p.add_argument('--ann-dir', default='train/annfiles/')
    p.add_argument('--img-dir', default='train/images/')
    p.add_argument('--size', type=int, default=1024)
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--device', default='cuda')
    p.add_argument('--autocast', choices=['bf16', 'fp16', 'none'], default=None,
                   help='SDBackbone autocast (default: bf16 on cuda, none on the CPU)')
    p.add_argument('--variants', nargs='+', default=['lora', 'full', 'deblora'],
                   choices=['lora', 'full', 'deblora'])
    p.add_argument('--grad-ckpt', nargs='+', default=['ckpt', 'nockpt'],
                   choices=['ckpt', 'nockpt'], help='gradient checkpointing on / off')
    p.add_argument('--debias-images', type=int, default=200,
                   help='training images the timed de-biasing step reads (default 200; '
                   'the switch reads all, the time is scaled up)')
    p.add_argument('--calibrate-groups', nargs='+', choices=['head', 'middle', 'tail'],
                   help='override the debLoRA config\'s (the DOTA samples hold planes only, '
                   'a head class)')
    p.add_argument('--kmeans-n', type=int, default=None,
                   help='K-means points (default: 15 x the config\'s max_per_class)')
    p.add_argument('--kmeans-dim', type=int, default=256)
    p.add_argument('--no-kmeans', action='store_true')
    p.add_argument('--json', help='also write the results here')
    p.add_argument('--variant', help=argparse.SUPPRESS)
    args = p.parse_args()
    args.weights = osp.abspath(args.pretrained or args.random_weights)
    if args.data_root:
        args.data_root = osp.abspath(args.data_root) + '/'
    if args.autocast is None:
        args.autocast = 'bf16' if args.device.startswith('cuda') else 'none'
    return args


def main() -> None:
    args = parse_args()
    if args.variant == 'kmeans':
        print('RESULT ' + json.dumps(run_kmeans(args)), flush=True)
        return
    if args.variant:
        print('RESULT ' + json.dumps(run_variant(args)), flush=True)
        return
    if not osp.isdir(osp.join(args.weights, 'unet')):
        raise SystemExit(f'{args.weights!r} is not a diffusers folder (no unet/)')
    with tempfile.TemporaryDirectory() as tmp:
        if args.data_root is None:
            args.data_root, args.ann_dir, args.img_dir = tmp + '/', 'annfiles/', 'images/'
            write_synthetic_dota(tmp, max(2 * args.batch, 2), args.size)
        results = {}
        for name in args.variants:
            for ck in (['ckpt'] if name == 'deblora' else args.grad_ckpt):
                r = child(args, f'{name}:{ck}')
                if r:
                    results[f'{name}:{ck}'] = r
        km = None if args.no_kmeans else child(args, 'kmeans')
    report(results, km, args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(results=results, kmeans=km, args=vars(args)), f, indent=2)
    if len(results) < sum(1 if n == 'deblora' else len(args.grad_ckpt) for n in args.variants):
        raise SystemExit('some variants failed (see above)')


if __name__ == '__main__':
    main()
