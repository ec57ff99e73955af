import glob
import os
import os.path as osp
import shutil

import numpy as np
import pytest

from mmdeblora.datasets import (DOTA_CLASSES, AnnotationError, DOTACropDataset, crop_cache,
                                resolve_groups)
from mmdeblora.datasets.crop_split import source_image, stratified_group_split

DEFAULT_SCOPE = 'mmpretrain'  # set around each test by tests/conftest.py

TOY_FOLDERS = dict(train='trainval', test='test')


def _ds(root, cache, split='train', **kw):
    kw = dict(dict(folders=TOY_FOLDERS, crop_size=16, cache_dir=str(cache),
                   pipeline=[dict(type='PackInputs')]), **kw)
    return DOTACropDataset(data_root=root, split=split, **kw)


def _n_boxes(folder, difficult=None):
    n = 0
    for txt in glob.glob(osp.join(folder, 'annfiles', '*.txt')):
        with open(txt) as fh:
            n += sum(1 for line in fh
                     if difficult is None or line.split()[9] == str(difficult))
    return n


def _copy_toy(toy_root, dst):
    shutil.copytree(toy_root, dst)
    return str(dst)


def test_splits_cover_the_folders_and_never_mix(toy_root, tmp_path):
    train, val, test = (_ds(toy_root, tmp_path, s) for s in ('train', 'val', 'test'))
    assert len(train) + len(val) == _n_boxes(osp.join(toy_root, 'trainval'))
    assert len(test) == _n_boxes(osp.join(toy_root, 'test'))
    infos = {s: [d.get_data_info(i) for i in range(len(d))]
             for s, d in (('train', train), ('val', val), ('test', test))}
    imgs = {s: {i['img_id'] for i in v} for s, v in infos.items()}
    assert not imgs['train'] & imgs['val']                  # whole images per side
    assert not (imgs['train'] | imgs['val']) & imgs['test']  # test is its own folder
    item = train[0]
    assert tuple(item['inputs'].shape) == (3, 16, 16)
    assert int(item['data_samples'].gt_label) == infos['train'][0]['gt_label']
    assert train.metainfo['groups'] == resolve_groups(DOTA_CLASSES, spec='dota')
    assert sum(train.metainfo['counts']) == len(train)
    with pytest.raises(ValueError, match='test data is never used'):
        _ds(toy_root, tmp_path, folders=dict(train='test', test='test'))


def test_stratified_split_is_seeded_keeps_groups_and_shares():
    rng = np.random.RandomState(0)
    groups = [f'P{i:04d}' for i in rng.randint(0, 400, 3000)]
    labels = rng.choice(5, 3000, p=[0.6, 0.2, 0.1, 0.07, 0.03])
    val = stratified_group_split(labels, groups, 0.2, seed=1)
    assert np.array_equal(val, stratified_group_split(labels, groups, 0.2, seed=1))
    assert not np.array_equal(val, stratified_group_split(labels, groups, 0.2, seed=2))
    for g in set(groups):
        idx = [i for i, x in enumerate(groups) if x == g]
        assert len(set(val[idx])) == 1
    for c in range(5):
        share = val[labels == c].mean()
        assert abs(share - 0.2) < 0.05, (c, share)
        assert (~val)[labels == c].any()   # training keeps every class
    assert source_image('P0004__1024__0___0') == 'P0004'
    with pytest.raises(ValueError, match='val_fraction'):
        stratified_group_split(labels, groups, 1.0)


def test_cache_is_reused_and_follows_the_source_and_settings(toy_root, tmp_path,
                                                             monkeypatch):
    root = _copy_toy(toy_root, tmp_path / 'toy')
    cache = tmp_path / 'cache'
    first = _ds(root, cache, 'test')
    entries = sorted(os.listdir(cache))
    assert len(entries) == 1

    def no_rebuild(*a, **k):
        raise AssertionError('the cache entry should have been reused')

    with monkeypatch.context() as m:
        m.setattr(crop_cache, '_write_entry', no_rebuild)
        again = _ds(root, cache, 'test')
    assert len(again) == len(first)
    _ds(root, cache, 'test', crop_size=20)       # other settings: a new entry
    assert len(os.listdir(cache)) == 2
    ann = sorted(glob.glob(osp.join(root, 'test', 'annfiles', '*.txt')))[0]
    with open(ann) as fh:
        lines = fh.read().splitlines()
    with open(ann, 'w') as fh:                    # edit one box: a new fingerprint
        fh.write('\n'.join(lines[:-1]) + '\n')
    edited = _ds(root, cache, 'test')
    assert len(edited) == len(first) - 1 and len(os.listdir(cache)) == 3
    # filters do not make a new entry
    _ds(root, cache, 'test', min_size=12)
    assert len(os.listdir(cache)) == 3


def test_cache_never_overwrites_and_writes_atomically(toy_root, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    _ds(toy_root, cache, 'test')
    entry = osp.join(cache, os.listdir(cache)[0])
    index = crop_cache.read_index(entry)
    index['fingerprint'] = 'someone-else'
    import json
    with open(osp.join(entry, crop_cache.INDEX_FILE), 'w') as fh:
        json.dump(index, fh)
    with pytest.raises(RuntimeError, match='not overwriting'):
        _ds(toy_root, cache, 'test')
    assert crop_cache.read_index(entry)['fingerprint'] == 'someone-else'

    def broken(*a, **k):
        raise OSError('disk full')

    other = tmp_path / 'cache2'
    monkeypatch.setattr(crop_cache, 'crop_box', broken)
    with pytest.raises(OSError, match='disk full'):
        _ds(toy_root, other, 'test')
    assert os.listdir(other) == []                # no half entry, no temporary left


def test_filters_drop_difficult_and_tiny_boxes(toy_root, tmp_path):
    root = _copy_toy(toy_root, tmp_path / 'toy')
    ann = sorted(glob.glob(osp.join(root, 'test', 'annfiles', '*.txt')))[0]
    with open(ann) as fh:
        lines = fh.read().splitlines()
    lines[0] = lines[0][:-1] + '1'                 # difficult
    with open(ann, 'w') as fh:
        fh.write('\n'.join(lines) + '\n')
    n = _n_boxes(osp.join(root, 'test'))
    assert len(_ds(root, tmp_path / 'c', 'test')) == n - 1
    assert len(_ds(root, tmp_path / 'c', 'test', keep_difficult=True)) == n
    sides = [crop_cache.read_index(osp.join(tmp_path / 'c', e))['records']
             for e in os.listdir(tmp_path / 'c')][0]
    short = np.minimum(sides['box_w'], sides['box_h'])
    cut = float(np.median(short))
    kept = _ds(root, tmp_path / 'c', 'test', keep_difficult=True, min_size=cut)
    assert len(kept) == int((short >= cut).sum())


def test_bad_input_names_the_file_and_line(toy_root, tmp_path):
    root = _copy_toy(toy_root, tmp_path / 'toy')
    ann = sorted(glob.glob(osp.join(root, 'test', 'annfiles', '*.txt')))[1]
    with open(ann) as fh:
        lines = fh.read().splitlines()
    lines[1] = lines[1].replace(lines[1].split()[8], 'spaceship')
    with open(ann, 'w') as fh:
        fh.write('\n'.join(lines) + '\n')
    with pytest.raises(AnnotationError, match=rf'{osp.basename(ann)}:2: unknown class'):
        _ds(root, tmp_path / 'c', 'test')
    img = ann.replace('annfiles', 'images').replace('.txt', '.png')
    shutil.copy(osp.join(toy_root, 'test', 'annfiles', osp.basename(ann)), ann)
    os.remove(img)
    with pytest.raises((FileNotFoundError, ValueError), match=osp.basename(ann)):
        _ds(root, tmp_path / 'c', 'test')   # CheckedDOTADataset's image check
    with pytest.raises(FileNotFoundError, match='make_bias_benchmark'):
        _ds(str(tmp_path / 'nowhere'), tmp_path / 'c', 'test')


def test_auto_groups_come_from_the_training_split(toy_root, tmp_path):
    train = _ds(toy_root, tmp_path, 'train', groups='auto')
    test = _ds(toy_root, tmp_path, 'test', groups='auto')
    want = resolve_groups(DOTA_CLASSES, train.metainfo['counts'], 'auto')
    assert train.metainfo['groups'] == want == test.metainfo['groups']
    assert test.metainfo['train_counts'] == train.metainfo['counts']


def test_real_samples_with_boxes_outside_the_thumbnails(shared_data, tmp_path):
    ds = DOTACropDataset(data_root=shared_data, split='test',
                         folders=dict(train='unused', test='dota_samples'), crop_size=24,
                         cache_dir=str(tmp_path), pipeline=[dict(type='PackInputs')])
    assert len(ds) == 7                            # 8 planes, one difficult
    assert all(ds.get_data_info(i)['gt_label'] == 0 for i in range(len(ds)))
    entry = osp.join(tmp_path, os.listdir(tmp_path)[0])
    assert any(crop_cache.read_index(entry)['records']['outside'])
    assert tuple(ds[0]['inputs'].shape) == (3, 24, 24)


def _damage_cases(entry):
    """(what, how) pairs: each damages one file of ``entry`` in its own way."""
    crops, index = osp.join(entry, crop_cache.CROPS_FILE), osp.join(entry, crop_cache.INDEX_FILE)

    def cut(path, keep):
        with open(path, 'rb') as fh:
            data = fh.read()
        with open(path, 'wb') as fh:
            fh.write(data[:keep(len(data))])

    def other_crops():
        arr = np.load(crops)
        np.save(crops, arr[:-1])                   # a valid .npy, one crop short

    def shorter_index():
        import json
        with open(index) as fh:
            d = json.load(fh)
        d['records']['label'] = d['records']['label'][:-1]
        with open(index, 'w') as fh:
            json.dump(d, fh)

    return [('crops cut', lambda: cut(crops, lambda n: n // 2), 'cut short'),
            ('crops header cut', lambda: cut(crops, lambda n: 20), 'not a .npy'),
            ('crops replaced', other_crops, 'holds uint8'),
            ('crops not npy', lambda: cut(crops, lambda n: 0), 'not a .npy'),
            ('index cut', lambda: cut(index, lambda n: n - 10), 'not valid JSON'),
            ('index shortened', shorter_index, 'records.label')]


def test_damaged_cache_entry_is_named_when_opened(toy_root, tmp_path):
    cache = tmp_path / 'cache'
    n = len(_ds(toy_root, cache, 'test'))
    entry = osp.join(cache, os.listdir(cache)[0])
    saved = {f: open(osp.join(entry, f), 'rb').read()
             for f in (crop_cache.CROPS_FILE, crop_cache.INDEX_FILE)}
    for what, damage, problem in _damage_cases(entry):
        damage()
        with pytest.raises(RuntimeError) as err:       # crop_cache.CropCacheDamaged
            _ds(toy_root, cache, 'test')
        msg = str(err.value)
        assert f'crop cache {entry!r} is damaged: remove it' in msg, what
        assert problem in msg, (what, msg)
        for f, data in saved.items():
            with open(osp.join(entry, f), 'wb') as fh:
                fh.write(data)
    assert len(_ds(toy_root, cache, 'test')) == n   # restored: opens again
    shutil.rmtree(entry)                             # what the message says: rebuilt
    assert len(_ds(toy_root, cache, 'test')) == n


def test_cache_entries_get_the_umask_permissions(toy_root, tmp_path):
    old = os.umask(0o022)
    try:
        _ds(toy_root, tmp_path / 'cache', 'test')
    finally:
        os.umask(old)
    entry = osp.join(tmp_path / 'cache', os.listdir(tmp_path / 'cache')[0])
    assert os.stat(entry).st_mode & 0o777 == 0o755   # mkdtemp alone gives 0700
    for f in os.listdir(entry):
        assert os.stat(osp.join(entry, f)).st_mode & 0o777 == 0o644


def test_val_split_that_picks_no_image_says_so(toy_root, tmp_path):
    n_images = len({source_image(osp.splitext(f)[0])
                    for f in os.listdir(osp.join(toy_root, 'trainval', 'annfiles'))})
    with pytest.raises(ValueError) as err:
        _ds(toy_root, tmp_path, 'val', val_fraction=0.001)   # round(40 * 0.001) == 0
    msg = str(err.value)
    assert 'val_fraction=0.001' in msg and f'none of the {n_images} source images' in msg
    assert "folders['val']" in msg and 'no crop left' not in msg
    assert len(_ds(toy_root, tmp_path, 'train', val_fraction=0.001))   # train is fine
