"""Training curves and time per iteration from an mmengine run's ``vis_data/scalars.json``.

``.venv/bin/python tools/analysis/analyze_logs.py cal_train_time LOG.json [...]``
``.venv/bin/python tools/analysis/analyze_logs.py plot_curve LOG.json --keys loss --out F.png``

mmdet's ``tools/analysis_tools/analyze_logs.py`` (shipped inside the mmdet package, under
``mmdet/.mim/tools``): its ``plot_curve``, ``cal_train_time`` and options, used as they are,
with a corrected reader of the log. Upstream's reader files each line under the epoch of the
line *before* it, so the first iteration of every epoch lands in the previous one: the
per-epoch times are off, ``cal_train_time`` drops each epoch's second iteration instead of
its first (the data-loader start-up it means to leave out), and mmrotate's older copy of the
tool stops with ``ValueError: ... inhomogeneous shape``. Here a training line goes to its own
``epoch`` and a validation line (keys with ``/``, e.g. ``dota/mAP``) to the epoch it
followed, under the name after the last ``/`` (``mAP``, ``head_mAP``, ``tail_mAP``).
"""
import argparse
import importlib.util
import json
import os.path as osp
from collections import defaultdict
from types import ModuleType
from typing import Dict, List, Optional, Sequence, Set


def upstream_tool() -> ModuleType:
    """mmdet's ``analyze_logs.py`` as a module (it is a script, not an importable name)."""
    import mmdet
    path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'analysis_tools',
                    'analyze_logs.py')
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path} is missing: mmdet is installed without its tools '
                                '(reinstall mmdet==3.3.0 from its wheel)')
    spec = importlib.util.spec_from_file_location('mmdet_analyze_logs', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_json_logs(json_logs: Sequence[str],
                   val_keys: Optional[List[Set[str]]] = None) -> List[Dict[int, Dict[str, list]]]:
    """One ``{epoch: {key: [values]}}`` per log, in upstream's layout (see module doc);
    ``val_keys`` (a list) gets each log's set of validation keys."""
    log_dicts = []
    for path in json_logs:
        log_dict: Dict[int, Dict[str, list]] = {}
        validation: Set[str] = set()
        epoch = 1
        with open(path, encoding='utf-8') as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    log = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f'{path}:{lineno} is not a JSON line ({err}); give the '
                                     'vis_data/scalars.json of an mmengine run') from None
                if not isinstance(log, dict) or len(log) <= 1:
                    continue
                if any('/' in k for k in log):  # validation: the epoch it followed
                    entry = log_dict.setdefault(epoch, defaultdict(list))
                    for k, v in log.items():
                        if '/' in k:
                            entry[k.split('/')[-1]].append(v)
                            validation.add(k.split('/')[-1])
                    continue
                epoch = log.get('epoch', epoch)
                entry = log_dict.setdefault(epoch, defaultdict(list))
                for k, v in log.items():
                    entry[k].append(v)
        if not log_dict:
            raise ValueError(f'{path} holds no logged iterations or validations')
        log_dicts.append(log_dict)
        if val_keys is not None:
            val_keys.append(validation)
    return log_dicts


def _check_times(log_dicts: list, args: argparse.Namespace) -> None:
    """Upstream averages an empty list (NaN) for an epoch with one logged iteration."""
    need = 1 if args.include_outliers else 2
    for path, log_dict in zip(args.json_logs, log_dicts):
        short = [e for e, d in log_dict.items() if 0 < len(d.get('time', [])) < need]
        if short or not any(d.get('time') for d in log_dict.values()):
            raise ValueError(
                f'{path}: epochs {short or "all"} have fewer than {need} logged iterations, so '
                'there is no time to average; log more often (default_hooks.logger.interval) '
                'or pass --include-outliers')


def _check_keys(log_dicts: list, val_keys: List[Set[str]], args: argparse.Namespace) -> None:
    """Name the keys a log has, instead of upstream's advice to change the log interval."""
    for path, log_dict, validation in zip(args.json_logs, log_dicts, val_keys):
        have = sorted({k for d in log_dict.values() for k in d} - {'epoch', 'iter', 'step'})
        for key in args.keys:
            if key not in have:
                raise KeyError(f'{path} has no {key!r}; it has {have}')
            if key in validation and 'mAP' not in key:
                raise KeyError(f'{key!r} is a validation value; plot_curve draws validation '
                               "curves only of keys with 'mAP' in the name (mAP, head_mAP, "
                               'middle_mAP, tail_mAP), per epoch')


def main(argv: Optional[Sequence[str]] = None) -> None:
    upstream = upstream_tool()
    parser = argparse.ArgumentParser(description='Curves and iteration times of mmengine runs '
                                     '(mmdet\'s analyze_logs.py with a corrected log reader)')
    subparsers = parser.add_subparsers(dest='task', required=True)
    upstream.add_plot_parser(subparsers)
    upstream.add_time_parser(subparsers)
    args = parser.parse_args(argv)
    for path in args.json_logs:
        if not path.endswith('.json') or not osp.isfile(path):
            parser.error(f'{path}: not a .json file; give <work_dir>/<timestamp>/vis_data/'
                         'scalars.json')
    val_keys: List[Set[str]] = []
    log_dicts = load_json_logs(args.json_logs, val_keys)
    if args.task == 'cal_train_time':
        _check_times(log_dicts, args)
        upstream.cal_train_time(log_dicts, args)
    else:
        _check_keys(log_dicts, val_keys, args)
        upstream.plot_curve(log_dicts, args)


if __name__ == '__main__':
    main()
