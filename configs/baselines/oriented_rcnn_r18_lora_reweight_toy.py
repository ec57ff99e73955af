# (c) LoRA + Reweight on the toy data: inverse-frequency weights in the RoI classifier's
# softmax cross-entropy; the counts come from the training set (ClassStatsHook).
_base_ = './oriented_rcnn_r18_lora_toy.py'

model = dict(roi_head=dict(bbox_head=dict(loss_cls=dict(
    _delete_=True, type='ReweightLoss', class_counts='auto', mode='inverse',
    bg_weight=1.0))))
custom_hooks = [dict(type='ClassStatsHook', groups='dota')]
