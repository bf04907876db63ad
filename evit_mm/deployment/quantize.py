"""OpenVINO in reduced precision: bf16 by the inference-precision hint, int8 by NNCF.

int8 is NNCF's quantization (mixed preset, and the transformer model type that NNCF
recommends for attention models) of the exported end-to-end model, calibrated on images of
the model config's val/test dataloader (or of ``--calib-dataset-cfg``, as in mmdeploy), fed
through the same preprocessing as deployment. The deploy config's ``calib_config``:

* ``num_images``: how many calibration images, spread evenly over the dataset (the record
  lists them);
* ``method``: ``'accuracy_control'`` (default), NNCF's ``quantize_with_accuracy_control``:
  the quantized model is validated with the config's evaluator on (a sample of)
  the same val split, and the operations that cost the most are put back in float until it
  loses at most ``evaluation_config.max_drop`` points; or ``'ptq'``, plain post-training
  quantization (``nncf.quantize``);
* ``validation_images`` / ``ranking_images``: how many val images accuracy control
  validates on, and ranks the operations on (spread evenly);
* ``ignored_scope``: layers kept in float from the start (NNCF's ``IgnoredScope``).
"""
import contextlib
import copy
import logging
import os.path as osp
import re
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional

from mmengine.config import Config

from ..config import read_config
from ..errors import DeployError
from ..runtime import iter_datasets, spread_indices
from ..timing import PRECISION_FLAGS, cpu_flags, cpu_name, isa_cap, usable_flags
from .backends import HINT_KEY, IMG_SHAPE, graph_feed, numpy_feed
from .evaluate import evaluation_config

BF16_FLAGS = ('avx512_bf16', 'amx_bf16')
VNNI_FLAGS = ('avx512_vnni', 'avx_vnni', 'amx_int8')
DEFAULT_CALIBRATION_IMAGES = 64
METHODS = ('accuracy_control', 'ptq')
DEFAULT_VALIDATION_IMAGES = 200
DEFAULT_RANKING_IMAGES = 50


def precision_support(precision: str, flags: Optional[List[str]] = None) -> str:
    """How this CPU runs ``precision`` ('native' or a note); raise :class:`DeployError` when
    OpenVINO would only emulate it (bf16 without bf16 units, or with ``ONEDNN_MAX_CPU_ISA``
    keeping it from them)."""
    if flags is None:
        flags = cpu_flags()
        usable = usable_flags(flags)
        if precision == 'bf16' and any(f in flags for f in BF16_FLAGS) and not any(
                f in usable for f in BF16_FLAGS):
            name, value = isa_cap()
            raise DeployError(f'bf16: {name}={value} lets OpenVINO use only '
                              f'{", ".join(usable) or "none"} of this '
                              "CPU's units, so it would only emulate bf16. Unset it, or use "
                              'the f32 or int8 OpenVINO config.')
        flags = usable
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


def validation_config(model_cfg: Config, deploy_cfg: Config,
                      calib_dataset_cfg: Optional[str]) -> Config:
    """The model config evaluating the calibration source's val split (else its test split)
    with that source's evaluator, its images fed as the deployment feeds them."""
    source = read_config(calib_dataset_cfg) if calib_dataset_cfg else model_cfg
    for split in ('val', 'test'):
        if source.get(f'{split}_dataloader') and source.get(f'{split}_evaluator'):
            cfg = copy.deepcopy(model_cfg)
            cfg.test_dataloader = copy.deepcopy(source[f'{split}_dataloader'])
            cfg.test_evaluator = copy.deepcopy(source[f'{split}_evaluator'])
            return evaluation_config(cfg, deploy_cfg)
    where = calib_dataset_cfg or 'the model config'
    raise DeployError(f"{where} has no val_dataloader with a val_evaluator (nor a test "
                      "dataloader with a test_evaluator), which accuracy-controlled int8 "
                      "validates with; add them, or set calib_config.method='ptq' for plain "
                      'quantization.')


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
    return [dataset.get_data_info(i)['img_path']
            for i in spread_indices(len(dataset), num_images)]


def calibration_method(calib_config: dict) -> str:
    method = calib_config.get('method', METHODS[0])
    if method not in METHODS:
        raise DeployError(f"calib_config.method={method!r}: use 'accuracy_control' (NNCF's "
                          "quantize_with_accuracy_control) or 'ptq' (plain nncf.quantize).")
    return method


@dataclass
class AccuracyControl:
    """What NNCF's accuracy control needs: ``validate(compiled_model, indices, each)`` gives
    ``(score, each image's score if each, else None)`` in metric points for the val images at
    ``indices``; ``indices``, the whole validation sample; the drop NNCF may accept; the float
    model's metrics on the sample (for the record); the drop the float graph already has
    against PyTorch (its own post-processing), which ``max_drop`` leaves out."""
    validate: Callable[..., tuple]
    indices: List[int]
    max_drop: float
    float_metrics: Dict[str, float]
    ranking_images: int = DEFAULT_RANKING_IMAGES
    float_graph_drop: float = 0.0


class _Messages(logging.Handler):
    """NNCF's log lines, kept while accuracy control runs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _number(text: str) -> Optional[float]:
    found = re.search(r'-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?', text)
    return float(found.group()) if found else None


def accuracy_control_report(lines: List[str]) -> dict:
    """What NNCF's accuracy control did, from its log: the drop of the fully quantized model,
    each step in the order tried (operations put back in float, the drop after it; NNCF undoes
    a step that made the drop worse and tries it again later), whether the drop was reached,
    how many operations were quantized and those left in float."""
    report, scores = dict(steps=[], kept_in_float=[], reached=None), {}
    tried_all = False
    for line in lines:
        head, _, rest = line.partition('\n')
        names = [name.strip() for name in rest.splitlines() if name.strip()]
        if head.startswith(('Metric of initial model', 'Metric of quantized model')):
            scores[head.split()[2]] = _number(head.split(':', 1)[1])
        elif head.startswith('Total number of quantized operations'):
            report['quantized_operations'] = int(_number(head))
        elif head.startswith('Reverted '):
            report['steps'].append(dict(put_back_in_float=names, drop=None))
        elif head.startswith('Accuracy drop with the new quantization scope is '):
            report['steps'][-1]['drop'] = _number(head.rsplit(' is ', 1)[1])
        elif head.startswith('Algorithm completed'):
            report['reached'] = True
            if report['steps'] and 'achieved required accuracy drop' in head:
                report['steps'][-1]['drop'] = _number(head.split('accuracy drop', 1)[1])
            elif report['steps']:  # better than the float model: a negative drop
                report['steps'][-1]['drop'] = 0.0
        elif head.startswith('All layers have been checked'):
            tried_all = True
        elif 'could not achieve the required accuracy drop' in head:
            report['reached'] = False
        elif 'were reverted back to the floating-point precision' in head:
            report['kept_in_float'] = names
    if tried_all:  # every operation put back in float: NNCF lists none
        report['kept_in_float'] = list(dict.fromkeys(
            name for step in report['steps'] for name in step['put_back_in_float']))
    if {'initial', 'quantized'} <= set(scores):
        report['quantized_drop'] = scores['initial'] - scores['quantized']
    return report


def fake_quantize_count(model) -> int:
    """The FakeQuantize operations of an OpenVINO model (0: nothing runs in int8)."""
    return sum(op.get_type_name() == 'FakeQuantize' for op in model.get_ops())


@contextlib.contextmanager
def _nncf_log() -> Iterator[_Messages]:
    from nncf.common.logging import nncf_logger
    handler = _Messages()
    nncf_logger.addHandler(handler)
    try:
        yield handler
    finally:
        nncf_logger.removeHandler(handler)


def quantize_int8(model_file: str, images: List[str], prepare: Callable[[str], dict],
                  out_file: str, ignored_scope: Optional[dict] = None,
                  accuracy: Optional[AccuracyControl] = None) -> dict:
    """NNCF int8 quantization of an OpenVINO-readable model, calibrated on ``images``
    preprocessed by ``prepare``; writes ``out_file`` (IR .xml + .bin) and returns what it did
    (``method``; with ``accuracy``, :func:`accuracy_control_report`).

    ``ignored_scope`` (``calib_config.ignored_scope`` of the deploy config: ``names``,
    ``patterns`` and/or ``types``, as ``nncf.IgnoredScope`` takes them) keeps those layers in
    float, e.g. ``dict(patterns=['.*backbone.*'])``. With ``accuracy``, NNCF's accuracy
    control puts the operations that cost the most back in float until the drop holds."""
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
    settings = dict(subset_size=len(feeds), preset=nncf.QuantizationPreset.MIXED,
                    model_type=nncf.ModelType.TRANSFORMER, ignored_scope=scope)
    try:
        if accuracy is None:
            quantized = nncf.quantize(model, nncf.Dataset(feeds), **settings)
            report = dict(method='ptq')
        else:
            quantized, report = _with_accuracy_control(model, nncf.Dataset(feeds), settings,
                                                       accuracy)
    except nncf.ValidationError as err:  # e.g. a pattern that matches no layer
        reason = ' '.join(str(err).split())
        raise DeployError(f'calib_config.ignored_scope={ignored_scope!r}: {reason} Fix the '
                          'names or patterns (layer names are in the IR, end2end.xml).') from None
    quantized.set_rt_info('f32', HINT_KEY)  # its float layers; deploy.py may choose bf16
    ov.save_model(quantized, out_file, compress_to_fp16=False)
    return dict(report, file=out_file, fake_quantize_ops=fake_quantize_count(quantized))


def _whole_sample(items, count: int, whole: int) -> bool:
    """Whether NNCF validates on the whole validation sample: it passes ``dataset.get_data()``
    then (no indices), a ranking subset with its indices, which may be all of them too; a
    list, or an NNCF whose data provider keeps no indices, is told by its length."""
    if hasattr(items, '_indices'):
        return items._indices is None
    return count == whole


def _with_accuracy_control(model, calibration, settings: dict, accuracy: AccuracyControl):
    """``nncf.quantize_with_accuracy_control`` validating with ``accuracy.validate``; the
    model and :func:`accuracy_control_report`."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters
    whole = len(accuracy.indices)

    def validation_fn(compiled, items) -> tuple:
        # the whole sample: each image's score too (from the same predictions), so that NNCF
        # need not run the model again image by image to choose its ranking images
        indices = [int(item) for item in items]
        return accuracy.validate(compiled, indices, each=_whole_sample(items, len(indices), whole))

    restorer = AdvancedAccuracyRestorerParameters(
        ranking_subset_size=min(accuracy.ranking_images, whole))
    with _nncf_log() as log:
        quantized = nncf.quantize_with_accuracy_control(
            model, calibration, nncf.Dataset(accuracy.indices), validation_fn,
            max_drop=accuracy.max_drop, drop_type=nncf.DropType.ABSOLUTE,
            advanced_accuracy_restorer_parameters=restorer, **settings)
    report = accuracy_control_report(log.lines)
    if report['reached'] is None and report.get('quantized_drop') is not None:
        report['reached'] = report['quantized_drop'] <= accuracy.max_drop  # held at once
    report.update(method='accuracy_control', validation_images=whole,
                  ranking_images=min(accuracy.ranking_images, whole),
                  max_drop=accuracy.max_drop, float_metrics=accuracy.float_metrics,
                  float_graph_drop=accuracy.float_graph_drop)
    return quantized, report
