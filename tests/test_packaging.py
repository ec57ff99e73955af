"""The house: public names, one version source, the wheel's contents, entry points that
run from any directory without sys.path tricks, pytest settings."""
import configparser
import glob
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import zipfile

import pytest
import yaml

import mmdeblora
from tests.conftest import REPO


def test_public_names():
    from mmdeblora import (CheckedDOTADataset, ClassStatsHook, DebLoRAFasterRCNN,  # noqa: F401
                           DebLoRAHook, ECMLoss, GroupDOTAMetric, LoRABackbone, ResLTBBoxHead,
                           ReweightLoss, SDBackbone)
    for name in mmdeblora.__all__:
        assert hasattr(mmdeblora, name), name


def test_every_registered_component_is_exported():
    """A component registered by importing mmdeblora is a top-level name too."""
    from mmengine.registry import Registry
    from mmrotate import registry
    registered = set()
    for reg in vars(registry).values():
        if isinstance(reg, Registry):
            registered |= {k for k, v in reg.module_dict.items()
                           if getattr(v, '__module__', '').startswith('mmdeblora')}
    assert {'LoRABackbone', 'DebLoRAHook', 'ECMLoss', 'GroupDOTAMetric'} <= registered
    assert registered <= set(mmdeblora.__all__), registered - set(mmdeblora.__all__)


def test_one_version_source():
    scope = {'__file__': osp.join(REPO, 'setup.py')}
    exec(open(osp.join(REPO, 'setup.py')).read().split("if __name__ == '__main__':")[0],
         scope)
    assert scope['get_version']() == mmdeblora.__version__
    assert mmdeblora.version_info[:3] == tuple(int(v) for v in
                                               mmdeblora.__version__.split('.')[:3])
    citation = yaml.safe_load(open(osp.join(REPO, 'CITATION.cff')))
    assert citation['version'] == mmdeblora.__version__
    assert 'De-Biased' in citation['preferred-citation']['title']


def _checkout_copy(dst: str) -> None:
    """The files a clone has: tracked ones and untracked ones git does not ignore."""
    files = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard',
                            '-z'], cwd=REPO, capture_output=True, check=True).stdout
    for rel in files.decode().split('\0'):
        if rel and osp.isfile(osp.join(REPO, rel)):
            os.makedirs(osp.join(dst, osp.dirname(rel)), exist_ok=True)
            shutil.copy2(osp.join(REPO, rel), osp.join(dst, rel))


def test_wheel_ships_the_package_configs_and_no_tests(tmp_path):
    src, out = str(tmp_path / 'src'), str(tmp_path / 'wheels')
    _checkout_copy(src)
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '.', '--no-deps',
                    '--no-build-isolation', '--disable-pip-version-check', '-q', '-w', out],
                   cwd=src, check=True, capture_output=True, timeout=300)
    wheel, = glob.glob(osp.join(out, f'mmdeblora-{mmdeblora.__version__}-*.whl'))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split('/')[0] for n in names}
    assert top == {'mmdeblora', f'mmdeblora-{mmdeblora.__version__}.dist-info'}, top
    assert 'mmdeblora/.mim/model-index.yml' in names
    assert 'mmdeblora/.mim/configs/deblora/oriented_rcnn_sd_dota.py' in names
    assert 'mmdeblora/.mim/configs/_base_/datasets/toy_dota.py' in names
    assert 'mmdeblora/.mim/tools/train.py' in names
    assert 'mmdeblora/.mim/tools/data/dota/split_dota.py' in names


def test_entry_points_have_no_sys_path_insert_and_run_from_anywhere(tmp_path):
    scripts = glob.glob(osp.join(REPO, 'tools', '**', '*.py'), recursive=True) + \
        glob.glob(osp.join(REPO, 'benchmarks', '*.py'))
    offenders = [s for s in scripts if 'sys.path.insert' in open(s).read()]
    assert not offenders
    for script in ('train.py', 'data/dota/split_dota.py'):
        proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', script), '--help'],
                              cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_pytest_settings():
    ini = configparser.ConfigParser()
    ini.read(osp.join(REPO, 'pytest.ini'))
    opts = ini['pytest']
    assert 'slow:' in opts['markers'] and int(opts['timeout']) > 0
    filters = [f.strip() for f in opts.get('filterwarnings', '').splitlines() if f.strip()]
    # only named warnings: no blanket ignore of a whole category
    assert not [f for f in filters if re.fullmatch(r'ignore::\w+', f)], filters
    assert all(f.startswith('ignore:') and len(f.split(':')[1]) > 10 for f in filters)


@pytest.mark.parametrize('doc', sorted(glob.glob(osp.join(REPO, 'docs', '*.md'))) +
                         [osp.join(REPO, 'README.md')])
def test_doc_commands_name_the_interpreter(doc):
    """`python tools/...` fails when copied (the system Python has no mmrotate)."""
    bare = [line for line in open(doc).read().splitlines()
            if re.search(r'(^|[\s`$(])python3? +\S+\.py', line)]
    assert not bare, bare


def test_relative_doc_links_resolve():
    """Every relative link in README.md and docs/*.md names a file of the checkout."""
    broken = []
    for doc in [osp.join(REPO, 'README.md')] + sorted(glob.glob(osp.join(REPO, 'docs', '*.md'))):
        text = open(doc).read()
        for target in re.findall(r'\]\(([^)\s]+)\)', text):
            if re.match(r'[a-z]+:', target) or target.startswith('#'):
                continue  # a URL or an anchor in the same page
            path = osp.normpath(osp.join(osp.dirname(doc), target.split('#')[0]))
            if not osp.exists(path):
                broken.append(f'{osp.relpath(doc, REPO)}: {target}')
    assert not broken, broken
