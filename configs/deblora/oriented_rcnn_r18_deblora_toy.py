# debLoRA on the toy DOTA: Oriented R-CNN, LoRA ResNet-18 (rank 8, adapter 'default').
# Same 6 epochs in total as ../baselines/oriented_rcnn_r18_lora_toy.py (the LoRA-only
# baseline): stage 1 = epochs 0-3 (LoRA), then DebLoRAHook clusters the stage-1 instance
# features (K = 32), calibrates the tail classes and stage 2 = epochs 4-5 trains the new
# 'deblora' adapter (rank 8, the backbone's config) with the feature loss; the stage-1
# adapter and the neck are frozen.
_base_ = '../baselines/oriented_rcnn_r18_lora_toy.py'

model = dict(type='DebLoRAFasterRCNN')

custom_hooks = [
    dict(type='DebLoRAHook',
         switch_epoch=4,            # stage-1 epochs
         num_clusters=32,
         kmeans=dict(n_init=3, max_iter=100, tol=1e-4, seed=0),
         weighting='balanced',      # or 'class_share'
         alpha_mode='imbalance', alpha_max=0.5,
         calibrate_groups=['tail'],
         # lambda, relative to the mean calibration gap of a calibrated instance
         # (loss_normalize=True): the feature loss starts near lambda. 0.05 on the toy by
         # stability (docs/deblora.md): 0.2 makes stage 2 diverge at SGD lr 0.02
         loss_weight=0.05,
         pool='avg', normalize=True),
]
