# The generated long-tailed DOTA (tools/data/make_toy_dota.py) on top of mmrotate's
# Oriented R-CNN. mmengine forbids two bases that both define the dataloaders and
# mmrotate ships no model-only base, so this layer switches mmrotate's DOTA settings to
# the toy data and the toy configs chain through it.
_base_ = 'mmrotate::oriented_rcnn/oriented-rcnn-le90_r50_fpn_1x_dota.py'

custom_imports = dict(imports=['mmdeblora'], allow_failed_imports=False)

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
