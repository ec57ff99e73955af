# debLoRA on the toy DOTA with the tiny random-weight SD UNet (CPU stand-in for
# oriented_rcnn_sd_dota.py). Same split as oriented_rcnn_r18_deblora_toy.py: 6 epochs in
# total, stage 1 (LoRA, adapter 'default') = epochs 0-3, stage 2 ('deblora' adapter,
# rank 8) = epochs 4-5; K = 32, tail classes calibrated.
_base_ = ['../baselines/oriented_rcnn_sd_tiny_lora_toy.py', '../_base_/deblora_hook.py']

model = dict(type='DebLoRAFasterRCNN')

custom_hooks = [dict(**_base_.deblora_hook, switch_epoch=4)]
