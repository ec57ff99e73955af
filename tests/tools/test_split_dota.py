"""tools/data/dota/split_dota.py on a raw-format DOTA tree (real image, labelTxt with the
imagesource/gsd header), then the split read back by CheckedDOTADataset, and the
unlabelled test patches through the submission config's test data and evaluator
(merged Task1 files), as a user runs them."""
import glob
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO, TOY_CFG, run_tool

SPLIT = osp.join(REPO, 'tools', 'data', 'dota', 'split_dota.py')
SUBMISSION_CFG = osp.join(REPO, 'configs', 'deblora', 'oriented_rcnn_sd_dota_test_submission.py')
# one real aerial image (1616 x 1565) per split, two labelled objects on different patches
LABELS = ('imagesource:GoogleEarth\ngsd:0.146343590398\n'
          '100 100 200 100 200 150 100 150 small-vehicle 0\n'
          '1300 1200 1400 1200 1400 1300 1300 1300 plane 1\n')


def _split(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SPLIT, *args, '--nproc', '1'], cwd='/',
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def raw_dota(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp('raw_dota')
    demo = osp.join(shared_data, 'dota_demo.jpg')
    for split, name in (('train', 'P9001'), ('val', 'P9002'), ('test', 'P9003')):
        os.makedirs(root / split / 'images')
        os.symlink(demo, root / split / 'images' / f'{name}.jpg')
        if split != 'test':
            os.makedirs(root / split / 'labelTxt')
            (root / split / 'labelTxt' / f'{name}.txt').write_text(LABELS)
    return str(root)


@pytest.fixture(scope='module')
def split_ss(raw_dota, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('split') / 'split_ss_dota')
    proc = _split(raw_dota, '--out', out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_single_scale_patches_and_labels(split_ss):
    for split, name in (('train', 'P9001'), ('val', 'P9002'), ('test', 'P9003')):
        patches = sorted(osp.basename(p) for p in glob.glob(f'{split_ss}/{split}/images/*'))
        # 1024 windows with gap 200 (step 824) over 1616 x 1565: x 0, 592 and y 0, 541
        assert patches == [f'{name}__1024__{x}___{y}.png'
                           for x, y in ((0, 0), (0, 541), (592, 0), (592, 541))]
    ann = open(f'{split_ss}/train/annfiles/P9001__1024__592___541.txt').read().split('\n')
    # the plane at x 1300-1400, y 1200-1300 in patch coordinates; no header lines
    assert '708.0 659.0 808.0 659.0 808.0 759.0 708.0 759.0 plane 1' in ann
    assert not any(line.startswith(('imagesource', 'gsd')) for line in ann)


def test_split_is_read_by_the_dota_configs_datasets(split_ss):
    from mmrotate.registry import DATASETS
    from mmrotate.utils import register_all_modules

    import mmdeblora  # noqa: F401
    register_all_modules()
    cfg = Config.fromfile(SUBMISSION_CFG)
    for loader, n_objects in (('train_dataloader', 2), ('val_dataloader', 2)):
        ds_cfg = cfg[loader].dataset
        ds_cfg.update(data_root=split_ss + '/', pipeline=[])
        ds = DATASETS.build(ds_cfg)
        assert ds.ann_file.endswith(('train/annfiles/', 'val/annfiles/'))
        infos = [ds.get_data_info(i) for i in range(len(ds))]
        labels = [i['bbox_label'] for d in infos for i in d['instances']]
        assert len(labels) == n_objects
    test = cfg.test_dataloader.dataset
    test.update(data_root=split_ss + '/', pipeline=[])
    ds = DATASETS.build(test)  # unlabelled: no annotation folder is read
    ids = sorted(ds.get_data_info(i)['img_id'] for i in range(len(ds)))
    assert ids[0] == 'P9003__1024__0___0' and len(ids) == 4


@pytest.mark.slow
def test_multi_scale_and_refusal_to_overwrite(raw_dota, tmp_path):
    out = str(tmp_path / 'split_ms_dota')
    proc = _split(raw_dota, '--out', out, '--ms', '--splits', 'test')
    assert proc.returncode == 0, proc.stderr[-3000:]
    sizes = {osp.basename(p).split('__')[1] for p in glob.glob(f'{out}/test/images/*')}
    assert sizes == {'2048', '1024', '682'}  # 1024 / rate for rates 0.5, 1.0, 1.5
    marker = osp.join(out, 'test', 'images', 'keep.txt')
    open(marker, 'w').close()
    again = _split(raw_dota, '--out', out, '--ms', '--splits', 'test')
    assert again.returncode != 0 and 'already split' in again.stderr
    assert osp.exists(marker)
    assert _split(raw_dota, '--out', out, '--ms', '--splits', 'test', '--force').returncode == 0
    assert not osp.exists(marker)


def test_missing_labels_are_named(raw_dota, tmp_path):
    proc = _split(raw_dota, '--out', str(tmp_path / 'o'), '--splits', 'val',
                  '--ann-subdir', 'labelTxt-v1.5')
    assert proc.returncode != 0 and 'labelTxt-v1.5' in proc.stderr


@pytest.mark.slow
def test_submission_files_merge_patches_to_full_images(split_ss, tmp_path):
    """tools/test.py with the submission config's test data and evaluator (on a small
    random-weight Oriented R-CNN): Task1 files name the full image, not its patches."""
    from mmrotate.registry import MODELS
    from mmrotate.utils import register_all_modules

    import mmdeblora  # noqa: F401
    register_all_modules()
    toy = Config.fromfile(TOY_CFG)
    ckpt = str(tmp_path / 'random.pth')
    torch.manual_seed(0)
    torch.save({'state_dict': MODELS.build(toy.model).state_dict(), 'meta': {}}, ckpt)

    sub = Config.fromfile(SUBMISSION_CFG)
    loader = sub.test_dataloader.to_dict()
    loader.update(num_workers=0, persistent_workers=False)
    loader['dataset']['data_root'] = split_ss + '/'
    prefix = str(tmp_path / 'submission' / 'Task1')
    evaluator = dict(sub.test_evaluator.to_dict(), outfile_prefix=prefix, _delete_=True)
    cfg = tmp_path / 'submission_cfg.py'
    cfg.write_text(f'_base_ = [{TOY_CFG!r}]\n'
                   f'test_dataloader = {loader!r}\n'
                   f'test_evaluator = {evaluator!r}\n'
                   # fewer boxes per patch: the merge, not the model, is under test
                   'model = dict(test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=50),\n'
                   '                           rcnn=dict(max_per_img=100)))\n')
    run_tool('test.py', str(cfg), ckpt, '--work-dir', str(tmp_path / 'wd'))
    files = sorted(glob.glob(osp.join(prefix, 'Task1_*.txt')))
    assert len(files) == 15 and osp.isfile(osp.join(prefix, 'Task1.zip'))
    lines = [line.split() for f in files for line in open(f).read().splitlines()]
    assert lines, 'a random-weight model still scores above score_thr'
    assert {line[0] for line in lines} == {'P9003'}  # merged: the full image's name
    assert all(len(line) == 10 for line in lines)  # name, score, 4 corners
    xs = [float(v) for line in lines for v in line[2::2]]
    assert max(xs) > 1024  # patch detections shifted by the patch offsets
