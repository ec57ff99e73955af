from setuptools import find_packages, setup


def readme() -> str:
    with open('README.md', encoding='utf-8') as f:
        return f.read()


def parse_requirements(fname: str) -> list:
    with open(fname) as f:
        return [line.strip() for line in f
                if line.strip() and not line.startswith(('#', '-'))]


setup(
    name='mmdeblora',
    version='0.1.0',
    description='De-biased representations (debLoRA) for long-tailed remote-sensing '
                'detection on the OpenMMLab stack',
    long_description=readme(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'benchmarks', 'docs')),
    python_requires='>=3.9',
    install_requires=parse_requirements('requirements/runtime.txt'),
    extras_require={
        'tests': parse_requirements('requirements/tests.txt'),
        'optional': parse_requirements('requirements/optional.txt'),
        'mim': parse_requirements('requirements/mminstall.txt'),
    },
    license='Apache License 2.0',
)
