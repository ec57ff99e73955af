"""What the two group metrics share: groups resolved when the classes are set, and the
per-class table ordered head, middle, tail."""
from typing import Callable, Dict, List, Optional, Sequence

from mmdeblora.datasets.class_groups import GROUP_NAMES


class ResolveGroupsEarly:
    """``dataset_meta`` that resolves the metric's groups (``class_groups()``) as soon as
    the classes are known: the runner sets them when it builds the loops, so a spec that
    does not fit fails before training. Put it before the metric base class."""

    def scores_groups(self) -> bool:
        """Whether this metric scores groups at all (e.g. not when it only writes files)."""
        return True

    @property
    def dataset_meta(self) -> Optional[dict]:
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: dict) -> None:
        self._dataset_meta, self._groups = dataset_meta, None
        if dataset_meta is not None and self.scores_groups():
            self._groups = self.class_groups()


def grouped_rows(classes: Sequence[str], groups: Dict[str, List[str]], header: str,
                 cells: Callable[[int], str]) -> List[str]:
    """A table's head and per-class rows, ``class group <cells(i)>``: the head classes
    first, then middle, tail and the classes in no group, each in class order; framed by
    rules as wide as the header."""
    group_of = {c: g for g, names in groups.items() for c in names}
    order = sorted(range(len(classes)), key=lambda i: (
        GROUP_NAMES.index(group_of[classes[i]]) if classes[i] in group_of
        else len(GROUP_NAMES), i))
    rule = '-' * (28 + len(header))
    rows = [f"{'class':<20}{'group':<8}{header}", rule]
    rows += [f'{classes[i]:<20}{group_of.get(classes[i], "-"):<8}{cells(i)}' for i in order]
    return rows + [rule]
