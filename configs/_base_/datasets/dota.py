# Split DOTA-v1.0 (1024 x 1024 patches, gap 200; tools/data/dota/split_dota.py and
# docs/data.md): data only. Trains on `train` and validates and tests on DOTA's labelled
# `val` split, so the (group) mAP it prints is measured on images the model never trained
# on. For the evaluation server, train on `trainval` and write Task1 submission files for
# the unlabelled `test` split (../../deblora/oriented_rcnn_sd_dota_test_submission.py).
# mmrotate's DOTA settings otherwise: 1024 px, flips, batch 2, CheckedDOTADataset for
# readable annotation errors, GroupDOTAMetric for head / middle / tail mAP.
_base_ = 'mmrotate::_base_/datasets/dota.py'

# mmdeblora.safe_loading: weights-only checkpoint loads also under mmengine's / mmrotate's
# own tools (ours call mmdeblora.utils.register_all_modules); README, "Using it"
custom_imports = dict(imports=['mmdeblora', 'mmdeblora.safe_loading'],
                      allow_failed_imports=False)

data_root = 'data/split_ss_dota/'
dataset_type = 'CheckedDOTADataset'

train_dataloader = dict(
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='train/annfiles/',
                 data_prefix=dict(img_path='train/images/')))
val_dataloader = dict(
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='val/annfiles/',
                 data_prefix=dict(img_path='val/images/')))
test_dataloader = val_dataloader

val_evaluator = dict(type='GroupDOTAMetric', groups='dota')
test_evaluator = val_evaluator
