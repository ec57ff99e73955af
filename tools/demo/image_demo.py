"""Draw a rotated detector's predictions on one image.

``.venv/bin/python tools/demo/image_demo.py IMAGE CONFIG CHECKPOINT [--out-file F.png]
[--score-thr 0.3] [--device cpu] [--force]``

mmdet's ``DetInferencer`` does not run mmrotate 1.x models, so this is mmrotate's
``demo/image_demo.py``: ``mmdet.apis.inference_detector`` and mmrotate's
``RotLocalVisualizer``, with the loading of our tools. The checkpoint loads weights-only
(``mmdeblora.utils.checkpoint``), a stage-2 debLoRA checkpoint re-enters stage 2, and a
checkpoint that does not fit the config's model stops with what did not load
(``CheckpointMismatchError``) instead of drawing the boxes of a half-random model, as
``init_detector``'s non-strict load would. Class names and colours come from the config's
test data set (``init_detector`` falls back to COCO's names when a checkpoint has none).
The image is resized to the config's test scale: split a large scene first
(docs/ecosystem.md, "Large images").
"""
import argparse
import copy
import os.path as osp
from collections import Counter
from typing import Optional, Sequence

import torch.nn as nn

from mmdeblora.utils import register_all_modules
from mmdeblora.utils.launch import CfgOptionsAction


def init_rotated_detector(config: str, checkpoint: str, device: str = 'cpu',
                          cfg_options: Optional[dict] = None) -> nn.Module:
    """``mmdet.apis.init_detector`` for our configs: weights-only, strict, stage-2 aware."""
    from mmengine.config import Config
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmrotate.registry import DATASETS

    from mmdeblora.engine.stage2 import load_debias_model
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmrotate'))  # inference_detector needs it
    # a checkpoint that does not fit raises CheckpointMismatchError, naming the tensors
    model = revert_sync_batchnorm(load_debias_model(cfg, checkpoint))
    data_cfg = copy.deepcopy(cfg.test_dataloader.dataset)
    data_cfg['lazy_init'] = True  # only the metainfo: no annotation or image is read
    metainfo = DATASETS.build(data_cfg).metainfo
    model.dataset_meta = {'classes': metainfo['classes'],
                          'palette': metainfo.get('palette', 'random')}
    model.cfg = cfg  # inference_detector reads the test pipeline from it
    return model.to(device).eval()


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw a rotated detector\'s predictions')
    parser.add_argument('img', help='image file')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-file', help='where to write the drawn image '
                        '(default: <image name>_pred.png in the current folder)')
    parser.add_argument('--force', action='store_true', help='overwrite --out-file')
    parser.add_argument('--score-thr', type=float, default=0.3, help='draw boxes scoring '
                        'at least this')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction,
                        help='override config settings, key=value')
    args = parser.parse_args(argv)
    if args.out_file is None:
        args.out_file = osp.splitext(osp.basename(args.img))[0] + '_pred.png'
    if osp.exists(args.out_file) and not args.force:
        parser.error(f'--out-file {args.out_file} exists; pass --force to overwrite it')
    for name in ('img', 'config', 'checkpoint'):
        if not osp.isfile(getattr(args, name)):
            parser.error(f'{name} {getattr(args, name)} does not exist')
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    register_all_modules()
    import mmcv
    from mmdet.apis import inference_detector
    from mmrotate.visualization import RotLocalVisualizer

    model = init_rotated_detector(args.config, args.checkpoint, args.device, args.cfg_options)
    result = inference_detector(model, args.img)
    visualizer = RotLocalVisualizer(name='image_demo')
    visualizer.dataset_meta = model.dataset_meta
    img = mmcv.imread(args.img, channel_order='rgb')
    visualizer.add_datasample('result', img, data_sample=result, draw_gt=False, show=False,
                              pred_score_thr=args.score_thr)
    mmcv.imwrite(visualizer.get_image()[..., ::-1], args.out_file)

    pred = result.pred_instances
    kept = pred[pred.scores >= args.score_thr]
    classes = model.dataset_meta['classes']
    counts = Counter(classes[int(label)] for label in kept.labels)
    print(f'{len(kept)} of {len(pred)} detections score >= {args.score_thr}'
          + (': ' + ', '.join(f'{n} {c}' for c, n in counts.most_common()) if counts else ''))
    print(f'wrote {args.out_file}')


if __name__ == '__main__':
    main()
