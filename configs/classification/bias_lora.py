# LoRA row: peft LoRA (rank 8) on every 3x3 conv of the frozen foundation (stem included),
# the linear head trained; norm affine weights frozen, their running statistics follow
# the target data. The stage-1 model of the de-biasing rows.
_base_ = ['./_base_/default_runtime.py', './_base_/resnet_tiny.py',
          './_base_/schedule_cpu.py', './_base_/bias_benchmark.py']

model = dict(backbone=dict(
    _delete_=True,
    type='LoRABackbone',
    backbone={{_base_.model.backbone}},
    pretrained={{_base_.foundation}},
    rank=8,
    alpha=16,
    target_modules=['conv1', 'conv2']))
