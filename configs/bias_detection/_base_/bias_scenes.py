# The bias benchmark's target scenes as a detection data set (tools/data/make_bias_benchmark.py
# writes them in the split-DOTA format: 128 px scenes, rotated boxes, DOTA's 15 classes,
# tail classes drawn as their head / middle siblings plus one cue). Data only: trains on
# the long-tailed `train` scenes, validates on the class-balanced `val` scenes and tests on
# the class-balanced `test` scenes (never used for validation); head / middle / tail mAP
# with the DOTA grouping, which is the benchmark's own (target.json `groups`).
_base_ = 'mmrotate::_base_/datasets/dota.py'

# mmdeblora.safe_loading: weights-only checkpoint loads also under mmengine's / mmrotate's
# own tools (ours call mmdeblora.utils.register_all_modules); README, "Using it"
custom_imports = dict(imports=['mmdeblora', 'mmdeblora.safe_loading'],
                      allow_failed_imports=False)

data_root = 'data/bias_benchmark/target/'
foundation = 'data/bias_benchmark/foundation.pth'
img_scale = (128, 128)
dataset_type = 'CheckedDOTADataset'

train_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.RandomFlip', prob=0.75,
         direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='mmdet.PackDetInputs')
]
# val and test scenes are labelled: their pipeline loads the annotations
test_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=8, num_workers=2,
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='train/annfiles/',
                 data_prefix=dict(img_path='train/images/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=2,
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='val/annfiles/',
                 data_prefix=dict(img_path='val/images/'), pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=8, num_workers=2,
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='test/annfiles/',
                 data_prefix=dict(img_path='test/images/'), pipeline=test_pipeline))

# nproc=1: in-process TP / FP counting (GroupDOTAMetric), no spawned pool for 261 scenes
val_evaluator = dict(type='GroupDOTAMetric', groups='dota', nproc=1)
test_evaluator = val_evaluator
