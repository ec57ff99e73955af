# Oriented R-CNN (le90) on split DOTA-v1.0, 1024x1024 patches, with LoRA rank 8 (alpha 16)
# on the attention projections of a frozen Stable Diffusion v1.5 UNet (SDBackbone:
# frozen VAE, t=1, fixed prompt 'an aerial image') and an FPN over its 320/320/640/1280/1280
# channels at strides 4/8/16/32/64 (SD-FPN, configs/_base_/models/sd_v15_unet.py).
# Schedule: 12 epochs, AdamW lr 1e-4 (weight decay 0.05) for LoRA + neck + heads, linear
# warm-up over 500 iterations, lr x0.1 at epochs 8 and 11, batch 2 per GPU.
# Local inputs (nothing is downloaded; tools/train.py stops at once when they are missing):
#   SD v1.5 in diffusers layout at checkpoints/stable-diffusion-v1-5/, split DOTA at
#   data/split_ss_dota/.
# Data: ../_base_/datasets/dota.py (train on `train`, validate on `val`).
_base_ = [
    '../_base_/models/oriented_rcnn_le90_r50_fpn.py', '../_base_/models/sd_v15_unet.py',
    '../_base_/datasets/dota.py', 'mmrotate::_base_/schedules/schedule_1x.py',
    'mmrotate::_base_/default_runtime.py'
]

model = dict(
    data_preprocessor={{_base_.sd_data_preprocessor}},
    backbone=dict(
        _delete_=True,
        type='LoRABackbone',
        backbone={{_base_.sd_v15_unet}},
        rank=8,
        alpha=16,
        target_modules=None),  # SDBackbone's lora_targets: UNet attention q/k/v/out
    neck={{_base_.sd_v15_fpn}})

# logs the trainable / total parameter counts before training (and writes
# <work_dir>/trainable_params.json), as the classification configs do; a default hook,
# so configs that set their own custom_hooks keep it
default_hooks = dict(trainable_params=dict(type='TrainableParamsHook'))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2))
# param_scheduler and train_cfg: mmrotate's 1x (500-iter linear warm-up, 12 epochs,
# milestones [8, 11]).

preflight_hint = (
    'Needs Stable Diffusion v1.5 in diffusers layout (unet/, vae/, text_encoder/, '
    'tokenizer/; e.g. copy `huggingface-cli download stable-diffusion-v1-5/'
    'stable-diffusion-v1-5` from a machine with hub access) and DOTA-v1.0 split into '
    '1024x1024 patches (.venv/bin/python tools/data/dota/split_dota.py). Point at local '
    'copies with: --cfg-options model.backbone.backbone.pretrained=/path/sd-v1-5 '
    'train_dataloader.dataset.data_root=/path/split_ss_dota/ '
    'val_dataloader.dataset.data_root=/path/split_ss_dota/ '
    'test_dataloader.dataset.data_root=/path/split_ss_dota/')
