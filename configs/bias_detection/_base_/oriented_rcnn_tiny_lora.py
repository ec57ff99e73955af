# Oriented R-CNN (le90) for the 128 px bias scenes: the bias benchmark's foundation (the
# small ResNet-18 with 16 base channels pretrained on the balanced source domain,
# data/bias_benchmark/foundation.pth, loaded strictly) inside LoRABackbone (peft LoRA rank 8
# on every conv1 / conv2, the base frozen), an FPN on its four stages (16 / 32 / 64 / 128
# channels at strides 4-32), narrow heads. The LoRA row of the detection benchmark and the
# stage-1 model of its debLoRA rows. SGD, 8 epochs (the learning rate / 10 for the last),
# by epoch: short enough for the main job (tools/run_toy.sh) on 2 CPU cores.
_base_ = [
    '../../_base_/models/oriented_rcnn_le90_r50_fpn.py', './bias_scenes.py',
    'mmrotate::_base_/schedules/schedule_1x.py', 'mmrotate::_base_/default_runtime.py'
]

model = dict(
    backbone=dict(
        _delete_=True,
        type='LoRABackbone',
        backbone=dict(type='mmdet.ResNet', depth=18, stem_channels=16, base_channels=16,
                      num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=-1,
                      norm_eval=False, style='pytorch', init_cfg=None),
        pretrained={{_base_.foundation}},
        rank=8,
        alpha=16,
        target_modules=['conv1', 'conv2']),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=64),
        bbox_head=dict(in_channels=64, fc_out_channels=256)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=300),
                   rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=300), rcnn=dict(max_per_img=100)))

max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[7], gamma=0.1)
]
optim_wrapper = dict(optimizer=dict(lr=0.02))
default_hooks = dict(logger=dict(interval=25),
                     checkpoint=dict(interval=2, max_keep_ckpts=1),
                     trainable_params=dict(type='TrainableParamsHook'))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
