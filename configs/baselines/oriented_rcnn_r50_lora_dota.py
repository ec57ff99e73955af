# Oriented R-CNN (le90) on split DOTA-v1.0 (1024x1024 patches) with a frozen ImageNet
# ResNet-50 and LoRA rank 8 on its convs (conv1/conv2/conv3 of every bottleneck + stem).
# Schedule and lr as mmrotate's 1x (SGD 0.005, 12 epochs, steps at 8 and 11, batch 2).
# Data: ../_base_/datasets/dota.py (train on `train`, validate on `val`).
# Local inputs (nothing is downloaded): split DOTA in data/split_ss_dota/ and torchvision's
# ResNet-50 weights file; override with --cfg-options model.backbone.pretrained=PATH.
_base_ = [
    '../_base_/models/oriented_rcnn_le90_r50_fpn.py', '../_base_/datasets/dota.py',
    'mmrotate::_base_/schedules/schedule_1x.py', 'mmrotate::_base_/default_runtime.py'
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='LoRABackbone',
        backbone=dict(type='mmdet.ResNet', depth=50, num_stages=4, out_indices=(0, 1, 2, 3),
                      frozen_stages=-1, norm_cfg=dict(type='BN', requires_grad=False),
                      norm_eval=True, style='pytorch', init_cfg=None),
        pretrained='checkpoints/resnet50-0676ba61.pth',  # torchvision's resnet50 file
        pretrained_prefix=None,
        rank=8,
        alpha=16,
        target_modules=['conv1', 'conv2', 'conv3']))

# logs the trainable / total parameter counts before training (and writes
# <work_dir>/trainable_params.json), as the classification configs do; a default hook,
# so configs that set their own custom_hooks keep it
default_hooks = dict(trainable_params=dict(type='TrainableParamsHook'))

optim_wrapper = dict(optimizer=dict(lr=0.005))  # mmrotate's Oriented R-CNN 1x lr

preflight_hint = (
    'Needs split DOTA-v1.0 (.venv/bin/python tools/data/dota/split_dota.py, docs/data.md) '
    'and torchvision\'s ResNet-50 weights on local disk: --cfg-options '
    'model.backbone.pretrained=/path/resnet50.pth '
    'train_dataloader.dataset.data_root=/path/split_ss_dota/ '
    'val_dataloader.dataset.data_root=/path/split_ss_dota/ '
    'test_dataloader.dataset.data_root=/path/split_ss_dota/')
