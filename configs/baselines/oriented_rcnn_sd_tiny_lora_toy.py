# Oriented R-CNN on the toy DOTA with LoRA (rank 8, UNet attention projections) on a tiny
# random-weight Stable Diffusion UNet (SDBackbone): the CPU stand-in for
# oriented_rcnn_sd_lora_dota.py. Features 32/32/64/64/64 at strides 4/8/16/32/64.
_base_ = ['./oriented_rcnn_r18_toy.py', '../_base_/models/sd_unet_tiny.py']

model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5],
                           pad_size_divisor=64),
    backbone=dict(
        _delete_=True,
        type='LoRABackbone',
        backbone={{_base_.sd_unet_tiny}},
        rank=8,
        alpha=16,
        target_modules=None),  # SDBackbone's default: UNet attention q/k/v/out
    neck=dict(in_channels={{_base_.sd_tiny_fpn_in}}, num_outs=5))

# logs the trainable / total parameter counts before training (and writes
# <work_dir>/trainable_params.json), as the classification configs do; a default hook,
# so configs that set their own custom_hooks keep it
default_hooks = dict(trainable_params=dict(type='TrainableParamsHook'))
