# The generated long-tailed DOTA (tools/data/make_toy_dota.py): data only (datasets,
# pipelines, loaders, evaluators), no model and no schedule, so it can be a base beside
# any detector's model base, e.g.
#   _base_ = ['../_base_/models/oriented_rcnn_le90_r50_fpn.py',
#             '../_base_/datasets/toy_dota.py',
#             'mmrotate::_base_/schedules/schedule_1x.py',
#             'mmrotate::_base_/default_runtime.py']
# It changes mmrotate's DOTA data settings to the toy data: 256 px images, the labelled
# `test` split for validation and testing, CheckedDOTADataset and GroupDOTAMetric.
_base_ = 'mmrotate::_base_/datasets/dota.py'

# mmdeblora.safe_loading: weights-only checkpoint loads also under mmengine's / mmrotate's
# own tools (ours call mmdeblora.utils.register_all_modules); README, "Using it"
custom_imports = dict(imports=['mmdeblora', 'mmdeblora.safe_loading'],
                      allow_failed_imports=False)

data_root = 'data/toy_dota/'
img_scale = (256, 256)
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
# the toy test split is labelled, so its pipeline loads the annotations
test_pipeline = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='mmdet.Resize', scale=img_scale, keep_ratio=True),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=4, num_workers=2,
    dataset=dict(type=dataset_type, data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='test/annfiles/',
                 data_prefix=dict(img_path='test/images/'), pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='GroupDOTAMetric', groups='dota', nproc=2)
test_evaluator = val_evaluator
