"""OpenVINO in reduced precision: bf16 by the inference-precision hint, int8 by NNCF.

int8 is NNCF's post-training quantization (``nncf.quantize``; mixed preset, and the
transformer model type that NNCF recommends for attention models) of the exported
end-to-end model, calibrated on images of the model config's val/test dataloader (or
of ``--calib-dataset-cfg``, as in mmdeploy), fed through the same preprocessing as
deployment. ``calib_config.num_images`` in the deploy config
sets how many, spread evenly over the dataset; the record lists them.
``calib_config.ignored_scope`` keeps layers in float (NNCF's ``IgnoredScope``).
"""
import os.path as osp
from typing import Callable, List, Optional

import numpy as np
from mmengine.config import Config

from ..config import read_config
from ..errors import DeployError
from ..runtime import iter_datasets
from ..timing import PRECISION_FLAGS, cpu_flags, cpu_name
from .backends import HINT_KEY, IMG_SHAPE, graph_feed, numpy_feed

BF16_FLAGS = ('avx512_bf16', 'amx_bf16')
VNNI_FLAGS = ('avx512_vnni', 'avx_vnni', 'amx_int8')
DEFAULT_CALIBRATION_IMAGES = 64


def precision_support(precision: str, flags: Optional[List[str]] = None) -> str:
    """How this CPU runs ``precision`` ('native' or a note); raise :class:`DeployError` when
    OpenVINO would only emulate it (bf16 without bf16 units)."""
    flags = cpu_flags() if flags is None else flags
    if precision == 'bf16' and not any(f in flags for f in BF16_FLAGS):
        have = f'only {", ".join(flags)}' if flags else f'none of {", ".join(PRECISION_FLAGS)}'
        raise DeployError(
            f'bf16 needs a CPU with bf16 units ({" or ".join(BF16_FLAGS)}); this CPU '
            f'({cpu_name()}) has {have}, so OpenVINO would only emulate bf16. Use the f32 or '
            'int8 OpenVINO config.')
    if precision == 'int8' and not any(f in flags for f in VNNI_FLAGS):
        return (f'int8 without VNNI units ({", ".join(VNNI_FLAGS)}): OpenVINO runs it on '
                'plain AVX2/AVX-512 integer instructions, slower than with VNNI')
    return 'native'


def calibration_dataset_cfg(model_cfg: Config, calib_dataset_cfg: Optional[str]) -> Config:
    """The dataset to calibrate on: ``val_dataloader`` (else ``test_dataloader``) of
    ``calib_dataset_cfg`` when given (mmdeploy's ``--calib-dataset-cfg``), else of the model
    config."""
    source = model_cfg
    if calib_dataset_cfg:
        if not osp.isfile(calib_dataset_cfg):
            raise DeployError(f'Calibration dataset config {calib_dataset_cfg} not found.')
        source = read_config(calib_dataset_cfg)
    datasets = dict(iter_datasets(source))
    dataset = datasets.get('val_dataloader') or datasets.get('test_dataloader')
    if dataset is None:
        where = calib_dataset_cfg or 'the model config'
        raise DeployError(f'{where} has no val_dataloader or test_dataloader to calibrate on.')
    return dataset


def calibration_images(dataset_cfg: Config, num_images: int) -> List[str]:
    """``num_images`` image files spread evenly over the dataset."""
    from mmengine.registry import DATASETS
    root = dataset_cfg.get('data_root', '')
    try:
        dataset = DATASETS.build(dict(dataset_cfg, pipeline=[], serialize_data=False))
    except (FileNotFoundError, OSError) as err:
        raise DeployError(f'Calibration dataset under {root!r} cannot be read ({err}); int8 '
                          'needs images to calibrate on: give the model config\'s data root or '
                          '--calib-dataset-cfg.') from err
    if len(dataset) == 0:
        raise DeployError(f'Calibration dataset under {root!r} is empty; int8 needs images to '
                          'calibrate on.')
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(num_images, len(dataset)))
                      .astype(int))
    return [dataset.get_data_info(int(i))['img_path'] for i in picks]


def quantize_int8(model_file: str, images: List[str], prepare: Callable[[str], dict],
                  out_file: str, ignored_scope: Optional[dict] = None) -> str:
    """NNCF post-training int8 quantization of an OpenVINO-readable model, calibrated on
    ``images`` preprocessed by ``prepare``; writes ``out_file`` (IR .xml + .bin).

    ``ignored_scope`` (``calib_config.ignored_scope`` of the deploy config: ``names``,
    ``patterns`` and/or ``types``, as ``nncf.IgnoredScope`` takes them) keeps those layers in
    float, e.g. ``dict(patterns=['.*backbone.*'])``."""
    import nncf
    import openvino as ov
    model = ov.Core().read_model(model_file)
    detector = IMG_SHAPE in {name for port in model.inputs for name in port.get_names()}
    feeds = []
    for path in images:
        data = prepare(path)
        feeds.append(numpy_feed(graph_feed(data['inputs'], data['data_samples'], detector)))
    try:
        scope = nncf.IgnoredScope(**(ignored_scope or {}))
    except TypeError as err:
        raise DeployError(f'calib_config.ignored_scope={ignored_scope!r} is not an NNCF '
                          f'IgnoredScope ({err}); give names, patterns and/or types, e.g. '
                          "dict(patterns=['.*backbone.*']).") from None
    try:
        quantized = nncf.quantize(model, nncf.Dataset(feeds), subset_size=len(feeds),
                                  preset=nncf.QuantizationPreset.MIXED,
                                  model_type=nncf.ModelType.TRANSFORMER, ignored_scope=scope)
    except nncf.ValidationError as err:  # e.g. a pattern that matches no layer
        reason = ' '.join(str(err).split())
        raise DeployError(f'calib_config.ignored_scope={ignored_scope!r}: {reason} Fix the '
                          'names or patterns (layer names are in the IR, end2end.xml).') from None
    quantized.set_rt_info('f32', HINT_KEY)  # its float layers; deploy.py may choose bf16
    ov.save_model(quantized, out_file, compress_to_fp16=False)
    return out_file
