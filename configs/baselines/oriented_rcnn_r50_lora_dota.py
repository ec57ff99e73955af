# Oriented R-CNN (le90) on split DOTA-v1.0 (1024x1024 patches) with a frozen ImageNet
# ResNet-50 and LoRA rank 8 on its convs (conv1/conv2/conv3 of every bottleneck + stem).
# Schedule and lr as mmrotate's 1x (SGD 0.005, 12 epochs, steps at 8 and 11, batch 2).
# Local inputs (nothing is downloaded): split DOTA in data/split_ss_dota/ and torchvision's
# ResNet-50 weights file; override with --cfg-options model.backbone.pretrained=PATH.
_base_ = 'mmrotate::oriented_rcnn/oriented-rcnn-le90_r50_fpn_1x_dota.py'

custom_imports = dict(imports=['mmdeblora'], allow_failed_imports=False)
data_root = 'data/split_ss_dota/'

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

train_dataloader = dict(dataset=dict(type='CheckedDOTADataset', data_root=data_root))
val_dataloader = dict(dataset=dict(type='CheckedDOTADataset', data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(type='GroupDOTAMetric', groups='dota')
test_evaluator = val_evaluator

preflight_hint = (
    'Needs split DOTA-v1.0 (mmrotate tools/data/dota/split/img_split.py) and torchvision\'s '
    'ResNet-50 weights on local disk: --cfg-options '
    'model.backbone.pretrained=/path/resnet50.pth '
    'train_dataloader.dataset.data_root=/path/split_ss_dota/ '
    'val_dataloader.dataset.data_root=/path/split_ss_dota/ '
    'test_dataloader.dataset.data_root=/path/split_ss_dota/')
