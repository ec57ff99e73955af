# (a) Full fine-tuning on DOTA: the ImageNet ResNet-50 of oriented_rcnn_r50_lora_dota.py
# without LoRA, every conv stage trained (frozen_stages=-1); BatchNorm stays frozen as in
# mmrotate's recipe (batch 2 per GPU is too small for BN statistics). Same data,
# schedule and lr (SGD 0.005, 12 epochs) as the LoRA run.
_base_ = './oriented_rcnn_r50_lora_dota.py'

model = dict(backbone=dict(
    _base_.model.backbone.backbone, _delete_=True,
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/resnet50-0676ba61.pth')))

preflight_hint = (
    'Needs split DOTA-v1.0 and torchvision\'s ResNet-50 weights on local disk: '
    '--cfg-options model.backbone.init_cfg.checkpoint=/path/resnet50.pth '
    'train_dataloader.dataset.data_root=/path/split_ss_dota/ '
    'val_dataloader.dataset.data_root=/path/split_ss_dota/ '
    'test_dataloader.dataset.data_root=/path/split_ss_dota/')
