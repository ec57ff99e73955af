"""The per-class table both group metrics log (one helper since issue 19): head classes
first, then middle, tail and the classes in no group, each in class order."""
from mmdeblora.evaluation.group_table import grouped_rows


def test_rows_in_group_order_framed_by_rules_as_wide_as_the_header():
    classes = ['a', 'b', 'c', 'd', 'e']
    groups = dict(tail=['a'], head=['c', 'e'], middle=['b'])
    rows = grouped_rows(classes, groups, f"{'n':>6}", lambda i: f'{i:>6}')
    assert rows == [
        'class               group        n',
        '-' * 34,
        'c                   head         2',
        'e                   head         4',
        'b                   middle       1',
        'a                   tail         0',
        'd                   -            3',
        '-' * 34,
    ]
