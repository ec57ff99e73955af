import json
import math
import os
import os.path as osp

import numpy as np
import pytest

from mmdeblora.datasets import DOTA_GROUPS
from mmdeblora.datasets.bias_benchmark import (SIBLINGS, TARGET_DEFAULTS, TargetStyle,
                                               make_bias_source, make_bias_target,
                                               render_source_image, source_classes, target_counts)
from mmdeblora.datasets.bias_benchmark.draw import Frame
from mmdeblora.datasets.bias_benchmark.looks import Look
from tests.conftest import tree_digest

TINY = dict(max_count=12, imbalance_ratio=6, val_per_class=1, test_per_class=1,
            img_size=96, objects_per_image=4)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    for name, seed in (('a', 1), ('b', 1), ('c', 2)):
        make_bias_target(str(tmp_path / name), seed=seed, log=None, **TINY)
        make_bias_source(str(tmp_path / name), seed=seed, per_class=2, val_per_class=1,
                         log=None)
    for part in ('target', 'source'):
        assert tree_digest(tmp_path / 'a' / part) == tree_digest(tmp_path / 'b' / part)
        assert tree_digest(tmp_path / 'a' / part) != tree_digest(tmp_path / 'c' / part)
    assert sorted(os.listdir(tmp_path / 'a' / 'source' / 'train')) == source_classes()


# What the generator drew at seed 0 for TINY, recorded on 2026-12-04 (generator version 1,
# the install's numpy / opencv): a change of the pixels or the boxes, silent otherwise,
# changes these, and with them every table made on the benchmark. If the change is
# intended, bump GENERATOR_VERSION, record the new values and re-make the tables.
RECORDED_CONTENT = dict(target='8e91922e67773cfd', source='b6907a02f4e30c0c')


def test_generated_content_matches_the_recorded_fingerprint(tmp_path, capsys):
    # with the log on, as the tool runs it: the progress bars draw no random numbers (the
    # values were recorded without them)
    target = make_bias_target(str(tmp_path), seed=0, **TINY)
    source = make_bias_source(str(tmp_path), seed=0, per_class=2, val_per_class=1)
    assert "ETA" in capsys.readouterr().out  # mmengine's bar was shown
    assert dict(target=target['content'], source=source['content']) == RECORDED_CONTENT
    with open(tmp_path / 'target' / 'target.json') as fh:  # written with the summary
        assert json.load(fh)['content'] == RECORDED_CONTENT['target']
    # it is the content: one changed byte of one image changes it
    from mmdeblora.datasets.bias_benchmark.generate import content_fingerprint
    img = sorted((tmp_path / 'target' / 'test' / 'images').iterdir())[0]
    data = bytearray(img.read_bytes())
    data[-1] ^= 1
    img.write_bytes(bytes(data))
    assert content_fingerprint(str(tmp_path / 'target')) != RECORDED_CONTENT['target']


# The older settings' content at seed 0 for TINY, recorded before 'scattered' and
# 'atypical' were added (2026-12-05): the new settings must not move them.
RECORDED_OLDER = {('shared', 0.05): '50fa682ee9f9db54', ('weak', 0.2): '3112f9f8553ec522',
                  ('control', 0.05): '8c721c23044d47fb'}


# 'scattered' and 'atypical' at seed 0 for TINY, recorded before 'shared_attribute' was
# added (2026-12-05): it must not move them either.
RECORDED_PREMISE = {('scattered', 1.0): '7504f5accfa731c3',
                    ('atypical', 1.0): 'afe037113f0e4b57'}


@pytest.mark.parametrize('bias,strength', sorted(RECORDED_OLDER) + sorted(RECORDED_PREMISE))
def test_recorded_settings_keep_their_content(tmp_path, bias, strength):
    summary = make_bias_target(str(tmp_path), seed=0, bias=bias, cue_strength=strength,
                               log=None, **TINY)
    assert summary['content'] == {**RECORDED_OLDER, **RECORDED_PREMISE}[bias, strength]
    if (bias, strength) in RECORDED_OLDER:
        assert 'looks' not in summary  # they draw no per-instance look


def test_counts_are_long_tailed_and_the_other_parts_balanced(tmp_path):
    counts = target_counts(TARGET_DEFAULTS)
    train = counts['train']
    assert max(train.values()) / min(train.values()) >= 100
    assert min(train[c] for c in DOTA_GROUPS['head']) > \
        max(train[c] for c in DOTA_GROUPS['tail'])
    assert sum(counts['train_balanced'].values()) == sum(train.values())
    assert max(counts['train_balanced'].values()) - min(counts['train_balanced'].values()) <= 1
    assert len(set(counts['test'].values())) == len(set(counts['val'].values())) == 1
    # what is written is what was asked for, box by box
    summary = make_bias_target(str(tmp_path), log=None, **TINY)
    for part, want in summary['counts'].items():
        got = {c: 0 for c in want}
        ann = tmp_path / 'target' / part / 'annfiles'
        for name in os.listdir(ann):
            for line in open(ann / name):
                got[line.split()[8]] += 1
        assert got == want, part
    with open(tmp_path / 'target' / 'target.json') as fh:
        assert json.load(fh)['siblings'] == SIBLINGS


def _render(bias, name, seed=3, strength=0.3):
    img = np.full((80, 80, 3), 100, np.uint8)
    style = TargetStyle(bias, strength)
    style.draw(img, Frame.box(40, 40, 50, 25, 0.4), name, np.random.RandomState(seed))
    return img


@pytest.mark.parametrize('bias', ['strong', 'shared', 'weak'])
def test_each_tail_is_its_sibling_plus_one_cue(bias):
    assert set(SIBLINGS) == set(DOTA_GROUPS['tail'])
    assert all(s in DOTA_GROUPS['head'] + DOTA_GROUPS['middle'] for s in SIBLINGS.values())
    for tail, sib in SIBLINGS.items():
        a, b = _render(bias, tail), _render(bias, sib)
        diff = (a != b).any(2)
        body = (b != 100).any(2)                     # what the sibling covers
        assert diff.sum() > 20, tail                 # the cue is there ...
        if bias != 'weak':                           # ... and only on the body
            assert not (diff & ~body).any(), tail
        else:                                        # a ring inside the box
            ys, xs = np.nonzero(diff)
            assert np.hypot(xs - 40, ys - 40).max() < 0.5 * math.hypot(50, 25) + 2


def test_dial_semantics_and_the_negative_control():
    strong, shared = TargetStyle('strong'), TargetStyle('shared')
    control = TargetStyle('control')
    # shared: a head class reads the same cue (small vehicles are striped large vehicles)
    assert shared.shape_of('small-vehicle') == 'large-vehicle'
    assert strong.shape_of('small-vehicle') == 'small-vehicle'
    rng = np.random.RandomState(0)
    assert shared._stripes('small-vehicle', rng) is not None
    # strong: stripes are a nuisance elsewhere, never on a sibling
    draws = [strong._stripes('bridge', rng) is not None for _ in range(200)]
    assert 0.3 < np.mean(draws) < 0.7
    assert all(strong._stripes(s, rng) is None for s in SIBLINGS.values())
    # control: tails have shapes of their own
    for tail, sib in SIBLINGS.items():
        assert control.shape_of(tail) == tail != sib
        assert (_render('control', tail) != _render('control', sib)).any(2).sum() > 100
    with pytest.raises(ValueError, match='bias'):
        TargetStyle('extreme')
    with pytest.raises(ValueError, match='cue_strength'):
        TargetStyle('weak', 0.8)


def test_other_settings_are_not_overwritten(tmp_path):
    make_bias_target(str(tmp_path), log=None, **TINY)
    before = tree_digest(tmp_path / 'target')
    said = []
    make_bias_target(str(tmp_path), log=said.append, **TINY)   # same settings: kept
    assert tree_digest(tmp_path / 'target') == before
    assert len(said) == 1 and 'up to date' in said[0]            # and it says so
    with pytest.raises(FileExistsError, match='force'):
        make_bias_target(str(tmp_path), log=None, bias='weak', cue_strength=0.3, **TINY)
    make_bias_target(str(tmp_path), log=None, bias='weak', cue_strength=0.3, force=True,
                     **TINY)
    assert tree_digest(tmp_path / 'target') != before
    with pytest.raises(TypeError, match='unknown'):
        make_bias_target(str(tmp_path), log=None, hue=3)


def test_a_folder_that_is_not_a_benchmark_says_so(tmp_path):
    for part, make in (('target', make_bias_target), ('source', make_bias_source)):
        folder = tmp_path / part
        folder.mkdir()
        (folder / 'notes.txt').write_text('mine')
        kw = TINY if part == 'target' else dict(per_class=1, val_per_class=1)
        for force in (False, True):
            with pytest.raises(FileExistsError) as err:
                make(str(tmp_path), force=force, log=None, **kw)
            msg = str(err.value)
            assert f'{str(folder)!r} is not a generated bias benchmark' in msg, msg
            assert "['notes.txt']" in msg and 'another output folder' in msg
            assert 'other settings' not in msg
            assert (folder / 'notes.txt').read_text() == 'mine'   # --force deletes nothing
    # an interrupted run (its own sub-folders, no target.json) is replaced with force
    (tmp_path / 'target' / 'notes.txt').unlink()
    (tmp_path / 'target' / 'train').mkdir()
    with pytest.raises(FileExistsError, match=r'unfinished .*target.json does not exist'):
        make_bias_target(str(tmp_path), log=None, **TINY)
    make_bias_target(str(tmp_path), force=True, log=None, **TINY)
    assert osp.isfile(tmp_path / 'target' / 'target.json')


def test_source_images_are_seeded_objects():
    a = render_source_image('bird', np.random.RandomState(5))
    b = render_source_image('bird', np.random.RandomState(5))
    assert a.shape == (32, 32, 3) and np.array_equal(a, b)
    assert len(source_classes()) == 12


def _boxes(root, part: str):
    """{class: [(length, width), ...]} of a generated part's annotations."""
    out = {}
    ann = osp.join(root, 'target', part, 'annfiles')
    for name in os.listdir(ann):
        for line in open(osp.join(ann, name)):
            v = line.split()
            p = np.array(v[:8], float).reshape(4, 2)
            out.setdefault(v[8], []).append((np.linalg.norm(p[1] - p[0]),
                                             np.linalg.norm(p[2] - p[1])))
    return {c: np.array(b) for c, b in out.items()}


def _log_sd(boxes, classes, aspect=False) -> float:
    """Mean over ``classes`` of the sd of log box length (or log aspect) in each class."""
    return float(np.mean([np.log(boxes[c][:, 0] / (boxes[c][:, 1] if aspect else 1)).std()
                          for c in classes]))


def test_scattered_spreads_the_tail_and_leaves_the_head_as_in_control(tmp_path):
    kw = dict(TINY, val_per_class=12, test_per_class=12)
    boxes = {}
    for bias in ('control', 'scattered'):
        summary = make_bias_target(str(tmp_path / bias), bias=bias, log=None, **kw)
        boxes[bias] = {}
        for part in ('train', 'val', 'test'):
            for c, b in _boxes(str(tmp_path / bias), part).items():
                boxes[bias][c] = np.concatenate([boxes[bias].get(c, np.zeros((0, 2))), b])
    assert summary['settings']['cue_strength'] == 1.0  # its default: the full ranges
    assert summary['looks']['applies_to'].startswith('tail')
    tail, head = DOTA_GROUPS['tail'], DOTA_GROUPS['head']
    assert _log_sd(boxes['scattered'], tail) > 1.5 * _log_sd(boxes['control'], tail)
    assert _log_sd(boxes['scattered'], tail, True) > 2 * _log_sd(boxes['control'], tail, True)
    # the head: no look, so the same spread of box sizes as in control
    ratio = _log_sd(boxes['scattered'], head) / _log_sd(boxes['control'], head)
    assert 0.75 < ratio < 1.33
    style = TargetStyle('scattered', 1.0)
    assert style.look('plane', np.random.RandomState(0)) is None
    assert style.shape_of('helicopter') == 'helicopter'  # shapes of their own


def test_scattered_looks_scale_with_the_cue_strength():
    for s in (1.0, 0.25):
        rng = np.random.RandomState(0)
        looks = [TargetStyle('scattered', s).look('roundabout', rng) for _ in range(2000)]
        log_scale = np.abs(np.log([lk.scale for lk in looks]))
        assert 0.9 * s * math.log(1.5) < log_scale.max() <= s * math.log(1.5) + 1e-9
        assert min(lk.contrast for lk in looks) >= 1 - 0.6 * s - 1e-9
        assert max(lk.occlusion for lk in looks) <= 0.4 * s + 1e-9
        missing = np.mean([not lk.part for lk in looks])
        assert abs(missing - 0.5 * s) < 0.05
        assert 0.45 < np.mean([lk.occlusion > 0 for lk in looks]) < 0.55


def _render_look(name, look, seed=3, bias='scattered'):
    img = np.full((80, 80, 3), 100, np.uint8)
    TargetStyle(bias, 1.0).draw(img, Frame.box(40, 40, 50, 25, 0.4), name,
                                np.random.RandomState(seed), look)
    return img


@pytest.mark.parametrize('tail', sorted(SIBLINGS))
def test_each_look_attribute_changes_the_drawing(tail):
    plain = _render_look(tail, Look())
    assert np.array_equal(plain, _render_look(tail, None))  # the neutral look: no change
    dev = np.abs(plain.astype(int) - 100).sum()
    for look in (Look(part=False), Look(contrast=0.4), Look(occlusion=0.3),
                 Look(texture=(0.0, 4.0, 0.4))):
        assert (_render_look(tail, look) != plain).any(2).sum() > 10, look
    # lower contrast: the object nearer the ground colour; a patch of ground over an end
    faint = np.abs(_render_look(tail, Look(contrast=0.4)).astype(int) - 100).sum()
    assert 0.3 * dev < faint < 0.5 * dev
    occluded = np.abs(_render_look(tail, Look(occlusion=0.3)).astype(int) - 100).sum()
    assert occluded < dev


def test_atypical_draws_the_tail_small_and_faint_in_training_only(tmp_path):
    summary = make_bias_target(str(tmp_path), bias='atypical', log=None,
                               **dict(TINY, test_per_class=16))
    assert summary['looks']['rate'] == dict(tail_train=0.75, other=0.1)
    tail, head = DOTA_GROUPS['tail'], DOTA_GROUPS['head']
    train, test = _boxes(str(tmp_path), 'train'), _boxes(str(tmp_path), 'test')

    def small(boxes, classes):  # the atypical band is 11-16.5 px, the typical 20-30 px
        lengths = np.concatenate([boxes[c][:, 0] for c in classes])
        return float(np.mean(lengths < 18))

    assert small(train, tail) > 0.5
    assert small(test, tail) < 0.3 and small(train, head) < 0.3 and small(test, head) < 0.3
    # per instance: the rate of the condition, and the condition's contrast
    style, rng = TargetStyle('atypical', 1.0), np.random.RandomState(0)
    for name, typical, rate in (('helicopter', False, 0.75), ('helicopter', True, 0.1),
                                ('plane', False, 0.1), ('plane', True, 0.1)):
        drawn = [style.look(name, rng, typical) for _ in range(2000)]
        assert abs(np.mean([lk is not None for lk in drawn]) - rate) < 0.04, name
    look = next(lk for lk in drawn if lk is not None)
    assert look.scale == pytest.approx(0.55) and look.contrast == pytest.approx(0.4)
    for tail_name in SIBLINGS:
        plain = np.abs(_render_look(tail_name, None, bias='atypical').astype(int) - 100)
        faint = np.abs(_render_look(tail_name, look, bias='atypical').astype(int) - 100)
        assert faint.sum() < 0.5 * plain.sum()
    with pytest.raises(ValueError, match='cue_strength'):
        TargetStyle('atypical', 1.5)


def test_shared_attribute_rings_the_tail_held_out_and_part_of_its_training(tmp_path,
                                                                           monkeypatch):
    from mmdeblora.datasets.bias_benchmark.looks import SHARED_ATTRIBUTE
    style, ring = TargetStyle('shared_attribute', 0.6), SHARED_ATTRIBUTE['ring']
    p, q = SHARED_ATTRIBUTE['sibling_rate'], SHARED_ATTRIBUTE['tail_rate']
    assert p < q * 0.4 < q                 # the sibling rarely, the tail's training less
    # per instance: the ring's rate by class and part
    rng = np.random.RandomState(0)
    for name, typical, rate in (('helicopter', False, q * 0.4), ('helicopter', True, q),
                                ('plane', False, p), ('plane', True, p)):
        drawn = [style.look(name, rng, typical) for _ in range(2000)]
        assert abs(np.mean([lk is not None for lk in drawn]) - rate) < 0.04, name
        assert all((lk.ring, lk.ring_width) == (ring, SHARED_ATTRIBUTE['width'])
                   for lk in drawn if lk is not None)
    state = rng.get_state()[1].copy()
    assert style.look('bridge', rng, False) is None            # other classes: untouched,
    assert np.array_equal(rng.get_state()[1], state)           # no random number drawn
    # the sibling relation holds: tail = sibling (ring and all) + the faint stripes
    look = Look(ring=ring, ring_width=SHARED_ATTRIBUTE['width'])
    for tail, sib in SIBLINGS.items():
        assert style.shape_of(tail) == sib
        a, b = _render_look(tail, look, bias='shared_attribute'), \
            _render_look(sib, look, bias='shared_attribute')
        diff, body = (a != b).any(2), (b != 100).any(2)
        assert diff.sum() > 20 and not (diff & ~body).any(), tail
        plain = _render_look(sib, None, bias='shared_attribute')
        assert (plain != b).any(2).sum() > 20, sib                  # the ring is drawn
    # end to end at s = 1: no tail training instance shows it (long-tailed or the
    # oracle's balanced part: the same training source), held-out ones do
    seen, original = [], TargetStyle.look

    def spy(self, name, rng, typical=True):
        got = original(self, name, rng, typical)
        seen.append((name, typical, got))
        return got

    monkeypatch.setattr(TargetStyle, 'look', spy)
    summary = make_bias_target(str(tmp_path), bias='shared_attribute', cue_strength=1.0,
                               log=None, **TINY)
    assert summary['looks']['rate'] == dict(sibling=p, tail_held_out=q, tail_train=0.0)
    assert [style.typical_part(part) for part in summary['counts']] == \
        [False, False, True, True]                   # train, train_balanced, val, test
    assert TargetStyle('atypical').typical_part('train_balanced')
    tails = [(typical, got) for name, typical, got in seen if name in SIBLINGS]
    assert {typical for typical, _ in tails} == {False, True}
    assert all(got is None for typical, got in tails if not typical)
    assert any(got is not None for typical, got in tails if typical)
    assert all(got is None for name, _, got in seen
               if name not in SIBLINGS and name not in SIBLINGS.values())
    with pytest.raises(ValueError, match='cue_strength'):
        TargetStyle('shared_attribute', 1.5)
