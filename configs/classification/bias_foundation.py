# The foundation of the bias benchmark: the small ResNet trained from scratch on the
# balanced source domain (12 object-centric classes, random colours and textures).
# tools/data/make_bias_benchmark.py runs this config and keeps the backbone, cached under
# a fingerprint of the source and this recipe, as data/bias_benchmark/foundation.pth.
_base_ = ['./_base_/default_runtime.py', './_base_/resnet_tiny.py',
          './_base_/schedule_cpu.py']

source_root = 'data/bias_benchmark/source/'
num_classes = 12
model = dict(head=dict(num_classes=num_classes))
data_preprocessor = dict(num_classes=num_classes, mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], to_rgb=True)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomCrop', crop_size=32, padding=4, padding_mode='reflect'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=64, num_workers=0, persistent_workers=False,
    dataset=dict(type='CustomDataset', data_root=source_root, data_prefix='train',
                 pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=256, num_workers=0, persistent_workers=False,
    dataset=dict(type='CustomDataset', data_root=source_root, data_prefix='val',
                 pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator
optim_wrapper = dict(optimizer=dict(lr=0.1))
