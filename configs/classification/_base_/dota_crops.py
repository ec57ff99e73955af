# Object crops of split DOTA-v1.0 (docs/data.md: tools/data/dota/split_dota.py ->
# data/split_ss_dota/{train,val,test}) for Stable Diffusion features: 256 px upright crops
# (the box frame plus a 25 % context margin), objects under 8 px and difficult ones left
# out, cached under data/crop_cache_dota. DOTA train -> train / val (seeded, stratified
# 10 %), DOTA val -> test: the test split is never used for validation.
data_root = 'data/split_ss_dota/'
crop = dict(crop_size=256, context=0.25, min_size=8.0, keep_difficult=False,
            cache_dir='data/crop_cache_dota')
folders = dict(train='train', test='val')

# SD's VAE reads images in [-1, 1]; crops are cached BGR, as OpenCV reads
data_preprocessor = dict(num_classes=15, mean=[127.5, 127.5, 127.5],
                         std=[127.5, 127.5, 127.5], to_rgb=True)

train_pipeline = [
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [dict(type='PackInputs')]

dataset = dict(type='DOTACropDataset', data_root=data_root, folders=folders, **crop)
train_dataloader = dict(
    batch_size=32,
    num_workers=4,
    persistent_workers=True,
    dataset=dict(dataset, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=64,
    num_workers=4,
    persistent_workers=True,
    dataset=dict(dataset, split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
test_dataloader = dict(val_dataloader,
                       dataset=dict(dataset, split='test', pipeline=test_pipeline))
val_evaluator = dict(type='GroupF1Metric')
test_evaluator = val_evaluator
