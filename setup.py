import os
import os.path as osp
import shutil
import sys
from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))
VERSION_FILE = osp.join(ROOT, 'mmdeblora', 'version.py')
# What `mim` and OpenMMLab tools look for under <package>/.mim/ (as mmdet ships them).
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def readme() -> str:
    with open(osp.join(ROOT, 'README.md'), encoding='utf-8') as f:
        return f.read()


def get_version() -> str:
    """Read ``__version__`` without importing mmdeblora (its imports need torch)."""
    scope: dict = {}
    with open(VERSION_FILE, encoding='utf-8') as f:
        exec(compile(f.read(), VERSION_FILE, 'exec'), scope)
    return scope['__version__']


def parse_requirements(fname: str) -> list:
    with open(osp.join(ROOT, fname)) as f:
        return [line.strip() for line in f
                if line.strip() and not line.startswith(('#', '-'))]


def add_mim_extension() -> None:
    """Put configs, tools and model-index.yml under mmdeblora/.mim, as mmdet does.

    Editable installs get symlinks (the checkout stays the one source); wheels and
    sdists get copies. Other setup.py commands leave the tree alone.
    """
    if {'develop', 'editable_wheel'} & set(sys.argv):
        mode = 'symlink'
    elif {'sdist', 'bdist_wheel', 'build', 'build_py'} & set(sys.argv):
        mode = 'copy'
    else:
        return
    mim_path = osp.join(ROOT, 'mmdeblora', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in MIM_FILES:
        src, tar = osp.join(ROOT, name), osp.join(mim_path, name)
        if osp.islink(tar) or osp.isfile(tar):
            os.remove(tar)
        elif osp.isdir(tar):
            shutil.rmtree(tar)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_path), tar)
        elif osp.isdir(src):
            shutil.copytree(src, tar, ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copyfile(src, tar)


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='mmdeblora',
        version=get_version(),
        description='De-biased representations (debLoRA) for long-tailed remote-sensing '
                    'detection on the OpenMMLab stack',
        long_description=readme(),
        long_description_content_type='text/markdown',
        keywords='remote sensing, rotated object detection, long-tail, LoRA, OpenMMLab',
        classifiers=[
            'License :: OSI Approved :: Apache Software License',
            'Operating System :: OS Independent',
            'Programming Language :: Python :: 3',
            'Programming Language :: Python :: 3.9',
            'Programming Language :: Python :: 3.10',
            'Programming Language :: Python :: 3.11',
            'Topic :: Scientific/Engineering :: Artificial Intelligence',
        ],
        # only the package: tests/, tools/, configs/ ... are not top-level packages of
        # the wheel (configs and tools travel inside it as mmdeblora/.mim data)
        packages=find_packages(include=('mmdeblora', 'mmdeblora.*')),
        include_package_data=False,
        package_data={'mmdeblora': ['.mim/model-index.yml', '.mim/configs/**/*.py',
                                    '.mim/configs/**/*.yml', '.mim/tools/*.py',
                                    '.mim/tools/*.sh', '.mim/tools/**/*.py',
                                    '.mim/tools/**/*.sh']},
        python_requires='>=3.9',
        install_requires=parse_requirements('requirements/runtime.txt'),
        extras_require={
            'tests': parse_requirements('requirements/tests.txt'),
            'optional': parse_requirements('requirements/optional.txt'),
            'mim': parse_requirements('requirements/mminstall.txt'),
        },
        license='Apache License 2.0',
        zip_safe=False)
