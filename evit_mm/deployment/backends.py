"""Export through mmdeploy's API and run the end-to-end ONNX in ONNX Runtime or OpenVINO.

mmdeploy 1.3.1 calls ``torch.onnx.export`` without ``dynamo=False``; torch >= 2.9
defaults to the dynamo exporter, which cannot apply mmdeploy's rewrites. The legacy
exporter is selected only inside :func:`legacy_onnx_exporter`, i.e. while our tool
exports. OpenVINO compiles the same ONNX with a current ``openvino``
(``Core().compile_model``): mmdeploy's own OpenVINO backend needs the legacy
openvino-dev (<= 2023) API.
"""
import contextlib
import copy
import functools
import importlib
import os
import os.path as osp
from typing import Dict, Iterator, List, Sequence

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config

from ..config import MissingExtraError
from . import dense_head

DEPLOY_EXTRA = "pip install 'evit_mm[deploy]' (or see tools/install.sh)"
BACKENDS = ('onnxruntime', 'openvino')  # also the names of their Python modules


class DeployStackMissingError(MissingExtraError):
    """mmdeploy or a backend runtime is not installed."""


def require(*modules: str) -> None:
    """Import ``modules`` or fail with the extra that installs them."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise DeployStackMissingError(
            f'Deployment needs {", ".join(missing)}, which '
            f'{"is" if len(missing) == 1 else "are"} not installed: {DEPLOY_EXTRA}')


def _cast_long(g, value, non_blocking=False):
    """ONNX Cast to int64: the private helper mmdeploy's RoIAlign symbolic imports from
    ``torch.onnx.symbolic_opset9``, which torch 2.13 no longer has."""
    return g.op('Cast', value, to_i=7)  # TensorProto.INT64


@contextlib.contextmanager
def legacy_onnx_exporter() -> Iterator[None]:
    """Inside the block only: ``torch.onnx.export`` defaults to ``dynamo=False`` and
    ``symbolic_opset9._cast_Long`` exists (for mmdeploy's RoIAlign). Both are undone on
    exit, exception or not."""
    from torch.onnx import symbolic_opset9
    export = torch.onnx.export
    add_cast = not hasattr(symbolic_opset9, '_cast_Long')
    torch.onnx.export = functools.partial(export, dynamo=False)
    if add_cast:
        symbolic_opset9._cast_Long = _cast_long
    try:
        yield
    finally:
        torch.onnx.export = export
        if add_cast:
            del symbolic_opset9._cast_Long


def backend_of(deploy_cfg: Config) -> str:
    """The backend a deploy config names, checked against the ones we run."""
    backend = deploy_cfg.get('backend_config', {}).get('type')
    if backend not in BACKENDS:
        raise ValueError(f'Deploy config backend {backend!r} is not supported here; use one of '
                         f'{BACKENDS} (configs/deploy/ has one config per task and backend).')
    return backend


def export_end2end(model: nn.Module, deploy_cfg: Config, data: dict, work_dir: str) -> str:
    """Export ``model`` (a copy: mmdeploy rewrites the model it exports) to
    ``work_dir/end2end.onnx`` with mmdeploy's rewrites; return the file."""
    from mmdeploy.apis.core.pipeline_manager import no_mp
    from mmdeploy.apis.onnx import export
    from mmdeploy.utils import get_dynamic_axes, get_onnx_config
    dense_head.register(BACKENDS)  # mmdet's pre-NMS top-k instead of mmdeploy's approximation
    onnx_cfg = get_onnx_config(deploy_cfg)
    names = onnx_cfg['input_names'] + onnx_cfg['output_names']
    prefix = osp.join(work_dir, osp.splitext(onnx_cfg.get('save_file', 'end2end.onnx'))[0])
    with no_mp(), legacy_onnx_exporter():
        export(copy.deepcopy(model), data['inputs'],
               input_metas=dict(data_samples=data['data_samples'], mode='predict'),
               output_path_prefix=prefix, backend=backend_of(deploy_cfg),
               input_names=onnx_cfg['input_names'], output_names=onnx_cfg['output_names'],
               context_info=dict(deploy_cfg=deploy_cfg),
               opset_version=onnx_cfg.get('opset_version', 11),
               dynamic_axes=get_dynamic_axes(deploy_cfg, names),
               keep_initializers_as_inputs=onnx_cfg.get('keep_initializers_as_inputs', False),
               optimize=onnx_cfg.get('optimize', False))
    return prefix + '.onnx'


class BackendRunner(nn.Module):
    """What mmdeploy's end-to-end models expect of a backend wrapper: a dict of input
    tensors in, a dict of output tensors out, ``output_names`` and ``output_to_list``."""

    def __init__(self, output_names: Sequence[str]) -> None:
        super().__init__()
        self.output_names = list(output_names)

    def output_to_list(self, outputs: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        return [outputs[name] for name in self.output_names]

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        feed = {name: tensor.detach().cpu().numpy() for name, tensor in inputs.items()}
        return {name: torch.from_numpy(array)
                for name, array in zip(self.output_names, self.run(feed))}

    def run(self, feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        raise NotImplementedError


class ONNXRuntimeRunner(BackendRunner):
    """An ONNX Runtime CPU session (standard ONNX ops only: no custom-op library)."""

    def __init__(self, onnx_file: str, output_names: Sequence[str], threads: int) -> None:
        super().__init__(output_names)
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_file, options,
                                            providers=['CPUExecutionProvider'])

    def run(self, feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        return self.session.run(self.output_names, feed)


class OpenVINORunner(BackendRunner):
    """An ONNX or OpenVINO IR file compiled by OpenVINO for the CPU.

    ``precision='f32'`` by default: on CPUs with bf16 units (AMX, AVX512-BF16) OpenVINO
    otherwise computes in bfloat16, which is faster but moves boxes and class
    boundaries beyond the parity tolerances."""

    def __init__(self, model_file: str, output_names: Sequence[str], threads: int,
                 precision: str = 'f32') -> None:
        super().__init__(output_names)
        import openvino as ov
        self.compiled = ov.Core().compile_model(model_file, 'CPU', {
            'INFERENCE_NUM_THREADS': threads, 'PERFORMANCE_HINT': 'LATENCY',
            'INFERENCE_PRECISION_HINT': precision})
        self.request = self.compiled.create_infer_request()

    def run(self, feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        results = self.request.infer(feed)
        return [results[self.compiled.output(name)] for name in self.output_names]


RUNNERS = dict(onnxruntime=ONNXRuntimeRunner, openvino=OpenVINORunner)


def export_backbone(backbone: nn.Module, x: torch.Tensor, work_dir: str, backend: str,
                    threads: int) -> BackendRunner:
    """Export a (fused) backbone at ``x``'s fixed shape to ``work_dir/backbone.onnx`` and
    load it in ``backend``; outputs are named ``out0``, ``out1``, ..."""
    require('onnx', backend)
    os.makedirs(work_dir, exist_ok=True)
    onnx_file = osp.join(work_dir, 'backbone.onnx')
    with torch.no_grad():
        names = [f'out{i}' for i in range(len(backbone(x)))]
        torch.onnx.export(backbone, (x,), onnx_file, input_names=['input'], output_names=names,
                          opset_version=17, dynamo=False)
    return RUNNERS[backend](onnx_file, names, threads)


def save_openvino_model(onnx_file: str, work_dir: str) -> str:
    """Convert the ONNX to OpenVINO IR (``end2end.xml`` + ``.bin``, float32 weights: no
    fp16 compression); return the .xml."""
    import openvino as ov
    xml = osp.join(work_dir, osp.splitext(osp.basename(onnx_file))[0] + '.xml')
    ov.save_model(ov.convert_model(onnx_file), xml, compress_to_fp16=False)
    return xml


class BackendSegmentor(nn.Module):
    """The exported logits, post-processed by mmseg exactly like the PyTorch segmentor
    (crop the padding, bilinear resize to the image's size, argmax)."""

    def __init__(self, wrapper: nn.Module, segmentor: nn.Module) -> None:
        super().__init__()
        self.wrapper = wrapper
        self.postprocess_result = segmentor.postprocess_result  # no network inside

    def forward(self, inputs: torch.Tensor, data_samples: list, mode: str = 'predict') -> list:
        logits = self.wrapper({'input': inputs})[self.wrapper.output_names[0]]
        return self.postprocess_result(logits, data_samples)


def build_backend_model(task_processor, deploy_cfg: Config, files: Dict[str, str],
                        threads: int, torch_model: nn.Module) -> nn.Module:
    """The end-to-end model running the exported files in the deploy config's backend
    (OpenVINO: the saved IR), with mmdeploy's detection post-processing or mmseg's
    segmentation post-processing."""
    from mmdeploy.utils import get_codebase_config, get_onnx_config
    backend = backend_of(deploy_cfg)
    output_names = get_onnx_config(deploy_cfg)['output_names']
    runner = RUNNERS[backend](files.get('openvino_xml', files['onnx']), output_names, threads)
    if get_codebase_config(deploy_cfg).get('type') == 'mmseg':
        if get_codebase_config(deploy_cfg).get('with_argmax', True):
            raise ValueError('Segmentation deploy configs must set codebase_config.with_argmax='
                             'False: the argmax comes after resizing the logits to the image.')
        return BackendSegmentor(runner, torch_model).eval()
    # mmdeploy builds its own ONNX Runtime wrapper; ours replaces it (thread count, and
    # OpenVINO, which mmdeploy 1.3.1 can only drive through the legacy API).
    ort_cfg = copy.deepcopy(deploy_cfg)
    ort_cfg.backend_config = dict(type='onnxruntime')
    processor = copy.copy(task_processor)
    processor.deploy_cfg = ort_cfg
    model = processor.build_backend_model([files['onnx']])
    model.wrapper = runner
    model.deploy_cfg = deploy_cfg
    return model.eval()
