# LoRA + DRO-LT by the official recipe (dvirsamuel/DRO-LT: README steps 1-2, main.py), in
# the LoRA row's 30 epochs (the joint variant is bias_lora_dro_lt.py):
#  (a) epochs 0-19: the usual CE training, the LoRA row's recipe (1 warm-up epoch, cosine
#      to 0 at epoch 20: a finished CE model, as the official continues one);
#  (b) epochs 20-27: the adapters and the learned eps with CE weighted by n_c / n_max plus
#      the robust loss ('--feat_loss ce_lt,robust_loss'), class-aware sampling with 4
#      crops per class draw ('--feat_sampler resample,4'), classifier frozen; SGD at a
#      constant 0.0025 (the official feat_lr / CE lr = 0.005 / 0.1);
#  (c) epochs 28-29: the linear classifier alone with plain CE ('--cls_loss ce'), still on
#      the class-aware sampler (main.py trains the classifier on the feature loader),
#      adapters frozen and the backbone in eval mode (frozen BN statistics, as
#      freeze_layers); SGD at a constant 0.005 (cls_lr / CE lr = 0.01 / 0.1).
# Phase lengths keep the official shares of its 200 + 80 + 20 epochs (2/3, 4/15, 1/15);
# an epoch is one pass of the data set's length under either sampler, so the row has the
# LoRA row's 30 x 56 iterations. Not kept: the official picks the best phase-(b) model by
# a validation metric before (c); every row here reports its last epoch.
_base_ = './bias_lora.py'

model = dict(head=dict(
    type='DROLTClsHead', bank_size=64, dro=False, ce_weighting='none', class_counts='auto',
    loss_dro=dict(temperature=1.0, epsilon=1.0, learn_epsilon=True, loss_weight=1.0)))

ce_epochs, dro_epochs = 20, 8   # phase (c): max_epochs - ce_epochs - dro_epochs = 2
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=ce_epochs, eta_min=0)
]
_sgd = dict(type='SGD', momentum=0.9, weight_decay=5e-4)
custom_hooks = [
    dict(type='TrainableParamsHook'),
    dict(type='ClassStatsHook', groups='dota'),  # n_c for the CE weighting
    dict(type='TrainingPhasesHook', phases=[
        dict(name='dro_lt', begin=ce_epochs,
             sampler=dict(type='mmdet.ClassAwareSampler', num_sample_class=4),
             trainable=['backbone', 'head.loss_dro'],
             model_options=dict(dro=True, ce_weighting='lt'),
             optim_wrapper=dict(optimizer=dict(_sgd, lr=0.0025))),
        dict(name='classifier', begin=ce_epochs + dro_epochs,  # the sampler stays
             trainable=['head.fc'], eval_modules=['backbone'],
             model_options=dict(dro=False, ce_weighting='none'),
             optim_wrapper=dict(optimizer=dict(_sgd, lr=0.005))),
    ]),
]
