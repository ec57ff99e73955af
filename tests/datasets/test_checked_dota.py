import os.path as osp
import shutil

import numpy as np
import pytest
from mmrotate.datasets import DOTADataset

from mmdeblora.datasets import AnnotationError, CheckedDOTADataset
from tests.conftest import TOY_CFG, run_tool, toy_options

GOOD = '10 10 30 10 30 20 10 20 plane 0\n'


def _dataset(root, cls=CheckedDOTADataset, **kw):
    return cls(data_root=str(root), ann_file='annfiles/',
               data_prefix=dict(img_path='images/'), pipeline=[], **kw)


def _write(root, lines):
    (root / 'annfiles').mkdir(parents=True, exist_ok=True)
    (root / 'images').mkdir(exist_ok=True)
    (root / 'annfiles' / 'a.txt').write_text(GOOD)
    (root / 'annfiles' / 'b.txt').write_text(GOOD + lines)
    return str(root / 'annfiles' / 'b.txt')


@pytest.mark.parametrize('line,message', [
    ('10 10 30 10 30 20 10 20 plane\n', 'expected 10 fields'),
    ('10 10 30 10 30 20 10 20 20 20 plane 0\n', 'expected 10 fields'),
    ('10 10 30 10 30 20 10 20 aeroplane 0\n', "unknown class 'aeroplane'"),
    ('10 10 30 1O 30 20 10 20 plane 0\n', "coordinate 4 is not a number: '1O'"),
    ('10 10 30 10 30 20 10 20 plane easy\n', 'difficulty must be an integer'),
])
def test_malformed_line_names_file_and_line(tmp_path, line, message):
    path = _write(tmp_path, line)
    with pytest.raises(AnnotationError) as err:
        _dataset(tmp_path)
    assert f'{path}:2' in str(err.value) and message in str(err.value)


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
        ds = _dataset(root, cls, diff_thr=0)
        infos = {info['img_id']: info for info in map(ds.get_data_info, range(len(ds)))}
        assert sorted(infos) == ['P0004__1__0___0', 'P2805__1024__0___0']
        p4 = infos['P0004__1__0___0']['instances']
        assert len(p4) == 4 and {i['bbox_label'] for i in p4} == {0}  # plane
        assert p4[0]['bbox'] == [398.0, 716.0, 398.0, 694.0, 464.0, 698.0, 465.0, 718.0]
        assert [i['ignore_flag'] for i in p4] == [0, 0, 1, 0]  # difficulty 1 > diff_thr
        p2805 = infos['P2805__1024__0___0']['instances']
        assert len(p2805) == 4 and {i['bbox_label'] for i in p2805} == {0}
        assert np.allclose(p2805[2]['bbox'][:2], [788.0, 844.0])


def test_malformed_data_stops_train_before_training(tmp_path, toy_root):
    root = tmp_path / 'data'
    shutil.copytree(toy_root, root)
    ann = sorted((root / 'trainval' / 'annfiles').iterdir())[1]
    with open(ann, 'a') as fh:
        fh.write('1 2 3 4 5 6 7 8 not-a-class 0\n')
    n = len(ann.read_text().splitlines())
    proc = run_tool('train.py', TOY_CFG, '--work-dir', str(tmp_path / 'wd'),
                    *toy_options(str(root)), check=False)
    assert proc.returncode != 0
    assert f'{ann}:{n}: unknown class' in proc.stderr
    assert 'Epoch(train)' not in proc.stdout + proc.stderr
    assert not list((tmp_path / 'wd').rglob('*.pth'))
