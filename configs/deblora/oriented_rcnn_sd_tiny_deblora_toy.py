# debLoRA on the toy DOTA with the tiny random-weight SD UNet (CPU stand-in for
# oriented_rcnn_sd_dota.py). Same split as oriented_rcnn_r18_deblora_toy.py: 6 epochs in
# total, stage 1 (LoRA, adapter 'default') = epochs 0-3, stage 2 ('deblora' adapter,
# rank 8) = epochs 4-5; K = 32, tail classes calibrated.
_base_ = '../baselines/oriented_rcnn_sd_tiny_lora_toy.py'

model = dict(type='DebLoRAFasterRCNN')

custom_hooks = [
    dict(type='DebLoRAHook', switch_epoch=4, num_clusters=32,
         kmeans=dict(n_init=3, max_iter=100, tol=1e-4, seed=0),
         weighting='balanced', alpha_mode='imbalance', alpha_max=0.5, calibrate_groups=['tail'],
         loss_weight=0.05, pool='avg', normalize=True),
]
