"""Stable Diffusion's UNet as a dense backbone (VPD-style), through diffusers.

image (in [-1, 1]) -> frozen VAE encoder -> scaled latents -> DDPM noise at a small
timestep (default t=1) -> one ``UNet2DConditionModel`` pass -> the decoder (up) blocks'
outputs *before* their upsamplers, i.e. channels ``block_out_channels`` at strides 8/16/32/64
of the image (SD v1.5: 320/640/1280/1280). diffusers' ``forward`` returns only the final
noise prediction, so the up blocks are tapped with forward hooks.

Oriented R-CNN's anchors and RoI extractor expect strides 4/8/16/32(/64). By default
(``stride4='upsample'``) a stride-4 level is added by bilinearly upsampling the stride-8
features 2x, so the outputs are strides 4/8/16/32/64 and mmrotate's Oriented R-CNN settings
(anchor strides, RoI ``featmap_strides``) stay as they are; ``stride4=None`` gives only the
four native levels (then set the strides in the config instead).

Weights never come from a hub: ``pretrained`` is a local diffusers folder (``unet/``,
``vae/``, optional ``text_encoder/`` + ``tokenizer/``) or a single-file SD checkpoint; every
diffusers/transformers call passes ``local_files_only=True``. ``pretrained=None`` builds the
models from ``unet_cfg`` / ``vae_cfg`` with random weights (the tiny test configuration).
"""
import os.path as osp
from contextlib import contextmanager, nullcontext
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmrotate.registry import MODELS

# which UNet layers LoRABackbone targets by default, by ``lora_targets`` (regexes, full names)
_ATTN = r'unet\..*\.attn[12]\.(to_q|to_k|to_v|to_out\.0)'
_FF = r'unet\..*\.ff\.net\.(0\.proj|2)'
_CONV = r'unet\..*\.resnets\.\d+\.(conv1|conv2)'
LORA_TARGETS = {
    'attention': _ATTN,
    'attention+ff': f'({_ATTN})|({_FF})',
    'all': f'({_ATTN})|({_FF})|({_CONV})',
}
# SD v1.x's DDPM noise schedule
SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                    beta_schedule='scaled_linear')
AUTOCAST = {None: None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def _missing(path: str, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f'SDBackbone: {what} {path!r} does not exist. Nothing is downloaded here: point '
        '`pretrained` (e.g. --cfg-options model.backbone.backbone.pretrained=/path) at a '
        'local diffusers folder (unet/, vae/, optional text_encoder/ and tokenizer/, e.g. '
        'a copy of stable-diffusion-v1-5) or a single-file .safetensors/.ckpt checkpoint')


@MODELS.register_module()
class SDBackbone(BaseModule):
    """Multi-scale features from a Stable Diffusion UNet's decoder blocks.

    Args:
        pretrained: local diffusers folder or single-file checkpoint; ``None``: random
            weights from ``unet_cfg`` / ``vae_cfg``.
        unet_cfg, vae_cfg: ``UNet2DConditionModel`` / ``AutoencoderKL`` kwargs; needed when
            ``pretrained`` is None or a single file (the file's layout, e.g. SD v1.5's).
        timestep: DDPM timestep of the noise added to the latents (VPD uses ~0/1).
        test_noise_draws: at test time, features are averaged over this many noise draws
            (the official debLoRA extractor averages 8).
        noise_seed: seed of the fixed noise used inside ``deterministic_features()``.
        text_mode: ``'zeros'`` (an all-zero context), ``'prompt'`` (``prompt`` encoded once by
            the local CLIP text encoder) or ``'learnable'`` (a context parameter, started from
            the prompt encoding when an encoder is given, else zeros; train it through
            LoRABackbone's ``trainable_extra=['context']``). Never per-image class names: those
            leak the labels.
        prompt, text_encoder: the fixed prompt and the folder holding ``text_encoder/`` and
            ``tokenizer/`` (default: ``pretrained`` when it is a folder).
        context_length: context tokens for 'zeros' / 'learnable' without an encoder.
        stride4: ``'upsample'`` adds a stride-4 level (2x bilinear of stride 8); ``None``.
        gradient_checkpointing: diffusers' UNet gradient checkpointing.
        autocast: ``None``, ``'bf16'`` or ``'fp16'``: autocast of VAE + UNet (outputs float32).
        freeze_vae: VAE frozen, in eval mode, encoding without gradients.
        lora_targets: which UNet layers ``LoRABackbone`` wraps when it is given no
            ``target_modules``: ``'attention'`` (q/k/v/out projections, default),
            ``'attention+ff'`` or ``'all'`` (adds the resnets' convs).
    """

    def __init__(self,
                 pretrained: Optional[str] = None,
                 unet_cfg: Optional[dict] = None,
                 vae_cfg: Optional[dict] = None,
                 timestep: int = 1,
                 test_noise_draws: int = 1,
                 noise_seed: int = 0,
                 text_mode: str = 'zeros',
                 prompt: str = '',
                 text_encoder: Optional[str] = None,
                 context_length: int = 77,
                 stride4: Optional[str] = 'upsample',
                 gradient_checkpointing: bool = False,
                 autocast: Optional[str] = None,
                 freeze_vae: bool = True,
                 lora_targets: str = 'attention',
                 scheduler_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if text_mode not in ('zeros', 'prompt', 'learnable'):
            raise ValueError(f"text_mode must be 'zeros', 'prompt' or 'learnable', "
                             f'got {text_mode!r}')
        if stride4 not in (None, 'upsample'):
            raise ValueError(f"stride4 must be None or 'upsample', got {stride4!r}")
        if autocast not in AUTOCAST:
            raise ValueError(f'autocast must be one of {list(AUTOCAST)}, got {autocast!r}')
        if lora_targets not in LORA_TARGETS:
            raise ValueError(f'lora_targets must be one of {list(LORA_TARGETS)}')
        self.unet, self.vae = self._build(pretrained, unet_cfg, vae_cfg)
        self.timestep, self.test_noise_draws = int(timestep), int(test_noise_draws)
        if self.test_noise_draws < 1:
            raise ValueError(f'test_noise_draws must be >= 1, got {test_noise_draws}')
        self.noise_seed = int(noise_seed)
        self._fixed_noise = False
        self._noise_cache: Dict[tuple, torch.Tensor] = {}
        self.stride4, self.autocast, self.freeze_vae = stride4, AUTOCAST[autocast], freeze_vae
        self.default_lora_target_modules = LORA_TARGETS[lora_targets]
        self.scaling_factor = float(self.vae.config.scaling_factor)

        from diffusers import DDPMScheduler
        alphas = DDPMScheduler(**(scheduler_cfg or SD_SCHEDULER)).alphas_cumprod
        if not 0 <= self.timestep < len(alphas):
            raise ValueError(f'timestep {timestep} outside [0, {len(alphas)})')
        self.noise_scales = (float(alphas[self.timestep]) ** 0.5,
                             float(1 - alphas[self.timestep]) ** 0.5)

        context = self._init_context(text_mode, prompt, text_encoder or (
            pretrained if pretrained and osp.isdir(pretrained) else None), context_length)
        if text_mode == 'learnable':
            self.context = nn.Parameter(context)
        else:
            self.register_buffer('context', context)

        if freeze_vae:
            self.vae.requires_grad_(False)
            self.vae.eval()
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self._taps: Dict[int, torch.Tensor] = {}
        self._register_taps()
        self._is_init = True  # weights are set here; never re-initialise

    # ------------------------------------------------------------------ building
    @staticmethod
    def _build(pretrained: Optional[str], unet_cfg: Optional[dict],
               vae_cfg: Optional[dict]) -> Tuple[nn.Module, nn.Module]:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        if pretrained is None:
            if unet_cfg is None or vae_cfg is None:
                raise ValueError('SDBackbone needs `pretrained` (a local folder or file) or '
                                 'both `unet_cfg` and `vae_cfg` for random weights')
            return UNet2DConditionModel(**unet_cfg), AutoencoderKL(**vae_cfg)
        if osp.isdir(pretrained):
            for sub in ('unet', 'vae'):
                if not osp.isdir(osp.join(pretrained, sub)):
                    raise _missing(osp.join(pretrained, sub), 'diffusers sub-folder')
            print_log(f'SDBackbone: loading unet/ and vae/ from {pretrained}', logger='current')
            unet = UNet2DConditionModel.from_pretrained(pretrained, subfolder='unet',
                                                        local_files_only=True)
            vae = AutoencoderKL.from_pretrained(pretrained, subfolder='vae',
                                                local_files_only=True)
            return unet, vae
        if osp.isfile(pretrained):
            return SDBackbone._from_single_file(pretrained, unet_cfg, vae_cfg)
        raise _missing(pretrained, 'pretrained')

    @staticmethod
    def _from_single_file(path: str, unet_cfg: Optional[dict],
                          vae_cfg: Optional[dict]) -> Tuple[nn.Module, nn.Module]:
        """An original (LDM-layout) SD checkpoint, converted by diffusers' own functions.

        The architecture comes from ``unet_cfg`` / ``vae_cfg`` (diffusers would fetch it from
        the hub otherwise).
        """
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from diffusers.loaders.single_file_utils import (convert_ldm_unet_checkpoint,
                                                         convert_ldm_vae_checkpoint)

        from mmdeblora.utils.checkpoint import load_weights_file
        if unet_cfg is None or vae_cfg is None:
            raise ValueError('a single-file checkpoint needs unet_cfg and vae_cfg (its '
                             'architecture), e.g. configs/_base_/models/sd_v15_unet.py')
        print_log(f'SDBackbone: converting single-file checkpoint {path}', logger='current')
        state = load_weights_file(path)
        unet, vae = UNet2DConditionModel(**unet_cfg), AutoencoderKL(**vae_cfg)
        unet.load_state_dict(convert_ldm_unet_checkpoint(state, unet.config), strict=True)
        vae.load_state_dict(convert_ldm_vae_checkpoint(state, vae.config), strict=True)
        return unet, vae

    def _init_context(self, mode: str, prompt: str, encoder_dir: Optional[str],
                      length: int) -> torch.Tensor:
        dim = self.unet.config.cross_attention_dim
        if mode == 'prompt' or (mode == 'learnable' and encoder_dir and
                                osp.isdir(osp.join(encoder_dir, 'text_encoder'))):
            return self._encode_prompt(prompt, encoder_dir, dim)
        return torch.zeros(1, length, dim)

    @staticmethod
    def _encode_prompt(prompt: str, encoder_dir: Optional[str], dim: int) -> torch.Tensor:
        """Encode the fixed prompt once with the local CLIP text encoder, then drop it."""
        from transformers import CLIPTextModel, CLIPTokenizer
        if not encoder_dir:
            raise ValueError("text_mode='prompt' needs a local text encoder: a `pretrained` "
                             'folder or `text_encoder` holding text_encoder/ and tokenizer/')
        for sub in ('text_encoder', 'tokenizer'):
            if not osp.isdir(osp.join(encoder_dir, sub)):
                raise _missing(osp.join(encoder_dir, sub), 'text encoder sub-folder')
        tokenizer = CLIPTokenizer.from_pretrained(encoder_dir, subfolder='tokenizer',
                                                  local_files_only=True)
        encoder = CLIPTextModel.from_pretrained(encoder_dir, subfolder='text_encoder',
                                                local_files_only=True)
        ids = tokenizer([prompt], padding='max_length', truncation=True,
                        max_length=tokenizer.model_max_length, return_tensors='pt').input_ids
        with torch.no_grad():
            context = encoder(ids)[0].float()
        if context.shape[-1] != dim:
            raise ValueError(f'text encoder width {context.shape[-1]} != UNet '
                             f'cross_attention_dim {dim}')
        return context

    def _register_taps(self) -> None:
        """Capture each up block's output before its upsampler (or its output if none)."""
        def before(i):
            def hook(module, args):
                self._taps[i] = args[0]
            return hook

        def after(i):
            def hook(module, args, output):
                self._taps[i] = output
            return hook

        for i, block in enumerate(self.unet.up_blocks):
            upsamplers = getattr(block, 'upsamplers', None)
            if upsamplers:
                upsamplers[0].register_forward_pre_hook(before(i))
            else:
                block.register_forward_hook(after(i))

    # ------------------------------------------------------------------ properties
    @property
    def out_channels(self) -> List[int]:
        """Channels of the outputs, by increasing stride."""
        chans = list(self.unet.config.block_out_channels)
        return ([chans[0]] if self.stride4 else []) + chans

    @property
    def out_strides(self) -> List[int]:
        n = len(self.unet.config.block_out_channels)
        strides = [8 * 2 ** i for i in range(n)]
        return ([4] if self.stride4 else []) + strides

    @property
    def size_divisor(self) -> int:
        return max(self.out_strides)

    # ------------------------------------------------------------------ forward
    def init_weights(self) -> None:
        """No-op: weights come from ``pretrained`` or the random build in ``__init__``."""
        self._is_init = True

    def train(self, mode: bool = True) -> 'SDBackbone':
        super().train(mode)
        if self.freeze_vae:
            self.vae.eval()
        return self

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latents (the posterior's mean, as VPD) of an image in [-1, 1]."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_vae):
            return self.vae.encode(img).latent_dist.mean * self.scaling_factor

    @contextmanager
    def deterministic_features(self):
        """Inside, every forward uses ``test_noise_draws`` fixed noise draws, train or eval.

        Draw i is one noise pattern seeded by ``noise_seed + i`` and shared by every image
        of every batch, so the features are a function of the image alone. debLoRA needs
        that: the stage-2 targets (a no-grad pass of the stage-1 path), the student pass
        and the features clustered at the switch must see the same noisy latents, or the
        feature loss measures noise (on the tiny SD config, two passes with fresh noise
        differed by 0.55 per instance against a calibration shift of 0.13).
        """
        prev = self._fixed_noise
        self._fixed_noise = True
        try:
            yield self
        finally:
            self._fixed_noise = prev

    def _noise(self, latents: torch.Tensor, draw: int) -> torch.Tensor:
        if not self._fixed_noise:
            return torch.randn_like(latents)
        key = (draw, tuple(latents.shape[1:]), latents.dtype, str(latents.device))
        if key not in self._noise_cache:
            if len(self._noise_cache) > 32:  # a few input sizes at most in practice
                self._noise_cache.clear()
            gen = torch.Generator().manual_seed(self.noise_seed + draw)
            self._noise_cache[key] = torch.randn((1, *latents.shape[1:]),
                                                 generator=gen).to(latents)
        return self._noise_cache[key].expand_as(latents)

    def _features(self, latents: torch.Tensor, draw: int = 0) -> List[torch.Tensor]:
        a, s = self.noise_scales
        noisy = a * latents + s * self._noise(latents, draw)
        t = torch.full((latents.shape[0],), self.timestep, device=latents.device,
                       dtype=torch.long)
        ctx = self.context.to(latents.dtype).expand(latents.shape[0], -1, -1)
        self._taps.clear()
        self.unet(noisy, t, encoder_hidden_states=ctx, return_dict=False)
        n = len(self.unet.up_blocks)
        feats = [self._taps[i] for i in reversed(range(n))]  # stride 8 first
        self._taps.clear()
        return feats

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        div = self.size_divisor
        if x.shape[-1] % div or x.shape[-2] % div:
            raise ValueError(f'SDBackbone needs H and W divisible by {div}, got '
                             f'{tuple(x.shape[-2:])}; set data_preprocessor.pad_size_divisor')
        ctx = (torch.autocast(x.device.type, dtype=self.autocast)
               if self.autocast is not None else nullcontext())
        with ctx:
            latents = self.encode(x)
            draws = self.test_noise_draws if self._fixed_noise or not self.training else 1
            feats = self._features(latents)
            for i in range(1, draws):
                feats = [f + g for f, g in zip(feats, self._features(latents, i))]
            if draws > 1:
                feats = [f / draws for f in feats]
        feats = [f.float() for f in feats]
        if self.stride4:
            feats.insert(0, F.interpolate(feats[0], scale_factor=2, mode='bilinear',
                                          align_corners=False))
        return tuple(feats)
