"""DOTADataset that checks every annotation line and every image before training starts."""
import glob
import logging
import math
import os.path as osp
from typing import Dict, List, Optional, Tuple

import numpy as np
from mmengine.logging import print_log
from mmrotate.datasets import DOTADataset
from mmrotate.registry import DATASETS

BAD_LINES = ('error', 'skip')
CHECK_IMAGES = (None, 'exists', 'header', 'verify')
_SHOWN = 10  # file:line examples quoted in one warning or error


class AnnotationError(ValueError):
    """A malformed line in a DOTA annotation file; the message names file and line."""


class ImageCheckError(ValueError):
    """Images that an annotation file names but that are missing or do not decode."""


def hull_areas(coords: np.ndarray) -> np.ndarray:
    """Area of the convex hull of each row's four points ``(N, 8)``: 0 when the points are
    equal or collinear.

    Not the polygon's own area: a quadrilateral given in a crossed order (a "bow tie") has a
    polygon area near 0 but a valid box (mmrotate converts it with ``cv2.minAreaRect``).
    The hull of four points is the largest of the three quadrilaterals they form and the
    four triangles (one point inside the triangle of the others).
    """
    x, y = coords[:, 0::2], coords[:, 1::2]

    def shoelace(order):
        nxt = order[1:] + order[:1]
        return np.abs(sum(x[:, a] * y[:, b] - x[:, b] * y[:, a]
                          for a, b in zip(order, nxt))) / 2
    orders = [[0, 1, 2, 3], [0, 1, 3, 2], [0, 2, 1, 3]]
    orders += [[i for i in range(4) if i != skip] for skip in range(4)]
    return np.max(np.stack([shoelace(o) for o in orders]), axis=0)


def _examples(items: List[str]) -> str:
    more = f'\n  ... and {len(items) - _SHOWN} more' if len(items) > _SHOWN else ''
    return '\n  ' + '\n  '.join(items[:_SHOWN]) + more


@DATASETS.register_module()
class CheckedDOTADataset(DOTADataset):
    """mmrotate's ``DOTADataset`` with input checks and a stable order.

    Upstream parses ``x1 y1 ... x4 y4 class difficulty`` lines without checks: a short
    line raises a bare ``IndexError``, an unknown class a bare ``KeyError``, a bad number or
    a non-UTF-8 byte an error without the file name, extra fields are silently dropped, a
    ``nan`` coordinate crashes rotated RoI align and a zero-area box (four equal or
    collinear points) turns the loss into NaN at the first iteration that samples it. A
    label file without its image fails only when the loader reaches it, maybe deep into an
    epoch, and a training set without any instance fails with numpy's "need at least one
    array to concatenate".

    This subclass parses the files itself (upstream reads a file in one go and cannot drop
    one line) into the same ``data_info`` dicts, and checks before any model is built:

    - every line: 10 fields, finite numbers, a known class, an integer difficulty, a box
      whose convex hull covers at least ``min_box_area`` pixels; a bad line raises
      :class:`AnnotationError` naming ``file:line`` (``bad_lines='error'``), or is left out
      with one warning listing every skipped ``file:line`` (``bad_lines='skip'``);
    - a training set (``test_mode=False``) has at least one instance;
    - every image named by an annotation file exists (``check_images='exists'``), and its
      header decodes (``'header'``, the default: reads the size only) or the whole file
      passes ``PIL.Image.verify`` (``'verify'``, slower); ``None`` checks nothing. All
      bad images are listed in one :class:`ImageCheckError`;
    - warnings, once per data set with a count, for boxes whose centre lies outside their
      image (needs the sizes: ``check_images`` ``'header'`` or ``'verify'``) and for
      difficulty values other than 0 / 1. Warnings, not errors: DOTA's split patches keep
      objects cut by the patch border, and thumbnails with full-size labels (like the real
      samples in ``../shared/data/dota_samples``) are legitimate test inputs.

    Raw (unsplit) DOTA ``labelTxt`` files are recognised and pointed at mmrotate's splitting
    tool. Images are sorted by id so runs are reproducible (upstream keeps ``glob`` order).
    """

    def __init__(self, *args, bad_lines: str = 'error', check_images: Optional[str] = 'header',
                 min_box_area: float = 1.0, **kwargs) -> None:
        if bad_lines not in BAD_LINES:
            raise ValueError(f'CheckedDOTADataset.bad_lines must be one of {BAD_LINES}, '
                             f'got {bad_lines!r}')
        if check_images not in CHECK_IMAGES:
            raise ValueError(f'CheckedDOTADataset.check_images must be one of '
                             f'{CHECK_IMAGES}, got {check_images!r}')
        if not (isinstance(min_box_area, (int, float)) and min_box_area >= 0):
            raise ValueError(f'CheckedDOTADataset.min_box_area must be a number >= 0, got '
                             f'{min_box_area!r}')
        self.bad_lines, self.check_images = bad_lines, check_images
        self.min_box_area = float(min_box_area)
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------ data list
    def load_data_list(self) -> List[dict]:
        if not self.ann_file:  # images only (unlabelled test split): upstream globs them
            data_list = super().load_data_list()
            self._image_sizes(data_list)
            return sorted(data_list, key=lambda info: info['img_id'])
        if not osp.isdir(self.ann_file):
            raise FileNotFoundError(
                f'annotation folder {self.ann_file!r} does not exist (data_root='
                f'{self.data_root!r}); generate the toy data with '
                '`python tools/data/make_toy_dota.py` or point data_root at split '
                'DOTA (see docs/data.md)')
        txt_files = sorted(glob.glob(osp.join(self.ann_file, '*.txt')))
        if not txt_files:
            raise FileNotFoundError(f'no annotation file (*.txt) in {self.ann_file!r}')
        cls_map = {c: i for i, c in enumerate(self.metainfo['classes'])}
        skipped: List[str] = []
        difficult: List[str] = []
        data_list = []
        for txt in txt_files:
            img_id = osp.basename(txt)[:-4]
            img_name = f'{img_id}.{self.img_suffix}'
            instances, where = [], []
            for lineno, fields in self._lines(txt, skipped):
                try:
                    instances.append(self._parse(fields, cls_map))
                except AnnotationError as err:
                    self._bad(f'{txt}:{lineno}: {err}', skipped)
                    continue
                where.append(f'{txt}:{lineno}')
                if fields[9] not in ('0', '1'):
                    difficult.append(f'{txt}:{lineno}: difficulty {fields[9]}')
            data_list.append(dict(img_id=img_id, file_name=img_name,
                                  img_path=osp.join(self.data_prefix['img_path'], img_name),
                                  instances=instances, _where=where, _ann=txt))
        self._drop_degenerate(data_list, skipped)
        if skipped:
            print_log(f'CheckedDOTADataset: skipped {len(skipped)} bad annotation line(s) '
                      f'(bad_lines={self.bad_lines!r}):' + _examples(skipped),
                      logger='current', level=logging.WARNING)
        if difficult:
            print_log(f'CheckedDOTADataset: {len(difficult)} instance(s) in '
                      f'{self.ann_file} have a difficulty other than 0 / 1 (DOTA uses 0 '
                      f'and 1; ignored when > diff_thr={self.diff_thr}):' +
                      _examples(difficult), logger='current', level=logging.WARNING)
        if not self.test_mode and not any(info['instances'] for info in data_list):
            raise ValueError(
                f'no training instance in {self.ann_file}: its {len(txt_files)} annotation '
                'file(s) are empty' + (' or all their lines were skipped' if skipped else '')
                + '; check data_root / ann_file')
        self._check_boxes_inside(data_list, self._image_sizes(data_list))
        for info in data_list:
            del info['_where'], info['_ann']
        return sorted(data_list, key=lambda info: info['img_id'])

    def _bad(self, message: str, skipped: List[str]) -> None:
        if self.bad_lines == 'error':
            raise AnnotationError(message)
        skipped.append(message)

    def _lines(self, path: str, skipped: List[str]):
        """``(line number, fields)`` for each line that decodes as UTF-8 and is not empty."""
        with open(path, 'rb') as fh:
            raw = fh.read().split(b'\n')
        if raw and raw[-1] == b'':
            raw.pop()
        for lineno, data in enumerate(raw, 1):
            where = f'{path}:{lineno}'
            try:
                line = data.decode('utf-8')
            except UnicodeDecodeError as err:
                self._bad(f'{where}: not UTF-8 text (byte {data[err.start]:#04x} at column '
                          f'{err.start + 1}): {data!r}', skipped)
                continue
            fields = line.split()
            if lineno <= 2 and fields and fields[0].split(':')[0] in ('imagesource', 'gsd'):
                raise AnnotationError(
                    f'{where}: this is a raw DOTA labelTxt file ({fields[0]!r} header); '
                    'split the images first with mmrotate\'s '
                    'tools/data/dota/split/img_split.py (see docs/data.md)')
            if not fields:
                self._bad(f'{where}: empty line', skipped)
                continue
            yield lineno, fields

    def _parse(self, fields: List[str], cls_map: Dict[str, int]) -> dict:
        """One instance as upstream builds it, or :class:`AnnotationError` saying why not."""
        if len(fields) != 10:
            raise AnnotationError(
                'expected 10 fields "x1 y1 x2 y2 x3 y3 x4 y4 class difficulty", got '
                f'{len(fields)}: {" ".join(fields)!r}')
        coords = []
        for i, value in enumerate(fields[:8]):
            try:
                coords.append(float(value))
            except ValueError:
                raise AnnotationError(
                    f'coordinate {i + 1} is not a number: {value!r}') from None
            if not math.isfinite(coords[-1]):
                raise AnnotationError(f'coordinate {i + 1} is not finite: {value!r}')
        if fields[8] not in cls_map:
            raise AnnotationError(f'unknown class {fields[8]!r}; known classes: '
                                  f'{sorted(cls_map)}')
        if not fields[9].lstrip('-').isdigit():
            raise AnnotationError(f'difficulty must be an integer, got {fields[9]!r}')
        return dict(bbox=coords, bbox_label=cls_map[fields[8]],
                    ignore_flag=int(int(fields[9]) > self.diff_thr))

    def _drop_degenerate(self, data_list: List[dict], skipped: List[str]) -> None:
        """Reject boxes whose four points span less than ``min_box_area`` (vectorised over
        the whole data set: a DOTA split holds hundreds of thousands of boxes)."""
        boxes = [inst['bbox'] for info in data_list for inst in info['instances']]
        if not boxes:
            return
        keep = iter(hull_areas(np.array(boxes, dtype=np.float64)) >= self.min_box_area)
        for info in data_list:
            kept = [(inst, where) for inst, where in zip(info['instances'], info['_where'])
                    if next(keep) or self._bad_box(inst, where, skipped)]
            info['instances'] = [inst for inst, _ in kept]
            info['_where'] = [where for _, where in kept]

    def _bad_box(self, inst: dict, where: str, skipped: List[str]) -> bool:
        area = float(hull_areas(np.array([inst['bbox']]))[0])
        self._bad(f'{where}: degenerate box: its four points span {area:.3g} px^2 (equal or '
                  f'collinear points; min_box_area={self.min_box_area:g}); it would make '
                  'the box loss NaN', skipped)
        return False

    # ------------------------------------------------------------------ images
    def _image_sizes(self, data_list: List[dict]) -> Dict[str, Tuple[int, int]]:
        """Check every image (``check_images``); ``{img_id: (width, height)}`` when read."""
        if self.check_images is None:
            return {}
        from PIL import Image
        bad, sizes = [], {}
        for info in data_list:
            path, ann = info['img_path'], info.get('_ann')
            named = f' (named by {ann})' if ann else ''
            if not osp.isfile(path):
                others = sorted(glob.glob(glob.escape(osp.splitext(path)[0]) + '.*'))
                hint = (f'; found {osp.basename(others[0])}: set img_suffix?' if others
                        else '')
                bad.append(f'{path}: missing{named}{hint}')
                continue
            if self.check_images == 'exists':
                continue
            try:
                with Image.open(path) as img:
                    sizes[info['img_id']] = img.size
                    if self.check_images == 'verify':
                        img.verify()
            except Exception as err:  # PIL raises many types for a bad file
                bad.append(f'{path}: does not decode{named}: {type(err).__name__}: {err}')
        if bad:
            raise ImageCheckError(
                f'{len(bad)} of {len(data_list)} image(s) of {self.data_prefix["img_path"]} '
                f'are missing or broken (check_images={self.check_images!r}):' +
                _examples(bad))
        return sizes

    def _check_boxes_inside(self, data_list: List[dict],
                            sizes: Dict[str, Tuple[int, int]]) -> None:
        outside = []
        for info in data_list:
            size = sizes.get(info['img_id'])
            if size is None:
                continue
            for inst, where in zip(info['instances'], info['_where']):
                cx, cy = sum(inst['bbox'][0::2]) / 4, sum(inst['bbox'][1::2]) / 4
                if not (0 <= cx <= size[0] and 0 <= cy <= size[1]):
                    outside.append(f'{where}: centre ({cx:.0f}, {cy:.0f}) outside the '
                                   f'{size[0]}x{size[1]} image')
        if outside:
            print_log(f'CheckedDOTADataset: {len(outside)} box(es) in {self.ann_file} lie '
                      'outside their image (wrong image, or labels of another image size?):'
                      + _examples(outside), logger='current', level=logging.WARNING)
