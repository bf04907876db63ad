"""``tools/deployment/deploy.py``: a trained detector or segmentor to an end-to-end backend model.

The command line of mmdeploy's ``tools/deploy.py`` (missing from its wheel)::

    python tools/deployment/deploy.py DEPLOY_CFG MODEL_CFG CHECKPOINT IMAGE --work-dir DIR \\
        [--device cpu] [--test-img IMG ...] [--dump-info] [--iters N] [--threads T]

Exports the fused model through mmdeploy's API to ``DIR/end2end.onnx`` (OpenVINO
configs also get ``DIR/end2end.xml/.bin``), runs PyTorch and the backend on IMAGE
(and every ``--test-img``), checks that their results agree (:mod:`.parity`), times
both in the same process and writes ``DIR/deploy_record.json``. Exits non-zero,
printing what differed, when parity fails.
"""
import argparse
import copy
import functools
import json
import os
import os.path as osp
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config

from ..analysis.inference import build_inference_model
from ..analysis.timing import environment, summarize, time_interleaved
from ..cli import exits_on_user_errors
from ..config import framework_of
from .backends import (backend_of, build_backend_model, export_end2end, require,
                       save_openvino_model)
from .parity import ParityError, Tolerances, compare_results

DEPLOY_CONFIGS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                          'configs', 'deploy')


def read_deploy_config(path: str) -> Config:
    if not osp.isfile(path):
        raise FileNotFoundError(f'Deploy config {path} not found; configs/deploy/ lists ours.')
    cfg = Config.fromfile(path)
    for key in ('onnx_config', 'codebase_config', 'backend_config'):
        if key not in cfg:
            raise ValueError(f'{path} is not an mmdeploy deploy config: it has no {key}.')
    return cfg


def deploy_config_for(model_cfg_path: str, backend: str, shape: Sequence[int]) -> Config:
    """Our deploy config for the model's task and ``backend``, at a fixed ``(H, W)``."""
    model_cfg = Config.fromfile(model_cfg_path)
    if framework_of(model_cfg) == 'mmseg':
        name = f'segmentation_{backend}_static-512x512.py'
    elif model_cfg.model.get('roi_head', {}).get('mask_head'):
        name = f'instance-seg_{backend}_static-800x1344.py'
    else:
        name = f'detection_{backend}_static-800x1344.py'
    path = osp.join(DEPLOY_CONFIGS, name)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'No deploy config {name} in {DEPLOY_CONFIGS}: Mask R-CNN is deployed to '
            'onnxruntime only (mmdeploy exports its RoI extractor for OpenVINO with '
            'OpenVINO-only ops).' if 'instance-seg' in name else f'{path} not found.')
    cfg = read_deploy_config(path)
    height, width = shape
    cfg.onnx_config.input_shape = [width, height]
    if backend == 'openvino':
        cfg.backend_config.model_inputs = [dict(opt_shapes=dict(input=[1, 3, height, width]))]
    return cfg


def predict(model: torch.nn.Module, data: dict) -> list:
    """``model`` on an already preprocessed batch, post-processing included. Each call gets
    fresh samples: mmdet and mmseg write their predictions into the samples they get."""
    with torch.no_grad():
        return model(data['inputs'], copy.deepcopy(data['data_samples']), mode='predict')


@dataclass
class Deployment:
    """The fused PyTorch model and its exported end-to-end twin in the backend."""
    backend: str
    model_cfg: Config
    model: torch.nn.Module
    backend_model: torch.nn.Module
    files: Dict[str, str]
    prepare: Callable[[Union[str, np.ndarray]], dict]  # image -> preprocessed batch
    static: bool


def export_and_load(deploy_cfg: Config, model_cfg_path: str, checkpoint: Optional[str],
                    image: Union[str, np.ndarray], work_dir: str,
                    threads: int) -> Deployment:
    """Build the fused model, export it end to end with ``image`` and load the backend."""
    backend = backend_of(deploy_cfg)
    require('mmdeploy', 'onnx', backend)  # each backend's Python module has its name
    from mmdeploy.apis.utils import build_task_processor
    from mmdeploy.utils import get_input_shape
    os.makedirs(work_dir, exist_ok=True)
    model, model_cfg, _ = build_inference_model(model_cfg_path, checkpoint, fuse=True)
    processor = build_task_processor(model_cfg, deploy_cfg, 'cpu')
    input_shape = get_input_shape(deploy_cfg)

    def prepare(img: Union[str, np.ndarray]) -> dict:
        data, _ = processor.create_input(img, input_shape,
                                         data_preprocessor=model.data_preprocessor)
        return data

    onnx_file = export_end2end(model, deploy_cfg, prepare(image), work_dir)
    files = dict(onnx=onnx_file)
    if backend == 'openvino':
        files['openvino_xml'] = save_openvino_model(onnx_file, work_dir)
    backend_model = build_backend_model(processor, deploy_cfg, files, threads, model)
    return Deployment(backend, model_cfg, model, backend_model, files, prepare,
                      static=input_shape is not None)


def deploy(deploy_cfg_path: str, model_cfg_path: str, checkpoint: str, image: str,
           work_dir: str, test_images: Optional[List[str]] = None, iters: int = 10,
           warmup: int = 2, threads: Optional[int] = None, dump_info: bool = False,
           tolerances: Optional[Tolerances] = None) -> dict:
    """Export, check parity on every image, time; return (and write) the record."""
    deploy_cfg = read_deploy_config(deploy_cfg_path)
    require('mmdeploy', 'onnx', backend_of(deploy_cfg))
    if threads:
        torch.set_num_threads(threads)
    for path in [image] + list(test_images or []):
        if not osp.isfile(path):
            raise FileNotFoundError(f'Image {path} not found.')
    pair = export_and_load(deploy_cfg, model_cfg_path, checkpoint, image, work_dir,
                           torch.get_num_threads())
    backend = pair.backend
    data = pair.prepare(image)
    record = dict(deploy_config=deploy_cfg_path, model_config=model_cfg_path,
                  checkpoint=checkpoint, backend=backend, files=pair.files,
                  input_shape=list(data['inputs'].shape), static=pair.static,
                  fused=True, parity={}, **environment('cpu'))
    failures = []
    for path in [image] + list(test_images or []):
        sample = data if path == image else pair.prepare(path)
        report = compare_results(predict(pair.model, sample)[0],
                                 predict(pair.backend_model, sample)[0], tolerances)
        record['parity'][path] = dict(input_shape=list(sample['inputs'].shape),
                                      **report.as_dict())
        failures += [f'{path}: {failure}' for failure in report.failures]

    times = time_interleaved({'pytorch': functools.partial(predict, pair.model, data),
                              backend: functools.partial(predict, pair.backend_model, data)},
                             iters, warmup)
    speed = record['speed'] = {name: summarize(seconds) for name, seconds in times.items()}
    record['speedup'] = speed['pytorch']['ms_per_img'] / speed[backend]['ms_per_img']
    if dump_info:
        from mmdeploy.backend.sdk.export_info import export2SDK
        export2SDK(deploy_cfg, pair.model_cfg, work_dir, pth=checkpoint, device='cpu')
    with open(osp.join(work_dir, 'deploy_record.json'), 'w') as f:
        json.dump(record, f, indent=2)
    if failures:
        raise ParityError(f'{backend} differs from PyTorch ({len(failures)} problem(s)):\n  '
                          + '\n  '.join(failures))
    return record


def summary_lines(record: Dict) -> List[str]:
    backend = record['backend']
    lines = [f"[evit_mm deploy] {record['files']['onnx']} ({backend}, input "
             f"{'x'.join(map(str, record['input_shape']))})"]
    for path, parity in record['parity'].items():
        worst = ', '.join(f'{k} {v:.4g}' for k, v in parity['worst'].items()) or 'nothing above '\
            'the score threshold'
        lines.append(f"  parity on {path}: {'OK' if parity['ok'] else 'FAILED'}, "
                     f"{parity['compared']} compared, worst {worst}")
    speed = record['speed']
    lines.append(f"  FPS ({record['threads']} threads, batch 1, post-processing included): "
                 f"PyTorch fused {speed['pytorch']['fps']:.2f}, {backend} "
                 f"{speed[backend]['fps']:.2f} ({record['speedup']:.2f}x)")
    return lines


@exits_on_user_errors('deploy')
def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description='Export a detector or segmentor end to end '
                                                 'with mmdeploy; check and time the backend')
    parser.add_argument('deploy_cfg', help='deploy config, e.g. configs/deploy/'
                                           'detection_onnxruntime_static-800x1344.py')
    parser.add_argument('model_cfg', help='model config (ours)')
    parser.add_argument('checkpoint', help='trained checkpoint, e.g. work_dirs/.../epoch_12.pth')
    parser.add_argument('img', help='image used to export, check and time the model')
    parser.add_argument('--work-dir', default=os.getcwd(), help='where the backend files go')
    parser.add_argument('--device', default='cpu', choices=['cpu'],
                        help='export device (the CPU backends run on the CPU)')
    parser.add_argument('--test-img', nargs='+', default=[],
                        help='more images to check parity on (dynamic configs: at their size)')
    parser.add_argument('--dump-info', action='store_true',
                        help="also write mmdeploy's SDK files (deploy/pipeline/detail.json)")
    parser.add_argument('--iters', type=int, default=10, help='timed rounds (after 2 warm-up)')
    parser.add_argument('--threads', type=int, help='CPU threads for PyTorch and the backend')
    args = parser.parse_args(argv)
    try:
        record = deploy(args.deploy_cfg, args.model_cfg, args.checkpoint, args.img,
                        args.work_dir, args.test_img, iters=args.iters, threads=args.threads,
                        dump_info=args.dump_info)
    except ParityError as err:
        sys.exit(f'[evit_mm deploy] PARITY FAILED: {err}\n(record: '
                 f"{osp.join(args.work_dir, 'deploy_record.json')})")
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'[evit_mm deploy] {err}')
    print('\n'.join(summary_lines(record)))
    return record
