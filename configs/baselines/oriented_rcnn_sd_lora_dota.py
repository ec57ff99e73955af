# Oriented R-CNN (le90) on split DOTA-v1.0, 1024x1024 patches, with LoRA rank 8 (alpha 16)
# on the attention projections of a frozen Stable Diffusion v1.5 UNet (SDBackbone:
# frozen VAE, t=1, fixed prompt 'an aerial image') and an FPN over its 320/320/640/1280/1280
# channels at strides 4/8/16/32/64 (SD-FPN, configs/_base_/models/sd_v15_unet.py).
# Schedule: 12 epochs, AdamW lr 1e-4 (weight decay 0.05) for LoRA + neck + heads, linear
# warm-up over 500 iterations, lr x0.1 at epochs 8 and 11, batch 2 per GPU.
# Local inputs (nothing is downloaded; tools/train.py stops at once when they are missing):
#   SD v1.5 in diffusers layout at checkpoints/stable-diffusion-v1-5/, split DOTA at
#   data/split_ss_dota/.
_base_ = ['mmrotate::oriented_rcnn/oriented-rcnn-le90_r50_fpn_1x_dota.py',
          '../_base_/models/sd_v15_unet.py']

custom_imports = dict(imports=['mmdeblora'], allow_failed_imports=False)
data_root = 'data/split_ss_dota/'

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

train_dataloader = dict(batch_size=2,
                        dataset=dict(type='CheckedDOTADataset', data_root=data_root))
val_dataloader = dict(dataset=dict(type='CheckedDOTADataset', data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(type='GroupDOTAMetric', groups='dota')
test_evaluator = val_evaluator

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=0.05),
    clip_grad=dict(max_norm=35, norm_type=2))
# param_scheduler and train_cfg: mmrotate's 1x (500-iter linear warm-up, 12 epochs,
# milestones [8, 11]).

preflight_hint = (
    'Needs Stable Diffusion v1.5 in diffusers layout (unet/, vae/, text_encoder/, '
    'tokenizer/; e.g. copy `huggingface-cli download stable-diffusion-v1-5/'
    'stable-diffusion-v1-5` from a machine with hub access) and DOTA-v1.0 split into '
    '1024x1024 patches (mmrotate tools/data/dota/split/img_split.py). Point at local '
    'copies with: --cfg-options model.backbone.backbone.pretrained=/path/sd-v1-5 '
    'train_dataloader.dataset.data_root=/path/split_ss_dota/ '
    'val_dataloader.dataset.data_root=/path/split_ss_dota/ '
    'test_dataloader.dataset.data_root=/path/split_ss_dota/')
