# Oriented R-CNN on the toy DOTA with LoRA (rank 8, peft Conv2d LoRA on every conv1/conv2 of
# the ResNet-18, stem included) and the base convs frozen.
# A frozen *random* ResNet learns poorly, so the norm layers stay trainable
# (trainable_extra) and the recommended use is to start from a trained toy model:
#   --cfg-options model.backbone.pretrained=work_dirs/oriented_rcnn_r18_toy/epoch_6.pth
# (its `backbone.` keys are loaded into the ResNet before the adapters are injected).
_base_ = './oriented_rcnn_r18_toy.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='LoRABackbone',
        backbone={{_base_.model.backbone}},
        pretrained=None,
        rank=8,
        alpha=16,
        target_modules=['conv1', 'conv2'],
        trainable_extra=[r'(.*\.)?(bn\d|downsample\.1)\.(weight|bias)']))
