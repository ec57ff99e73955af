# LoRA + logit adjustment + debLoRA: users combine, and a representation method that adds
# nothing on top of the cheapest classifier fix is not worth its cost (issue 17 §4). The
# debLoRA recipe of bias_lora_deblora.py with the head's loss of bias_lora_logit_adjust.py
# (tau = 1, priors from ClassStatsHook) in both stages.
_base_ = './bias_lora_deblora.py'

model = dict(head=dict(loss=dict(type='LogitAdjustLoss', tau=1.0, class_counts='auto')))
custom_hooks = [*_base_.custom_hooks, dict(type='ClassStatsHook', groups='dota')]
