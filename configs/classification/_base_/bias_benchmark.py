# The bias benchmark's target domain (tools/data/make_bias_benchmark.py): 32 px upright
# crops of DOTA-format aerial scenes, 15 DOTA classes, long-tailed training split,
# class-balanced validation and test splits, scored by macro-F1 per head / middle / tail.
data_root = 'data/bias_benchmark/target/'
foundation = 'data/bias_benchmark/foundation.pth'
crop = dict(crop_size=32, context=0.25, min_size=2, cache_dir='data/crop_cache')
folders = dict(train='train', val='val', test='test')

data_preprocessor = dict(
    num_classes=15,
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True)  # crops are cached BGR, as OpenCV reads

train_pipeline = [
    dict(type='RandomCrop', crop_size=32, padding=2, padding_mode='edge'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

dataset = dict(type='DOTACropDataset', data_root=data_root, folders=folders, **crop)
train_dataloader = dict(
    batch_size=64,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(dataset, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=256,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(dataset, split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
test_dataloader = dict(val_dataloader,
                       dataset=dict(dataset, split='test', pipeline=test_pipeline))
val_evaluator = dict(type='GroupF1Metric')
test_evaluator = val_evaluator
