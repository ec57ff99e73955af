# Task1 submission files for DOTA-v1.0's unlabelled `test` split, from a model trained
# with oriented_rcnn_sd_dota.py (for the evaluation server, train it on `trainval`:
# docs/data.md). Same model; only the test data and evaluator change:
# - the test patches (tools/data/dota/split_dota.py --splits test) are read without
#   annotations (ann_file='', the pipeline loads no labels);
# - mmrotate's DOTAMetric merges the patch detections back to full images (rotated NMS)
#   and writes <outfile_prefix>/Task1_<class>.txt and a zip for the server; nothing is
#   scored here. It refuses an outfile_prefix that exists (pick a new one per run with
#   --cfg-options test_evaluator.outfile_prefix=...).
#   .venv/bin/python tools/test.py configs/deblora/oriented_rcnn_sd_dota_test_submission.py CKPT
# Another config's submission variant is this file with that config as `_base_`.
_base_ = './oriented_rcnn_sd_dota.py'

test_dataloader = dict(
    dataset=dict(ann_file='', data_prefix=dict(img_path='test/images/'), test_mode=True,
                 pipeline={{_base_.test_pipeline}}))  # mmrotate's: no LoadAnnotations
test_evaluator = dict(
    _delete_=True, type='DOTAMetric', format_only=True, merge_patches=True,
    outfile_prefix='work_dirs/oriented_rcnn_sd_dota_test_submission/Task1')

preflight_hint = (
    'Needs Stable Diffusion v1.5 in diffusers layout, the test patches of DOTA-v1.0 '
    '(tools/data/dota/split_dota.py --splits test) and a checkpoint: --cfg-options '
    'model.backbone.backbone.pretrained=/path/sd-v1-5 '
    'test_dataloader.dataset.data_root=/path/split_ss_dota/')
