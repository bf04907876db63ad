"""Where the measuring tools write their JSON records, and how (read by model_zoo.py)."""
import json
import os
import os.path as osp
from typing import Sequence


def config_name(config: str) -> str:
    return osp.splitext(osp.basename(config))[0]


def default_work_dir(config: str) -> str:
    """``work_dirs/<config name>``, where tools/train.py and tools/test.py write too."""
    return osp.join('work_dirs', config_name(config))


def benchmark_filename(part: str, fused: bool, shape: Sequence[int], backend: str = 'pytorch',
                       batch_size: int = 1) -> str:
    """``benchmark_<part>[_fused][_<backend>]_<H>x<W>[_b<N>].json`` (PyTorch, batch 1: no tag)."""
    return 'benchmark_{}{}{}_{}x{}{}.json'.format(
        part, '_fused' if fused else '', '' if backend == 'pytorch' else f'_{backend}', *shape,
        '' if batch_size == 1 else f'_b{batch_size}')


def complexity_filename(shape: Sequence[int]) -> str:
    return 'complexity_{}x{}.json'.format(*shape)


def write_record(path: str, record: dict) -> None:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(record, f, indent=2)
