"""evit_mm: EfficientViT and SHViT backbones for MMDetection 3.x and MMSegmentation 1.x.

``pip install evit_mm`` needs only torch, mmengine and mmcv; the extras add the
frameworks: ``[det]`` (MMDetection), ``[seg]`` (MMSegmentation), ``[pretrain]``
(MMPretrain), ``[tools]`` (ONNX export, plots), ``[tests]`` and ``[all]``.
On a CPU machine mmcv 2.1.0 must be built from source against the installed
torch: ``bash tools/install.sh`` installs the verified stack in the right order.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
README = HERE / 'README.md'


def read_version() -> str:
    scope: dict = {}
    exec((HERE / 'evit_mm' / 'version.py').read_text(), scope)
    return scope['__version__']


DET = ['mmdet>=3.0.0,<3.4.0']
SEG = ['mmsegmentation>=1.0.0,<1.3.0', 'ftfy', 'regex']  # mmseg imports ftfy and regex
PRETRAIN = ['mmpretrain>=1.0.0,<1.3.0']
TOOLS = ['onnx', 'onnxruntime', 'matplotlib']
# mmdeploy 1.3.1 (the last release) pins protobuf <= 3.20.2, hence onnx < 1.18 (onnx 1.18
# needs protobuf 4); OpenVINO compiles the end-to-end ONNX (see evit_mm/deployment), NNCF
# quantizes it to int8 (3.4.0 verified with openvino 2026.4.1, onnx 1.17, protobuf 3.20.2);
# onnxruntime.quantization (benchmarks/deploy_speed.py's ONNX Runtime int8) imports ml_dtypes.
DEPLOY = ['mmdeploy==1.3.1', 'onnx>=1.13.0,<1.18.0', 'protobuf<=3.20.2', 'onnxruntime>=1.16.0',
          'openvino>=2024.0.0', 'nncf>=3.0.0,<3.5.0', 'ml_dtypes']
# pytest-xdist >= 3.8: pytest.ini runs two workers with --no-loadscope-reorder
TESTS = ['pytest', 'pytest-xdist>=3.8'] + DET + SEG + TOOLS + DEPLOY

setup(
    name='evit_mm',
    version=read_version(),
    description='EfficientViT and SHViT backbones for MMDetection 3.x / MMSegmentation 1.x',
    long_description=README.read_text() if README.exists() else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['evit_mm', 'evit_mm.*']),
    python_requires='>=3.8',
    install_requires=[
        # OpenMMLab's prebuilt mmcv 2.1.0 wheels: torch 2.0/2.1; mmcv 2.1 cannot be built with
        # torch 2.14 (C++20)
        'torch>=2.0,<2.14',
        'mmengine>=0.10.0,<1.0.0',
        'mmcv>=2.0.0,<2.3.0',  # mmdet 3.x and mmseg 1.x themselves need mmcv < 2.2
        'numpy',
    ],
    extras_require={
        'det': DET,
        'seg': SEG,
        'pretrain': PRETRAIN,
        'tools': TOOLS,
        'deploy': DEPLOY,
        'tests': TESTS,
        'all': sorted(set(DET + SEG + PRETRAIN + TESTS)),
    },
    license='Apache-2.0',
)
