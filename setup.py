"""evit_mm: EfficientViT and SHViT backbones for MMDetection 3.x and MMSegmentation 1.x.

The OpenMMLab stack (torch, mmcv with compiled ops) can't be resolved by pip
alone on a CPU machine: use ``bash tools/install.sh``, which installs it in the
right order and then this package.
"""
from setuptools import find_packages, setup


def read_version() -> str:
    scope: dict = {}
    with open('evit_mm/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='evit_mm',
    version=read_version(),
    description='EfficientViT and SHViT backbones for MMDetection 3.x / MMSegmentation 1.x',
    long_description=open('README.md').read() if __import__('os').path.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['evit_mm', 'evit_mm.*']),
    python_requires='>=3.8',
    install_requires=[
        'torch>=2.0,<2.14',
        'mmengine==0.10.7',
        'mmcv==2.1.0',
        'mmdet==3.3.0',
        'mmsegmentation==1.2.2',
        'mmpretrain==1.2.0',
        'ftfy',
        'regex',
        'numpy',
    ],
    extras_require={
        'tests': ['pytest'],
        'tools': ['onnx', 'onnxruntime', 'matplotlib'],
        'all': ['pytest', 'onnx', 'onnxruntime', 'matplotlib'],
    },
    license='Apache-2.0',
)
