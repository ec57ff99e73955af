# cLoRA: one LoRA adapter per class group (head, middle, tail; rank 8 each, the LoRA row's
# targets), every crop run through all three; class c's logit comes from its group's
# adapter, in training and at test time (CLoRABackbone + CLoRAClsHead). About 3x the LoRA
# row's adapter parameters and compute. routes=<15 class names> with
# head routes='classes' gives one adapter per class (15x).
_base_ = './bias_lora.py'

model = dict(
    backbone=dict(type='CLoRABackbone', routes=['head', 'middle', 'tail']),
    head=dict(type='CLoRAClsHead', routes='groups', groups='dota'))
