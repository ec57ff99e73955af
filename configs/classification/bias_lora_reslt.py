# LoRA + ResLT (Cui et al., TPAMI 2022): three branches (all / middle+tail / tail) on the
# pooled feature and one shared linear classifier, fused logits, beta = 0.9 as the
# detection baseline. Groups: the seed paper's DOTA groups, from ClassStatsHook.
_base_ = './bias_lora.py'

model = dict(head=dict(type='ResLTClsHead', beta=0.9, branch_type='bn'))
custom_hooks = [dict(type='TrainableParamsHook'),
                dict(type='ClassStatsHook', groups='dota')]
