# Object crops of split DOTA-v1.0 (docs/data.md: tools/data/dota/split_dota.py ->
# data/split_ss_dota/{train,val,test}) for Stable Diffusion features: the bias
# benchmark's data settings with 256 px upright crops (the box frame plus a 25 % context
# margin), objects under 8 px and difficult ones left out, cached under
# data/crop_cache_dota. DOTA train -> train / val (seeded, stratified 10 %), DOTA val ->
# test: the test split is never used for validation.
_base_ = './bias_benchmark.py'

data_root = 'data/split_ss_dota/'
crop = dict(crop_size=256, context=0.25, min_size=8.0, keep_difficult=False,
            cache_dir='data/crop_cache_dota')
folders = dict(_delete_=True, train='train', test='val')

# SD's VAE reads images in [-1, 1]; crops are cached BGR, as OpenCV reads
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5])

train_pipeline = [
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
dataset = dict(data_root=data_root, folders=folders, **crop)
loader = dict(num_workers=4, persistent_workers=True)
train_dataloader = dict(loader, batch_size=32,
                        dataset=dict(dataset, pipeline=train_pipeline))
val_dataloader = dict(loader, batch_size=64, dataset=dataset)
test_dataloader = val_dataloader
