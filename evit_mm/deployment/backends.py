"""Export through mmdeploy's API and run the end-to-end ONNX in ONNX Runtime or OpenVINO.

mmdeploy 1.3.1 calls ``torch.onnx.export`` without ``dynamo=False``; torch >= 2.9
defaults to the dynamo exporter, which cannot apply mmdeploy's rewrites. The legacy
exporter is selected only inside :func:`legacy_onnx_exporter`, i.e. while our tool
exports, and so are our rewrites (:mod:`.rewrites`). OpenVINO compiles
the same ONNX with a current ``openvino`` (``Core().compile_model``): mmdeploy's own
OpenVINO backend needs the legacy openvino-dev (<= 2023) API.

Exported detectors take a second input, ``img_shape`` (``[N, 2]``: ``[H, W]`` of each
resized image before padding), so that the graph clips boxes to each image before NMS as
mmdet does. :func:`graph_feed` builds what a graph takes from a prepared batch, for every
caller. The backend models are mmdeploy's end-to-end detector (then its own
post-processing) and mmseg's post-processing around the exported logits; both run our
runner, built once.
"""
import contextlib
import copy
import functools
import importlib
import os
import os.path as osp
import sys
import warnings
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import BaseModel

from ..config import build_model
from ..errors import DeployError, MissingExtraError
from . import rewrites
from .deploy_config import (argmax_before_upsampling, backend_of, check_segmentation_output,
                            input_shape_of, precision_of)

DEPLOY_EXTRA = "pip install 'evit_mm[deploy]' (or see tools/install.sh)"
OPENVINO_PRECISION = dict(f32='f32', bf16='bf16', int8='f32')  # int8: the quantized IR's own
IMG_SHAPE = 'img_shape'  # the detectors' second graph input
LEGACY_EXPORT_NOTICE = 'You are using the legacy TorchScript-based ONNX export'


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


@contextlib.contextmanager
def quiet(log_file: str, verbose: bool = False) -> Iterator[Callable[[str], None]]:
    """Send everything printed inside the block (mmengine's and mmdeploy's INFO lines, tracer
    warnings, the runtimes' own output) to ``log_file``; ``verbose`` leaves it on screen.
    Yields ``say(text)``, which prints a line on the screen from inside the block."""
    if verbose:
        yield functools.partial(print, flush=True)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.makedirs(osp.dirname(osp.abspath(log_file)), exist_ok=True)
    with open(log_file, 'a') as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield lambda text: os.write(saved[0], f'{text}\n'.encode())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _cast_long(g, value, non_blocking=False):
    """ONNX Cast to int64: the private helper mmdeploy's RoIAlign symbolic imports from
    ``torch.onnx.symbolic_opset9``, which torch 2.13 no longer has."""
    return g.op('Cast', value, to_i=7)  # TensorProto.INT64


@contextlib.contextmanager
def legacy_onnx_exporter() -> Iterator[None]:
    """Inside the block only: ``torch.onnx.export`` defaults to ``dynamo=False`` and
    ``symbolic_opset9._cast_Long`` exists (for mmdeploy's RoIAlign). Both are undone on
    exit, exception or not. torch's notice that the legacy exporter is deprecated is not
    shown: it is chosen on purpose (mmdeploy's rewrites need it)."""
    from torch.onnx import symbolic_opset9
    export = torch.onnx.export
    add_cast = not hasattr(symbolic_opset9, '_cast_Long')
    torch.onnx.export = functools.partial(export, dynamo=False)
    if add_cast:
        symbolic_opset9._cast_Long = _cast_long
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message=LEGACY_EXPORT_NOTICE,
                                    category=DeprecationWarning)
            yield
    finally:
        torch.onnx.export = export
        if add_cast:
            del symbolic_opset9._cast_Long


def export_end2end(model: nn.Module, deploy_cfg: Config, data: dict, work_dir: str) -> str:
    """Export ``model`` (a copy: mmdeploy rewrites the model it exports) to
    ``work_dir/end2end.onnx`` with mmdeploy's rewrites and ours; return the file. Detectors
    get the second input ``img_shape``; segmentors with ``argmax_before_upsampling`` return
    the label map at the decode head's resolution."""
    from mmdeploy.apis.core.pipeline_manager import no_mp
    from mmdeploy.apis.onnx import export
    from mmdeploy.utils import get_dynamic_axes, get_onnx_config
    onnx_cfg = get_onnx_config(deploy_cfg)
    input_names = list(onnx_cfg['input_names'])
    prefix = osp.join(work_dir, osp.splitext(onnx_cfg.get('save_file', 'end2end.onnx'))[0])
    backend = backend_of(deploy_cfg)
    model = copy.deepcopy(model)
    traced, args = model, data['inputs']
    metas = dict(data_samples=data['data_samples'], mode='predict')
    if is_detector(model):
        traced = rewrites.ImageShapeInput(model, data['data_samples']).eval()
        feed = graph_feed(data['inputs'], data['data_samples'], detector=True)
        args, metas = (feed['input'], feed[IMG_SHAPE]), {}
        input_names.append(IMG_SHAPE)
    elif argmax_before_upsampling(deploy_cfg):
        traced, metas = rewrites.HeadResolutionLabels(model).eval(), {}
    names = input_names + onnx_cfg['output_names']
    with no_mp(), legacy_onnx_exporter(), rewrites.rewrites_for(model, backend):
        export(traced, args, input_metas=metas, output_path_prefix=prefix, backend=backend,
               input_names=input_names, output_names=onnx_cfg['output_names'],
               context_info=dict(deploy_cfg=deploy_cfg),
               opset_version=onnx_cfg.get('opset_version', 11),
               dynamic_axes=get_dynamic_axes(deploy_cfg, names),
               keep_initializers_as_inputs=onnx_cfg.get('keep_initializers_as_inputs', False),
               optimize=onnx_cfg.get('optimize', False))
    return prefix + '.onnx'


def is_detector(model: nn.Module) -> bool:
    from mmdet.models.detectors import BaseDetector
    return isinstance(model, BaseDetector)


def graph_feed(inputs: torch.Tensor, data_samples: Sequence, detector: bool
               ) -> Dict[str, torch.Tensor]:
    """What an exported graph takes for a prepared batch: ``input``, and for a detector
    ``img_shape``, int64 ``[N, 2]``: each image's resized ``[H, W]`` before padding."""
    feed = {'input': inputs.contiguous()}
    if detector:
        feed[IMG_SHAPE] = torch.tensor([sample.metainfo['img_shape'][:2]
                                        for sample in data_samples], dtype=torch.int64)
    return feed


def numpy_feed(feed: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
    return {name: tensor.detach().cpu().numpy() for name, tensor in feed.items()}


class BackendRunner(nn.Module):
    """What mmdeploy's end-to-end models expect of a backend wrapper: a dict of input
    tensors in, a dict of output tensors out, ``output_names`` and ``output_to_list``."""

    def __init__(self, output_names: Sequence[str]) -> None:
        super().__init__()
        self.output_names = list(output_names)

    def output_to_list(self, outputs: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        return [outputs[name] for name in self.output_names]

    def forward(self, inputs: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {name: torch.from_numpy(np.ascontiguousarray(array))
                for name, array in zip(self.output_names, self.run(numpy_feed(inputs)))}

    def run(self, feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        raise NotImplementedError


class ONNXRuntimeRunner(BackendRunner):
    """An ONNX Runtime CPU session (standard ONNX ops only: no custom-op library).

    ``spinning=False`` stops idle worker threads from spinning between runs, so that
    PyTorch timed in alternation on the same few cores is not slowed by them."""

    def __init__(self, onnx_file: str, output_names: Sequence[str], threads: int,
                 spinning: bool = True) -> None:
        super().__init__(output_names)
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        self.session = ort.InferenceSession(onnx_file, options,
                                            providers=['CPUExecutionProvider'])

    def run(self, feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        return self.session.run(self.output_names, feed)


def compile_openvino(model_file: str, threads: int, precision: str = 'f32'):
    """An ONNX or OpenVINO IR file compiled by OpenVINO for the CPU, at the inference
    precision the IR names (:func:`set_precision_hint`), else ``precision`` (f32 for int8:
    its layers left in float). Explicit, since on CPUs with bf16 units (AMX, AVX512-BF16)
    OpenVINO otherwise computes in bfloat16."""
    import openvino as ov
    core = ov.Core()
    model = core.read_model(model_file)
    hint = precision_hint(model) or OPENVINO_PRECISION[precision]
    return core.compile_model(model, 'CPU', {
        'INFERENCE_NUM_THREADS': threads, 'PERFORMANCE_HINT': 'LATENCY',
        'INFERENCE_PRECISION_HINT': hint})


class OpenVINORunner(BackendRunner):
    """A model compiled by OpenVINO (``openvino.CompiledModel``)."""

    def __init__(self, compiled, output_names: Sequence[str]) -> None:
        super().__init__(output_names)
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def run(self, feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        results = self.request.infer(feed)
        return [results[self.compiled.output(name)] for name in self.output_names]


HINT_KEY = ['runtime_options', 'INFERENCE_PRECISION_HINT']  # read by compile_model
QUANTIZED_OPS = ('FakeQuantize', 'FakeConvert')


def precision_hint(model) -> Optional[str]:
    """The inference precision an OpenVINO model names in its runtime options, if any."""
    return model.get_rt_info(HINT_KEY).astype(str) if model.has_rt_info(HINT_KEY) else None


def set_precision_hint(xml: str, hint: str) -> None:
    """Write ``hint`` (f32, bf16) into the IR's runtime options: ``openvino.Core()
    .compile_model(xml)`` then runs at that precision without being told."""
    import openvino as ov
    model = ov.Core().read_model(xml)
    model.set_rt_info(hint, HINT_KEY)
    temporary = xml[:-len('.xml')] + '.hint.xml'
    ov.save_model(model, temporary, compress_to_fp16=False)
    del model
    os.replace(temporary, xml)
    os.replace(temporary[:-len('.xml')] + '.bin', xml[:-len('.xml')] + '.bin')


def model_precision(model_file: str) -> str:
    """What a backend file runs at, read from the file: int8 where an OpenVINO IR has
    quantized layers, else its precision hint; f32 for ONNX (it names none)."""
    if not model_file.endswith('.xml'):
        return 'f32'
    import openvino as ov
    model = ov.Core().read_model(model_file)
    if any(op.get_type_name() in QUANTIZED_OPS for op in model.get_ops()):
        return 'int8'
    return precision_hint(model) or 'f32'


def check_model_precision(model_file: str, deploy_cfg: Config) -> None:
    """The file must be what the deploy config deploys: quantized for int8 configs, float for
    the others, at the config's precision where the IR names one."""
    expected, found = precision_of(deploy_cfg), model_precision(model_file)
    if expected == found or (expected == 'bf16' and not model_file.endswith('.xml')):
        return
    fix = ('give the quantized IR that deploy.py wrote with this config (end2end_int8.xml)'
           if expected == 'int8' else 'give the IR that deploy.py wrote with this config')
    raise DeployError(f'{osp.basename(model_file)} is a {found} model, but the deploy config '
                      f'is for {expected}: {fix}, or the deploy config it was exported with.')


def make_runner(backend: str, model_file: str, output_names: Sequence[str], threads: int,
                precision: str = 'f32', spinning: bool = True) -> BackendRunner:
    require(backend)
    if backend == 'openvino':
        return OpenVINORunner(compile_openvino(model_file, threads, precision), output_names)
    return ONNXRuntimeRunner(model_file, output_names, threads, spinning)


def export_backbone(backbone: nn.Module, x: torch.Tensor, work_dir: str, backend: str,
                    threads: int) -> BackendRunner:
    """Export a (fused) backbone at ``x``'s fixed shape to ``work_dir/backbone.onnx`` and
    load it in ``backend``; outputs are named ``out0``, ``out1``, ..."""
    require('onnx', backend)
    os.makedirs(work_dir, exist_ok=True)
    onnx_file = osp.join(work_dir, 'backbone.onnx')
    with torch.no_grad(), legacy_onnx_exporter():
        names = [f'out{i}' for i in range(len(backbone(x)))]
        torch.onnx.export(backbone, (x,), onnx_file, input_names=['input'], output_names=names,
                          opset_version=17)
    return make_runner(backend, onnx_file, names, threads)


def save_openvino_model(onnx_file: str, work_dir: str, hint: str) -> str:
    """Convert the ONNX to OpenVINO IR (``end2end.xml`` + ``.bin``, float32 weights: no
    fp16 compression) that runs at the precision ``hint`` (:func:`set_precision_hint`);
    return the .xml."""
    import openvino as ov
    xml = osp.join(work_dir, osp.splitext(osp.basename(onnx_file))[0] + '.xml')
    model = ov.convert_model(onnx_file)
    model.set_rt_info(hint, HINT_KEY)
    ov.save_model(model, xml, compress_to_fp16=False)
    return xml


@functools.lru_cache(maxsize=None)
def _detector_class() -> type:
    """mmdeploy's end-to-end detector on a runner we built (no second backend session),
    feeding the graph each image's ``img_shape``."""
    from mmdeploy.codebase.mmdet.deploy.object_detection_model import End2EndModel

    class BackendDetector(End2EndModel):
        def _init_wrapper(self, backend, backend_files, device):
            self.wrapper = backend_files[0]  # the runner, passed in place of files

        def forward(self, inputs: torch.Tensor, data_samples: list, mode: str = 'predict',
                    **kwargs) -> list:
            check_batch(inputs, self.batch_limit)
            outputs = self.wrapper.output_to_list(self.wrapper(
                graph_feed(inputs, data_samples, detector=True)))
            self.postprocessing_results(outputs[0], outputs[1], outputs[2] if len(outputs) > 2
                                        else None, data_samples)
            return data_samples

    return BackendDetector


STATIC_BATCH = 'a static deploy config exports a graph for batch 1'


def batch_limit(deploy_cfg: Config) -> Optional[str]:
    """Why the exported graph takes batch 1 only, or None."""
    return STATIC_BATCH if input_shape_of(deploy_cfg) is not None else None


def check_batch(inputs: torch.Tensor, limit: Optional[str]) -> None:
    """A graph with a :func:`batch_limit` takes one image at a time."""
    if limit and inputs.shape[0] != 1:
        raise DeployError(f'Given a batch of {inputs.shape[0]}, but {limit}: use batch size 1 '
                          '(--batch-size 1) or a dynamic deploy config '
                          '(configs/deploy/*_dynamic.py).')


def first_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(dim=0, keepdim=True)`` of ``[C, H, W]`` logits (the first maximum wins,
    as in torch), in one pass over the classes: torch reduces over the outer dimension
    about twice slower on the CPU."""
    best = logits[0].clone()
    labels = torch.zeros(logits.shape[1:], dtype=torch.int64)
    for index in range(1, logits.shape[0]):
        labels.masked_fill_(torch.gt(logits[index], best), index)
        torch.maximum(best, logits[index], out=best)
    return labels.unsqueeze(0)


def segmentation_results(logits: torch.Tensor, data_samples: Optional[list],
                         segmentor: nn.Module) -> list:
    """mmseg's ``postprocess_result`` (crop the padding, bilinear resize to the original size,
    argmax) with two exact shortcuts: no resize where the cropped logits already have the
    original size (a same-size bilinear resize returns its input, and costs as much as
    another), and :func:`first_argmax`. Flipped images, one-channel heads and calls without
    samples go to mmseg's own."""
    from mmengine.structures import PixelData
    from mmseg.models.utils import resize
    if (logits.shape[1] == 1 or not data_samples
            or any(sample.metainfo.get('flip') for sample in data_samples)):
        return segmentor.postprocess_result(logits, data_samples)
    height, width = logits.shape[2:]
    for i, sample in enumerate(data_samples):
        meta = sample.metainfo
        left, right, top, bottom = meta.get('img_padding_size',
                                            meta.get('padding_size', [0] * 4))
        image = logits[i:i + 1, :, top:height - bottom, left:width - right]
        if tuple(image.shape[2:]) != tuple(meta['ori_shape'][:2]):
            image = resize(image, size=meta['ori_shape'], mode='bilinear',
                           align_corners=segmentor.align_corners, warning=False)
        image = image[0]
        sample.set_data({'seg_logits': PixelData(data=image),
                         'pred_sem_seg': PixelData(data=first_argmax(image))})
    return data_samples


def label_map_results(labels: torch.Tensor, input_size: Sequence[int],
                      data_samples: Optional[list]) -> list:
    """The label maps of a graph exported with ``argmax_before_upsampling`` (``[N, 1, h, w]``
    at the decode head's resolution) at each image's original size, by nearest neighbour
    (pixel centres): to the network input and its padding cropped where it was padded, else
    straight to the original size; flipped images flipped back, as mmseg does."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = data_samples or [SegDataSample(metainfo=dict(ori_shape=tuple(input_size)))
                               for _ in range(labels.shape[0])]
    height, width = input_size
    for i, sample in enumerate(samples):
        meta = sample.metainfo
        left, right, top, bottom = meta.get('img_padding_size',
                                            meta.get('padding_size', [0] * 4))
        image = labels[i:i + 1].float()  # nearest-exact takes float; labels < 2**24 stay exact
        if left or right or top or bottom:
            image = F.interpolate(image, size=(height, width), mode='nearest-exact')
            image = image[:, :, top:height - bottom, left:width - right]
        if meta.get('flip'):  # mmseg flips the logits back: the labels, here
            direction = meta.get('flip_direction', 'horizontal')
            image = image.flip(dims={'horizontal': (3,), 'vertical': (2,)}.get(direction, (2, 3)))
        if tuple(image.shape[2:]) != tuple(meta['ori_shape'][:2]):
            image = F.interpolate(image, size=tuple(meta['ori_shape'][:2]), mode='nearest-exact')
        sample.set_data({'pred_sem_seg': PixelData(data=image[0].long())})
    return samples


class BackendSegmentor(BaseModel):
    """The exported logits, post-processed as mmseg does for the PyTorch segmentor (crop the
    padding, bilinear resize to the image's size, argmax; :func:`segmentation_results`), or
    the exported label map at the decode head's resolution upsampled
    (:func:`label_map_results`). The runner is ``wrapper``, as in mmdeploy's end-to-end
    models."""

    def __init__(self, runner: BackendRunner, segmentor: nn.Module,
                 batch_limit: Optional[str]) -> None:
        super().__init__(data_preprocessor=copy.deepcopy(segmentor.data_preprocessor))
        self.wrapper = runner
        self.batch_limit = batch_limit
        self.segmentor = [segmentor]  # its post-processing only (a list: not a submodule)

    def forward(self, inputs: torch.Tensor, data_samples: Optional[list] = None,
                mode: str = 'predict') -> list:
        check_batch(inputs, self.batch_limit)
        output = self.wrapper(graph_feed(inputs, data_samples, detector=False))[
            self.wrapper.output_names[0]]
        if not output.is_floating_point():  # the model file says which it exported
            return label_map_results(output, inputs.shape[2:], data_samples)
        return segmentation_results(output, data_samples, self.segmentor[0])


def build_backend_model(model_cfg: Config, deploy_cfg: Config, files: Sequence[str],
                        threads: int, torch_model: Optional[nn.Module] = None,
                        spinning: bool = True) -> nn.Module:
    """The end-to-end model running ``files[0]`` (ONNX, or an OpenVINO IR) in the deploy
    config's backend: mmdeploy's detection post-processing (boxes clipped to each image) or
    mmseg's segmentation post-processing (from ``torch_model``, else a model built from
    ``model_cfg``)."""
    from mmdeploy.utils import get_onnx_config
    check_model_precision(files[0], deploy_cfg)
    runner = make_runner(backend_of(deploy_cfg), files[0],
                         get_onnx_config(deploy_cfg)['output_names'], threads,
                         precision_of(deploy_cfg), spinning)
    return backend_model_around(runner, model_cfg, deploy_cfg, torch_model)


def backend_model_around(runner: BackendRunner, model_cfg: Config, deploy_cfg: Config,
                         torch_model: Optional[nn.Module] = None) -> nn.Module:
    """The end-to-end model of :func:`build_backend_model` on a runner already built; its
    ``wrapper`` is the runner (and may be replaced by another of the same graph)."""
    from mmdeploy.utils import Backend, get_codebase_config
    backend, limit = backend_of(deploy_cfg), batch_limit(deploy_cfg)
    if get_codebase_config(deploy_cfg).get('type') == 'mmseg':
        check_segmentation_output(deploy_cfg)
        segmentor = torch_model if torch_model is not None else build_model(model_cfg)
        return BackendSegmentor(runner, segmentor, limit).eval()
    preprocessor = dict(copy.deepcopy(model_cfg.model.get('data_preprocessor') or {}))
    preprocessor.setdefault('type', 'mmdet.DetDataPreprocessor')
    model = _detector_class()(backend=Backend.get(backend), backend_files=[runner],
                              device='cpu', deploy_cfg=deploy_cfg, model_cfg=model_cfg,
                              data_preprocessor=preprocessor)
    model.batch_limit = limit
    return model.eval()
