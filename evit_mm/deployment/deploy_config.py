"""mmdeploy deploy configs: reading them, what they ask for, and whether they fit a model config.

Besides mmdeploy's ``onnx_config`` / ``codebase_config`` / ``backend_config``, our
OpenVINO configs may set ``backend_config.precision`` (``'f32'``, the default;
``'bf16'``; ``'int8'``), and int8 configs a ``calib_config`` (how many calibration
images) and an ``evaluation_config`` (the accepted metric drop).
"""
import glob
import os.path as osp
from typing import List, Optional, Sequence

from mmengine.config import Config

from ..config import framework_of, read_config
from ..errors import ConfigError, DeployError

DEPLOY_CONFIGS = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                          'configs', 'deploy')
BACKENDS = ('onnxruntime', 'openvino')  # also the names of their Python modules
PRECISIONS = {'onnxruntime': ('f32',), 'openvino': ('f32', 'bf16', 'int8')}
TASKS = {'Segmentation': 'segmentation', 'ObjectDetection': 'detection',
         'InstanceSegmentation': 'instance-seg'}  # mmdeploy task: our config name prefix
DEFAULT_MAX_DROP = 1.0  # metric points (mAP x 100, mIoU) a reduced precision may lose


def read_deploy_config(path: str) -> Config:
    if not osp.isfile(path):
        raise ConfigError(f'Deploy config {path} not found; configs/deploy/ lists ours.')
    cfg = Config.fromfile(path)
    for key in ('onnx_config', 'codebase_config', 'backend_config'):
        if key not in cfg:
            raise ConfigError(f'{path} is not an mmdeploy deploy config: it has no {key}.')
    backend_of(cfg)
    precision_of(cfg)
    return cfg


def backend_of(deploy_cfg: Config) -> str:
    """The backend a deploy config names, checked against the ones we run."""
    backend = deploy_cfg.get('backend_config', {}).get('type')
    if backend not in BACKENDS:
        raise DeployError(f'Deploy config backend {backend!r} is not supported here; use one of '
                          f'{BACKENDS} (configs/deploy/ has one config per task and backend).')
    return backend


def precision_of(deploy_cfg: Config) -> str:
    backend = backend_of(deploy_cfg)
    precision = deploy_cfg.backend_config.get('precision', 'f32')
    if precision not in PRECISIONS[backend]:
        raise DeployError(f'{backend} runs {" / ".join(PRECISIONS[backend])} here, not '
                          f'{precision!r} (backend_config.precision); the OpenVINO configs offer '
                          'bf16 and int8.')
    return precision


def input_shape_of(deploy_cfg: Config) -> Optional[List[int]]:
    """``[width, height]`` of a static config, None for a dynamic one (mmdeploy's order)."""
    shape = deploy_cfg.onnx_config.get('input_shape')
    return list(shape) if shape is not None else None


def task_of_model(model_cfg: Config) -> str:
    """The mmdeploy task a model config needs."""
    if framework_of(model_cfg) == 'mmseg':
        return 'Segmentation'
    roi_head = model_cfg.model.get('roi_head') or {}
    return 'InstanceSegmentation' if roi_head.get('mask_head') else 'ObjectDetection'


def task_of_deploy(deploy_cfg: Config) -> str:
    codebase = deploy_cfg.codebase_config
    if codebase.get('type') == 'mmseg':
        return 'Segmentation'
    if 'masks' in deploy_cfg.onnx_config.get('output_names', []):
        return 'InstanceSegmentation'
    return 'ObjectDetection'


def fitting_configs(task: str) -> List[str]:
    prefix = TASKS[task] + '_'
    return sorted(osp.basename(path) for path in glob.glob(osp.join(DEPLOY_CONFIGS, '*.py'))
                  if osp.basename(path).startswith(prefix))


def _name(deploy_cfg: Config) -> str:
    return osp.basename(getattr(deploy_cfg, 'filename', '') or 'the deploy config')


def check_task(deploy_cfg: Config, model_cfg: Config, model_cfg_path: str) -> None:
    """The deploy config must be for the model's task (a detector with a detection config...)
    and export what our backend models post-process (:func:`check_segmentation_output`)."""
    wanted, given = task_of_model(model_cfg), task_of_deploy(deploy_cfg)
    if wanted != given:
        raise DeployError(
            f'{_name(deploy_cfg)} is a {given} deploy config, but {model_cfg_path} is a {wanted} '
            f'model. Use one of configs/deploy/{{{",".join(fitting_configs(wanted))}}}.')
    check_segmentation_output(deploy_cfg)


def check_segmentation_output(deploy_cfg: Config) -> None:
    """A segmentation graph must return the logits (``codebase_config.with_argmax=False``):
    mmseg resizes them to the image before the argmax, and so do our backend models; or, in
    a reduced-precision config (checked on the metric), the label map at the decode head's
    resolution (:func:`argmax_before_upsampling`)."""
    codebase = deploy_cfg.get('codebase_config') or {}
    if codebase.get('type') != 'mmseg':
        return
    if codebase.get('with_argmax', True):
        raise DeployError(
            f"{_name(deploy_cfg)} exports the argmax (codebase_config.with_argmax is True, "
            "mmdeploy's default), so labels at the network's resolution, not mmseg's resized "
            "logits; set codebase_config = dict(type='mmseg', task='Segmentation', "
            'with_argmax=False), as configs/deploy/segmentation_*.py do.')
    if argmax_before_upsampling(deploy_cfg) and precision_of(deploy_cfg) == 'f32':
        raise DeployError(
            f'{_name(deploy_cfg)} sets codebase_config.argmax_before_upsampling, which moves '
            'class boundaries (labels upsampled by nearest neighbour, not logits bilinearly): '
            'a float32 config must give PyTorch\'s labels. Use it with bf16 or int8 (their '
            'metric check decides), or remove it.')


def argmax_before_upsampling(deploy_cfg: Config) -> bool:
    """Whether a segmentation graph returns the argmax of the decode head's logits at the
    head's own resolution (``codebase_config.argmax_before_upsampling``; our bf16 and int8
    configs), upsampled afterwards by nearest neighbour, instead of the logits bilinearly
    resized to the input: the full-resolution resize and argmax of every class's logits,
    most of Semantic FPN's post-processing, are gone."""
    return bool((deploy_cfg.get('codebase_config') or {}).get('argmax_before_upsampling'))


def deploy_config_for(model_cfg_path: str, backend: str, shape: Sequence[int],
                      precision: str = 'f32') -> Config:
    """Our deploy config for the model's task, ``backend`` and ``precision``, at a fixed
    ``(H, W)``."""
    task = task_of_model(read_config(model_cfg_path))
    suffix = '' if precision == 'f32' else f'-{precision}'
    size = '512x512' if task == 'Segmentation' else '800x1344'
    name = f'{TASKS[task]}_{backend}{suffix}_static-{size}.py'
    path = osp.join(DEPLOY_CONFIGS, name)
    if not osp.isfile(path):
        raise DeployError(f'No deploy config {name} in configs/deploy/; for this model there '
                          f'are {", ".join(fitting_configs(task))}.')
    cfg = read_deploy_config(path)
    height, width = shape
    cfg.onnx_config.input_shape = [width, height]
    return cfg


def max_metric_drop(deploy_cfg: Config) -> float:
    return float((deploy_cfg.get('evaluation_config') or {}).get('max_drop', DEFAULT_MAX_DROP))
