import logging
import os.path as osp
import shutil
from contextlib import contextmanager

import numpy as np
import pytest
from mmengine.logging import MMLogger
from mmrotate.datasets import DOTADataset
from PIL import Image

from mmdeblora.datasets import AnnotationError, CheckedDOTADataset, ImageCheckError
from mmdeblora.datasets.checked_dota import hull_areas
from tests.conftest import TOY_CFG, run_tool, toy_options

GOOD = '10 10 30 10 30 20 10 20 plane 0\n'


def _dataset(root, cls=CheckedDOTADataset, **kw):
    return cls(data_root=str(root), ann_file='annfiles/',
               data_prefix=dict(img_path='images/'), pipeline=[], **kw)


def _write(root, lines, images=('a', 'b')):
    (root / 'annfiles').mkdir(parents=True, exist_ok=True)
    (root / 'images').mkdir(exist_ok=True)
    for name in images:
        Image.new('RGB', (64, 48)).save(root / 'images' / f'{name}.png')
    (root / 'annfiles' / 'a.txt').write_text(GOOD)
    data = GOOD.encode() + (lines if isinstance(lines, bytes) else lines.encode())
    (root / 'annfiles' / 'b.txt').write_bytes(data)
    return str(root / 'annfiles' / 'b.txt')


@contextmanager
def _warnings():
    """The WARNING messages logged through mmengine's current logger."""
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize('line,message', [
    ('10 10 30 10 30 20 10 20 plane\n', 'expected 10 fields'),
    ('10 10 30 10 30 20 10 20 20 20 plane 0\n', 'expected 10 fields'),
    ('10 10 30 10 30 20 10 20 aeroplane 0\n', "unknown class 'aeroplane'"),
    ('10 10 30 1O 30 20 10 20 plane 0\n', "coordinate 4 is not a number: '1O'"),
    ('10 10 30 10 30 20 10 20 plane easy\n', 'difficulty must be an integer'),
    # issue 10: non-finite numbers passed and crashed rotated RoI align
    ('10 10 30 10 nan 20 10 20 plane 0\n', "coordinate 5 is not finite: 'nan'"),
    ('10 10 30 10 30 20 -inf 20 plane 0\n', "coordinate 7 is not finite: '-inf'"),
    # issue 10: zero-area boxes made the loss NaN at the first iteration
    ('100 100 100 100 100 100 100 100 tennis-court 0\n', 'degenerate box'),
    ('0 0 10 10 20 20 30 30 plane 0\n', 'degenerate box'),  # collinear
    ('10 10 30 10 30 10.01 10 10.01 plane 0\n', 'degenerate box'),  # 0.2 px^2 sliver
    # issue 10: a bare UnicodeDecodeError without the file
    (b'10 10 30 10 30 20 10 20 pl\xe4ne 0\n', 'not UTF-8 text (byte 0xe4 at column 27)'),
    ('\n', 'empty line'),
])
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    path = _write(tmp_path, line)
    with pytest.raises(AnnotationError) as err:
        _dataset(tmp_path)
    assert f'{path}:2' in str(err.value) and message in str(err.value)


def test_bad_lines_skip_mode_warns_with_every_file_line(tmp_path):
    path = _write(tmp_path, '100 100 100 100 100 100 100 100 tennis-court 0\n' + GOOD +
                  '10 10 30 10 nan 20 10 20 plane 0\n')
    with _warnings() as logged:
        ds = _dataset(tmp_path, bad_lines='skip')
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    boxes = {info['img_id']: len(info['instances']) for info in infos}
    assert boxes == {'a': 1, 'b': 2}  # GOOD twice in b.txt; the two bad lines left out
    skipped = [m for m in logged if 'skipped 2 bad annotation line' in m]
    assert len(skipped) == 1, logged
    assert f'{path}:2: degenerate box' in skipped[0]
    assert f'{path}:4: coordinate 5 is not finite' in skipped[0]
    with pytest.raises(ValueError, match='bad_lines must be one of'):
        _dataset(tmp_path, bad_lines='ignore')


def test_bow_tie_order_is_not_degenerate():
    """Crossed point order: polygon area 0, but a valid 20x10 box (cv2.minAreaRect)."""
    boxes = np.array([[10, 10, 30, 20, 30, 10, 10, 20],   # bow tie
                      [10, 10, 30, 10, 30, 20, 10, 20],   # the same box in order
                      [0, 0, 10, 0, 0, 10, 2, 2],         # one point inside the triangle
                      [5, 5, 5, 5, 5, 5, 5, 5]], dtype=float)
    assert np.allclose(hull_areas(boxes), [200, 200, 50, 0])


def test_odd_difficulty_and_boxes_outside_warn_once_with_a_count(tmp_path):
    path = _write(tmp_path, '10 10 30 10 30 20 10 20 plane 2\n'
                            '10 10 30 10 30 20 10 20 plane 7\n'
                            '100 100 130 100 130 120 100 120 plane 0\n')
    with _warnings() as logged:
        ds = _dataset(tmp_path)
    assert len(ds) == 2
    difficulty = [m for m in logged if 'difficulty other than 0 / 1' in m]
    assert len(difficulty) == 1 and '2 instance(s)' in difficulty[0]
    assert f'{path}:3: difficulty 7' in difficulty[0]
    outside = [m for m in logged if 'outside their image' in m]
    assert len(outside) == 1 and '1 box(es)' in outside[0]
    assert f'{path}:4: centre (115, 110) outside the 64x48 image' in outside[0]


def test_empty_training_set_names_the_folder(tmp_path):
    (tmp_path / 'annfiles').mkdir()
    (tmp_path / 'images').mkdir()
    for name in 'ab':
        (tmp_path / 'annfiles' / f'{name}.txt').write_text('')
        Image.new('RGB', (8, 8)).save(tmp_path / 'images' / f'{name}.png')
    with pytest.raises(ValueError, match=r'no training instance in .*annfiles/: its 2 '):
        _dataset(tmp_path)
    with pytest.raises(ValueError, match='need at least one array'):  # upstream
        _dataset(tmp_path, DOTADataset, filter_cfg=dict(filter_empty_gt=True))
    assert len(_dataset(tmp_path, test_mode=True)) == 2  # evaluation may have none


def test_missing_renamed_and_corrupt_images_are_listed_at_start(tmp_path):
    _write(tmp_path, '', images=())
    (tmp_path / 'annfiles' / 'c.txt').write_text(GOOD)
    images = tmp_path / 'images'
    Image.new('RGB', (8, 8)).save(images / 'a.jpg')      # renamed: wrong suffix
    (images / 'b.png').write_bytes(b'not a png at all')  # corrupt
    with pytest.raises(ImageCheckError) as err:          # c.png: missing
        _dataset(tmp_path)
    msg = str(err.value)
    assert '3 of 3 image(s)' in msg
    assert f'{images}/a.png: missing (named by {tmp_path}/annfiles/a.txt); found a.jpg' in msg
    assert f'{images}/b.png: does not decode' in msg and f'{images}/c.png: missing' in msg
    # 'exists' only looks for the files; None checks nothing
    with pytest.raises(ImageCheckError, match='2 of 3'):
        _dataset(tmp_path, check_images='exists')
    assert len(_dataset(tmp_path, check_images=None)) == 3


def test_verify_finds_a_truncated_image_the_header_check_misses(tmp_path):
    _write(tmp_path, '')
    png = tmp_path / 'images' / 'b.png'
    Image.effect_noise((64, 48), 50).convert('RGB').save(png)
    png.write_bytes(png.read_bytes()[:-200])
    assert len(_dataset(tmp_path)) == 2  # header: the size decodes
    with pytest.raises(ImageCheckError, match='b.png: does not decode'):
        _dataset(tmp_path, check_images='verify')


def test_upstream_does_not_say_where(tmp_path):
    """Why the subclass exists: upstream fails without naming the file, or not at all."""
    _write(tmp_path, '10 10 30 10 30 20 10 20 aeroplane 0\n')
    with pytest.raises(KeyError) as err:
        _dataset(tmp_path, DOTADataset)
    assert 'b.txt' not in str(err.value)
    _write(tmp_path, '10 10 30 10 30 20 10 20 plane 0 extra\n')
    ds = _dataset(tmp_path, DOTADataset)  # silently drops the extra field
    assert len(ds) == 2


def test_raw_labeltxt_points_at_the_split_tool(tmp_path):
    (tmp_path / 'annfiles').mkdir()
    (tmp_path / 'annfiles' / 'P1.txt').write_text(
        'imagesource:GoogleEarth\ngsd:0.15\n' + GOOD)
    with pytest.raises(AnnotationError, match='img_split.py'):
        _dataset(tmp_path)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='make_toy_dota'):
        _dataset(tmp_path / 'nowhere')


def test_real_dota_samples_load_with_expected_boxes(shared_data):
    root = osp.join(shared_data, 'dota_samples')
    for cls in (DOTADataset, CheckedDOTADataset):
        with _warnings() as logged:
            ds = _dataset(root, cls, diff_thr=0)
        if cls is CheckedDOTADataset:  # full-size labels on thumbnails: warned, not fatal
            assert any('7 box(es)' in m and 'outside their image' in m for m in logged)
        infos = {info['img_id']: info for info in map(ds.get_data_info, range(len(ds)))}
        assert sorted(infos) == ['P0004__1__0___0', 'P2805__1024__0___0']
        p4 = infos['P0004__1__0___0']['instances']
        assert len(p4) == 4 and {i['bbox_label'] for i in p4} == {0}  # plane
        assert p4[0]['bbox'] == [398.0, 716.0, 398.0, 694.0, 464.0, 698.0, 465.0, 718.0]
        assert [i['ignore_flag'] for i in p4] == [0, 0, 1, 0]  # difficulty 1 > diff_thr
        p2805 = infos['P2805__1024__0___0']['instances']
        assert len(p2805) == 4 and {i['bbox_label'] for i in p2805} == {0}
        assert np.allclose(p2805[2]['bbox'][:2], [788.0, 844.0])


@pytest.mark.parametrize('line,message', [
    ('1 2 3 4 5 6 7 8 not-a-class 0\n', 'unknown class'),
    # issue 10: this line gave `loss: nan` at iteration 1, NaN checkpoints and exit code 0
    ('100 100 100 100 100 100 100 100 tennis-court 0\n', 'degenerate box'),
])
def test_malformed_data_stops_train_before_training(tmp_path, toy_root, line, message):
    root = tmp_path / 'data'
    shutil.copytree(toy_root, root)
    ann = sorted((root / 'trainval' / 'annfiles').iterdir())[1]
    with open(ann, 'a') as fh:
        fh.write(line)
    n = len(ann.read_text().splitlines())
    proc = run_tool('train.py', TOY_CFG, '--work-dir', str(tmp_path / 'wd'),
                    *toy_options(str(root)), check=False)
    assert proc.returncode != 0
    assert f'{ann}:{n}: {message}' in proc.stderr
    assert 'Epoch(train)' not in proc.stdout + proc.stderr
    assert not list((tmp_path / 'wd').rglob('*.pth'))
