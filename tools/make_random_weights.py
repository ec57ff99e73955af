"""Random-weight stand-ins for the pretrained files the DOTA configs read, written locally.

``python tools/make_random_weights.py OUT [--what sd resnet50] [--seed 0] [--force]``

Nothing can be downloaded here, yet the DOTA configs need Stable Diffusion v1.5 in
diffusers layout and torchvision's ResNet-50 file. This writes files with exactly their
architecture and layout, and random weights, so the real pipeline (model building, loading,
LoRA injection, memory, checkpoints) can be rehearsed on a machine without them:

- ``OUT/sd-v1-5-random/``: ``unet/`` (``UNet2DConditionModel``, 859.5M parameters),
  ``vae/`` (``AutoencoderKL``, 83.7M), ``text_encoder/`` (``CLIPTextModel``, the CLIP
  ViT-L/14 text tower, 123.1M), ``tokenizer/``, ``scheduler/`` and ``model_index.json``;
  the configs are SD v1.5's published ``config.json`` values (``SD15_*`` below).
- ``OUT/resnet50-random.pth``: torchvision's ``resnet50()`` state dict (a plain dict with
  the keys ``torchvision://resnet50`` gives, ``fc`` included), torchvision's own init.

The tokenizer is a valid CLIP BPE tokenizer (``CLIPTokenizer`` reads it) of SD's vocabulary
size, 49408, but its vocabulary is **synthetic**: the 512 byte-level base tokens of CLIP,
then 48894 merges generated in a fixed order (every letter pair, then two letters + one,
three + one, ...), then the two special tokens. It tokenizes any text, but not into CLIP's
real tokens; with random weights that does not matter. Features from these folders are
meaningless: they rehearse the pipeline, never the accuracy.
"""
import argparse
import json
import os
import os.path as osp
import shutil
import string
import time
from typing import Dict, List, Tuple

# SD v1.5's unet/config.json, vae/config.json and text_encoder/config.json (the
# architecture fields; diffusers / transformers fill the rest with these same defaults).
SD15_UNET = dict(
    act_fn='silu', attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False, cross_attention_dim=768,
    down_block_types=['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D',
                      'DownBlock2D'],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4,
    layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32,
    out_channels=4, sample_size=64,
    up_block_types=['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D',
                    'CrossAttnUpBlock2D'])
SD15_VAE = dict(
    act_fn='silu', block_out_channels=[128, 256, 512, 512],
    down_block_types=['DownEncoderBlock2D'] * 4, in_channels=3, latent_channels=4,
    layers_per_block=2, norm_num_groups=32, out_channels=3, sample_size=512,
    up_block_types=['UpDecoderBlock2D'] * 4, scaling_factor=0.18215)
SD15_TEXT = dict(
    architectures=['CLIPTextModel'], attention_dropout=0.0, bos_token_id=0, dropout=0.0,
    eos_token_id=2, hidden_act='quick_gelu', hidden_size=768, initializer_factor=1.0,
    initializer_range=0.02, intermediate_size=3072, layer_norm_eps=1e-5,
    max_position_embeddings=77, model_type='clip_text_model', num_attention_heads=12,
    num_hidden_layers=12, pad_token_id=1, projection_dim=768, vocab_size=49408)
SD15_SCHEDULER = dict(
    _class_name='PNDMScheduler', beta_end=0.012, beta_schedule='scaled_linear',
    beta_start=0.00085, num_train_timesteps=1000, set_alpha_to_one=False,
    skip_prk_steps=True, steps_offset=1, trained_betas=None, clip_sample=False)
SD15_TOKENIZER_CONFIG = dict(
    add_prefix_space=False, bos_token='<|startoftext|>', do_lower_case=True,
    eos_token='<|endoftext|>', errors='replace', model_max_length=77,
    pad_token='<|endoftext|>', tokenizer_class='CLIPTokenizer', unk_token='<|endoftext|>')
# parameter counts of SD v1.5's published models: the architecture check
SD15_PARAMS = dict(unet=859_520_964, vae=83_653_863, text_encoder=123_060_480)
# --arch tiny: SD v1.5's block layout at a few million parameters (the UNet and VAE of
# configs/_base_/models/sd_unet_tiny.py, a 2-layer text tower), for fast tests of code that
# reads a diffusers folder; not the architecture the DOTA configs expect
TINY_UNET = dict(SD15_UNET, block_out_channels=[32, 64, 64, 64], layers_per_block=1,
                 cross_attention_dim=32, sample_size=32)
TINY_VAE = dict(SD15_VAE, block_out_channels=[32, 32, 64, 64], layers_per_block=1,
                sample_size=256)
TINY_TEXT = dict(SD15_TEXT, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                 num_hidden_layers=2, projection_dim=32)
ARCHS = {'sd-v1-5': (SD15_UNET, SD15_VAE, SD15_TEXT, SD15_PARAMS),
         'tiny': (TINY_UNET, TINY_VAE, TINY_TEXT, None)}
CLIP_VOCAB_SIZE = 49408
CLIP_MERGES = CLIP_VOCAB_SIZE - 512 - 2  # CLIPTokenizer reads at most this many merges
SD_FOLDER = 'sd-v1-5-random'
TINY_FOLDER = 'sd-tiny-random'
RESNET_FILE = 'resnet50-random.pth'


def synthetic_clip_bpe() -> Tuple[Dict[str, int], List[str]]:
    """A CLIP-style BPE vocabulary (token -> id) and merge list of CLIP's sizes.

    Ids follow CLIP's layout: 256 byte-level characters, the same with ``</w>``, one token
    per merge in merge order, then ``<|startoftext|>`` and ``<|endoftext|>``. The merges are
    left-associative (``prefix + letter``), so every merged token is new and unique.
    """
    from transformers.models.clip.tokenization_clip import bytes_to_unicode
    base = list(bytes_to_unicode().values())
    vocab = base + [c + '</w>' for c in base]
    letters = list(string.ascii_lowercase)
    merges: List[str] = []
    prefixes = letters
    while len(merges) < CLIP_MERGES:
        longer = []
        for prefix in prefixes:
            for c in letters:
                for tail, new in ((c, prefix + c), (c + '</w>', prefix + c + '</w>')):
                    if len(merges) < CLIP_MERGES:
                        merges.append(f'{prefix} {tail}')
                        vocab.append(new)
                longer.append(prefix + c)
        prefixes = longer
    vocab += ['<|startoftext|>', '<|endoftext|>']
    assert len(vocab) == len(set(vocab)) == CLIP_VOCAB_SIZE
    return {tok: i for i, tok in enumerate(vocab)}, merges


def write_tokenizer(folder: str) -> None:
    vocab, merges = synthetic_clip_bpe()
    os.makedirs(folder, exist_ok=True)
    with open(osp.join(folder, 'vocab.json'), 'w', encoding='utf-8') as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(osp.join(folder, 'merges.txt'), 'w', encoding='utf-8') as f:
        f.write('#version: 0.2 (synthetic, written by tools/make_random_weights.py)\n')
        f.write('\n'.join(merges) + '\n')
    with open(osp.join(folder, 'tokenizer_config.json'), 'w') as f:
        json.dump(SD15_TOKENIZER_CONFIG, f, indent=2)
    with open(osp.join(folder, 'special_tokens_map.json'), 'w') as f:
        json.dump(dict(bos_token='<|startoftext|>', eos_token='<|endoftext|>',
                       pad_token='<|endoftext|>', unk_token='<|endoftext|>'), f, indent=2)


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def write_sd(folder: str, seed: int = 0, arch: str = 'sd-v1-5') -> Dict[str, int]:
    """A diffusers folder of ``arch`` with random weights; returns the parameter counts."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    unet_cfg, vae_cfg, text_cfg, expected = ARCHS[arch]
    counts = {}
    torch.manual_seed(seed)
    for sub, build in (('unet', lambda: UNet2DConditionModel.from_config(unet_cfg)),
                       ('vae', lambda: AutoencoderKL.from_config(vae_cfg)),
                       ('text_encoder',
                        lambda: CLIPTextModel(CLIPTextConfig(**text_cfg)))):
        t0 = time.time()
        model = build()
        counts[sub] = _count(model)
        if expected and counts[sub] != expected[sub]:
            raise RuntimeError(f'{sub}: {counts[sub]} parameters, SD v1.5 has '
                               f'{expected[sub]}: the architecture config is wrong')
        model.save_pretrained(osp.join(folder, sub), safe_serialization=True)
        print(f'{sub}: {counts[sub]:,} parameters, {time.time() - t0:.0f} s')
        del model
    write_tokenizer(osp.join(folder, 'tokenizer'))
    os.makedirs(osp.join(folder, 'scheduler'), exist_ok=True)
    with open(osp.join(folder, 'scheduler', 'scheduler_config.json'), 'w') as f:
        json.dump(SD15_SCHEDULER, f, indent=2)
    with open(osp.join(folder, 'model_index.json'), 'w') as f:
        json.dump({'_class_name': 'StableDiffusionPipeline',
                   'text_encoder': ['transformers', 'CLIPTextModel'],
                   'tokenizer': ['transformers', 'CLIPTokenizer'],
                   'unet': ['diffusers', 'UNet2DConditionModel'],
                   'vae': ['diffusers', 'AutoencoderKL'],
                   'scheduler': ['diffusers', 'PNDMScheduler'],
                   'random_weights': 'written by tools/make_random_weights.py'}, f, indent=2)
    return counts


def write_resnet50(path: str, seed: int = 0) -> int:
    """torchvision's ``resnet50()`` state dict (torchvision's init), saved as torch does."""
    import torch
    from torchvision.models import resnet50
    torch.manual_seed(seed)
    state = resnet50(weights=None).state_dict()
    torch.save(state, path)
    return len(state)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out', help=f'output folder ({SD_FOLDER}/ and {RESNET_FILE} in it)')
    parser.add_argument('--what', nargs='+', choices=['sd', 'resnet50'],
                        default=['sd', 'resnet50'])
    parser.add_argument('--arch', choices=list(ARCHS), default='sd-v1-5',
                        help="the SD architecture ('tiny': for tests, written to "
                        f"{TINY_FOLDER}/)")
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--force', action='store_true',
                        help='replace existing outputs (otherwise they are refused)')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    targets = {'sd': osp.join(args.out, SD_FOLDER if args.arch == 'sd-v1-5' else TINY_FOLDER),
               'resnet50': osp.join(args.out, RESNET_FILE)}
    existing = [targets[w] for w in args.what if osp.exists(targets[w])]
    if existing and not args.force:
        raise SystemExit(f'{existing} already exist; pass --force to replace them')
    if 'sd' in args.what:
        folder = targets['sd']
        tmp = folder + '.partial'
        shutil.rmtree(tmp, ignore_errors=True)
        write_sd(tmp, args.seed, args.arch)  # a side folder: a killed run leaves no half model
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        print(f'wrote {folder} (random weights, synthetic tokenizer vocabulary)')
    if 'resnet50' in args.what:
        n = write_resnet50(targets['resnet50'] + '.partial', args.seed)
        os.replace(targets['resnet50'] + '.partial', targets['resnet50'])
        print(f'wrote {targets["resnet50"]} ({n} tensors, torchvision resnet50 keys)')


if __name__ == '__main__':
    main()
