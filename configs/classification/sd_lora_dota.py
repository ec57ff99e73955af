# LoRA row on real DOTA object crops with a Stable Diffusion v1.5 UNet (GPU): LoRABackbone
# rank 8 on a frozen SDBackbone (_base_/sd_v15_classifier.py), features averaged over 8
# noise draws at test time, as the official extractor does. AdamW lr 1e-4, 500-iteration
# warm-up, lr x0.1 at epochs 8 and 11, 12 epochs, batch 32 (the detection SD configs'
# schedule). Not run on a GPU here: rehearsed on the
# CPU with a tiny random SD (tests/configs/test_sd_classification.py).
# Local inputs (nothing is downloaded; tools/train.py stops at once when they are missing):
#   SD v1.5 in diffusers layout at checkpoints/stable-diffusion-v1-5/, split DOTA at
#   data/split_ss_dota/.
_base_ = ['./_base_/default_runtime.py', './_base_/dota_crops.py',
          './_base_/sd_v15_classifier.py']

model = dict(data_preprocessor={{_base_.data_preprocessor}},
             backbone=dict(backbone=dict(test_noise_draws=8)))

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', by_epoch=True, milestones=[8, 11], gamma=0.1)
]
train_cfg = dict(by_epoch=True, max_epochs=12, val_interval=4)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=3,
                                     save_last=True))

preflight_hint = (
    'Needs Stable Diffusion v1.5 in diffusers layout (unet/, vae/, text_encoder/, '
    'tokenizer/) and DOTA-v1.0 split into patches (.venv/bin/python '
    'tools/data/dota/split_dota.py). Point at local copies with: --cfg-options '
    'model.backbone.backbone.pretrained=/path/sd-v1-5 '
    'train_dataloader.dataset.data_root=/path/split_ss_dota/ '
    'val_dataloader.dataset.data_root=/path/split_ss_dota/ '
    'test_dataloader.dataset.data_root=/path/split_ss_dota/')
