"""The one version source: setup.py reads this file without importing the package."""
from typing import Tuple

__version__ = '0.1.0'


def parse_version_info(version_str: str) -> Tuple:
    """'0.1.0' -> (0, 1, 0); '1.0.0rc1' -> (1, 0, 0, 'rc1'), as mmdet does."""
    info = []
    for part in version_str.split('.'):
        if part.isdigit():
            info.append(int(part))
        elif 'rc' in part:
            num, rc = part.split('rc')
            info.extend([int(num), f'rc{rc}'])
    return tuple(info)


version_info = parse_version_info(__version__)
