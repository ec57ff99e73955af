# Detection benchmark, LoRA + Reweight: inverse-frequency weights in the RoI classifier's
# softmax cross-entropy; the counts come from the training scenes (ClassStatsHook).
_base_ = './bias_det_lora.py'

model = dict(roi_head=dict(bbox_head=dict(loss_cls=dict(
    _delete_=True, type='ReweightLoss', class_counts='auto', mode='inverse',
    bg_weight=1.0))))
custom_hooks = [dict(type='ClassStatsHook', groups='dota')]
