# A Stable Diffusion v1.5 UNet as an image classifier: LoRABackbone rank 8 (alpha 16) on
# the UNet attention projections of a frozen SDBackbone (frozen VAE, t=1, fixed prompt
# 'an aerial image'); the image feature = the four decoder levels at strides 8-64
# average-pooled and concatenated (LevelPooling; 320 + 640 + 1280 + 1280 = 3520-d; the
# stride-4 level is an upsampled copy of stride 8), a linear head.
_base_ = ['../../_base_/models/sd_v15_unet.py']

model = dict(
    type='ImageClassifier',
    backbone=dict(type='LoRABackbone', backbone={{_base_.sd_v15_unet}}, rank=8, alpha=16,
                  target_modules=None),  # SDBackbone's lora_targets: attention q/k/v/out
    neck=dict(type='LevelPooling', levels=(1, 2, 3, 4)),
    head=dict(type='LinearClsHead', num_classes=15, in_channels=3520,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))
