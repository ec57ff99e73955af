# Oriented R-CNN on the toy DOTA with LoRA (rank 8, peft Conv2d LoRA on every conv1/conv2 of
# the ResNet-18, stem included) and the base convs frozen.
# A frozen *random* ResNet learns poorly, so the norm layers stay trainable
# (trainable_extra) and the run starts from a trained toy model, the starting point of the
# toy tables (docs/baselines.md): oriented_rcnn_r18_toy.py trained with seed 0 by
#   bash tools/make_toy_foundation.sh      # -> work_dirs/toy_foundation/epoch_6.pth
# (its `backbone.` keys are loaded into the ResNet before the adapters are injected).
# Without that file tools/train.py stops before building anything and says so; a frozen
# random base instead: --cfg-options model.backbone.pretrained=None
_base_ = './oriented_rcnn_r18_toy.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='LoRABackbone',
        backbone={{_base_.model.backbone}},
        pretrained='work_dirs/toy_foundation/epoch_6.pth',
        rank=8,
        alpha=16,
        target_modules=['conv1', 'conv2'],
        trainable_extra=[r'(.*\.)?(bn\d|downsample\.1)\.(weight|bias)']))

# logs the trainable / total parameter counts before training (and writes
# <work_dir>/trainable_params.json), as the classification configs do; a default hook,
# so configs that set their own custom_hooks keep it
default_hooks = dict(trainable_params=dict(type='TrainableParamsHook'))

preflight_hint = (
    'model.backbone.pretrained: the toy LoRA configs start from the trained toy model of the '
    'toy tables; make it with `bash tools/make_toy_foundation.sh` (seed 0, writes '
    'work_dirs/toy_foundation/epoch_6.pth), or pass --cfg-options '
    'model.backbone.pretrained=None for a frozen random base')
