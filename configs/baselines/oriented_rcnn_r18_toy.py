# Oriented R-CNN, randomly initialised ResNet-18, on the generated long-tailed DOTA.
# The README's main job: trains on 2 CPU cores in minutes.
_base_ = [
    '../_base_/models/oriented_rcnn_le90_r50_fpn.py', '../_base_/datasets/toy_dota.py',
    'mmrotate::_base_/schedules/schedule_1x.py', 'mmrotate::_base_/default_runtime.py'
]

model = dict(
    backbone=dict(depth=18, frozen_stages=-1, norm_eval=False, init_cfg=None),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128, fc_out_channels=512)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=1000),
                   rcnn=dict(sampler=dict(num=256))),
    test_cfg=dict(rpn=dict(nms_pre=1000, max_per_img=500)))

max_epochs = 6
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[5], gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=0.02))
default_hooks = dict(logger=dict(interval=20),
                     checkpoint=dict(interval=2, max_keep_ckpts=2))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
