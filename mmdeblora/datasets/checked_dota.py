"""DOTADataset that checks every annotation line before training starts."""
import glob
import os.path as osp
from typing import List

from mmrotate.datasets import DOTADataset
from mmrotate.registry import DATASETS


class AnnotationError(ValueError):
    """A malformed line in a DOTA annotation file; the message names file and line."""


@DATASETS.register_module()
class CheckedDOTADataset(DOTADataset):
    """mmrotate's ``DOTADataset`` with input checks and a stable order.

    Upstream parses ``x1 y1 ... x4 y4 class difficulty`` lines without checks: a short
    line raises a bare ``IndexError``, an unknown class a bare ``KeyError``, a bad number a
    ``ValueError`` without the file name, and extra fields are silently dropped. This
    subclass validates every file first and raises :class:`AnnotationError` naming the
    file and line, then defers to upstream parsing. Raw (unsplit) DOTA ``labelTxt`` files
    are recognised and pointed at mmrotate's splitting tool. Images are sorted by id so
    runs are reproducible (upstream keeps ``glob`` order).
    """

    def load_data_list(self) -> List[dict]:
        if self.ann_file:
            if not osp.isdir(self.ann_file):
                raise FileNotFoundError(
                    f'annotation folder {self.ann_file!r} does not exist (data_root='
                    f'{self.data_root!r}); generate the toy data with '
                    '`python tools/data/make_toy_dota.py` or point data_root at split '
                    'DOTA (see docs/data.md)')
            classes = set(self.metainfo['classes'])
            for txt in sorted(glob.glob(osp.join(self.ann_file, '*.txt'))):
                self._check_file(txt, classes)
        data_list = super().load_data_list()
        return sorted(data_list, key=lambda info: info['img_id'])

    @staticmethod
    def _check_file(path: str, classes: set) -> None:
        with open(path) as fh:
            lines = fh.read().splitlines()
        for lineno, line in enumerate(lines, 1):
            fields = line.split()
            where = f'{path}:{lineno}'
            if lineno <= 2 and fields and fields[0].split(':')[0] in ('imagesource', 'gsd'):
                raise AnnotationError(
                    f'{where}: this is a raw DOTA labelTxt file ({fields[0]!r} header); '
                    'split the images first with mmrotate\'s '
                    'tools/data/dota/split/img_split.py (see docs/data.md)')
            if not fields:
                raise AnnotationError(f'{where}: empty line')
            if len(fields) != 10:
                raise AnnotationError(
                    f'{where}: expected 10 fields "x1 y1 x2 y2 x3 y3 x4 y4 class '
                    f'difficulty", got {len(fields)}: {line!r}')
            for i, value in enumerate(fields[:8]):
                try:
                    float(value)
                except ValueError:
                    raise AnnotationError(
                        f'{where}: coordinate {i + 1} is not a number: {value!r}') from None
            if fields[8] not in classes:
                raise AnnotationError(
                    f'{where}: unknown class {fields[8]!r}; known classes: '
                    f'{sorted(classes)}')
            if not fields[9].lstrip('-').isdigit():
                raise AnnotationError(
                    f'{where}: difficulty must be an integer, got {fields[9]!r}')
