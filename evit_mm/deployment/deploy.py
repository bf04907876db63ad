"""``tools/deployment/deploy.py``: a trained detector or segmentor to an end-to-end backend model.

The command line of mmdeploy's deploy tool (missing from its wheel)::

    python tools/deployment/deploy.py DEPLOY_CFG MODEL_CFG CHECKPOINT IMAGE --work-dir DIR \\
        [--device cpu] [--test-img IMG ...] [--calib-dataset-cfg CFG] [--dump-info]
        [--iters N] [--threads T] [--allow-empty] [--max-metric-drop POINTS]
        [--metric-images N] [--accept-unchecked] [--verbose]

Exports the fused model through mmdeploy's API to ``DIR/end2end.onnx`` (OpenVINO
configs also get ``DIR/end2end.xml/.bin``; int8 configs a quantized IR), runs PyTorch
and the backend on IMAGE (and every ``--test-img``), draws both
(``output_pytorch.jpg``, ``output_<backend>.jpg``), times both in the same process
and writes ``DIR/deploy_record.json``. Float32 configs must give PyTorch's results
(:mod:`.parity`); bf16 and int8 configs must keep the metrics on the model config's
test set (bbox and segm mAP for Mask R-CNN) within the accepted drop, against PyTorch
evaluated with the model config's own test pipeline, on at most ``--metric-images`` test
images spread evenly (500 by default; the time it will take is printed before it starts).
Either failure exits non-zero, record
kept; without a test set, bf16 and int8 stop before the export unless
``--accept-unchecked``. A static config at another scale than the model's test scale gets
a note before the run. Everything mmdeploy, mmengine and the runtimes print goes to
``DIR/deploy.log``.
"""
import argparse
import contextlib
import copy
import functools
import json
import os
import os.path as osp
import time
from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterator, List, Optional, Union

import mmcv
import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from ..config import framework_of, load_config
from ..errors import DatasetMissingError, DeployError, exits_on_user_errors
from ..inference import build_inference_model
from ..runtime import check_dataset, iter_datasets, spread_indices
from ..timing import environment, summarize, time_interleaved
from .backends import (OpenVINORunner, backend_model_around, build_backend_model,
                       compile_openvino, export_end2end, model_precision, quiet, require,
                       save_openvino_model, set_precision_hint)
from .deploy_config import (argmax_before_upsampling, backend_of, check_task, input_shape_of,
                            max_metric_drop, precision_of, read_deploy_config)
from .evaluate import (DEFAULT_METRIC_IMAGES, ImageEvaluator, TestImages, evaluation_config,
                       main_metrics, reference_config, run_test, sample_test_images,
                       static_scale_note)
from .parity import ParityError, Tolerances, compare_results, max_per_img_of
from .quantize import (DEFAULT_CALIBRATION_IMAGES, DEFAULT_RANKING_IMAGES,
                       DEFAULT_VALIDATION_IMAGES, AccuracyControl, calibration_dataset_cfg,
                       calibration_images, calibration_method, precision_support,
                       quantize_int8, validation_config)


Images = Union[str, np.ndarray, List[Union[str, np.ndarray]]]


class MetricDropError(RuntimeError):
    """A reduced-precision model loses more of the metric than the deploy config accepts."""


def predict(model: torch.nn.Module, data: dict) -> list:
    """``model`` on an already preprocessed batch, post-processing included. Each call gets
    fresh samples: mmdet and mmseg write their predictions into the samples they get."""
    with torch.no_grad():
        return model(data['inputs'], copy.deepcopy(data['data_samples']), mode='predict')


@contextlib.contextmanager
def torch_threads(threads: Optional[int]) -> Iterator[int]:
    """``torch.set_num_threads(threads)`` inside the block only; yields the count in use."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


@dataclass
class Deployment:
    """The fused PyTorch model and its exported end-to-end twin in the backend."""
    backend: str
    precision: str
    model_cfg: Config
    model: torch.nn.Module
    backend_model: torch.nn.Module
    files: Dict[str, str]
    prepare: Callable[[Images], dict]  # image(s) -> preprocessed batch
    processor: object  # mmdeploy's task processor (drawing, SDK files)
    static: bool
    calibration_images: Optional[List[str]] = None
    quantization: Optional[dict] = None  # int8: what NNCF did (quantize.quantize_int8)


def _accuracy_control(model: torch.nn.Module, model_cfg: Config, deploy_cfg: Config,
                      float_xml: str, threads: int, calib_dataset_cfg: Optional[str],
                      max_drop: float) -> AccuracyControl:
    """NNCF's accuracy control validating each variant of the graph as deployed: our backend
    model (its post-processing) around the compiled variant, on the val split with its
    evaluator. The score NNCF compares is 100 plus the worst change of a main metric against
    the float graph (``float_xml``), so that a drop within ``max_drop`` holds for each (Mask
    R-CNN: bbox and segm mAP) and the float graph's score is not 0 (NNCF divides by it);
    each image's score is the mean of its metrics. A graph whose own output already moves
    the metric (``argmax_before_upsampling``) leaves NNCF what remains of ``max_drop`` after
    the float graph's drop against PyTorch."""
    from mmdeploy.utils import get_onnx_config
    calib = deploy_cfg.get('calib_config') or {}
    evaluator = ImageEvaluator(validation_config(model_cfg, deploy_cfg, calib_dataset_cfg))
    indices = spread_indices(len(evaluator),
                             calib.get('validation_images', DEFAULT_VALIDATION_IMAGES))
    names = get_onnx_config(deploy_cfg)['output_names']
    backend_model = backend_model_around(
        OpenVINORunner(compile_openvino(float_xml, threads), names), model_cfg, deploy_cfg, model)
    reference, _ = evaluator(backend_model, indices)
    float_graph_drop = 0.0
    if argmax_before_upsampling(deploy_cfg):
        pytorch, _ = evaluator(model, indices)
        float_graph_drop = max(0.0, max(pytorch[key] - reference[key] for key in reference))
        if float_graph_drop >= max_drop:
            raise DeployError(
                f'The float graph\'s label map at the decode head\'s resolution '
                f'(codebase_config.argmax_before_upsampling) alone loses '
                f'{float_graph_drop:.2f} points against PyTorch on {len(indices)} val images, '
                f'no less than the accepted {max_drop:.2f}: int8 has nothing left to lose. '
                'Use a deploy config without argmax_before_upsampling, or accept a larger '
                'drop (evaluation_config.max_drop).')

    def validate(compiled, items: List[int], each: bool = False) -> tuple:
        backend_model.wrapper = OpenVINORunner(compiled, names)
        metrics, per_image = evaluator(backend_model, items, each)
        worst = min(metrics[key] - reference[key] for key in reference)
        each_image = (None if per_image is None else
                      [sum(found.values()) / len(found) for found in per_image])
        return 100.0 + worst, each_image

    return AccuracyControl(validate, indices, max_drop - float_graph_drop, reference,
                           calib.get('ranking_images', DEFAULT_RANKING_IMAGES),
                           float_graph_drop)


def export_and_load(deploy_cfg: Config, model_cfg_path: str, checkpoint: Optional[str],
                    image: Union[str, np.ndarray], work_dir: str, threads: int,
                    calib_dataset_cfg: Optional[str] = None,
                    spinning: bool = True, max_drop: Optional[float] = None,
                    say: Callable[[str], None] = print) -> Deployment:
    """Build the fused model, export it end to end with ``image`` (int8: quantize it,
    calibrated on the dataset's images, by default under accuracy control within
    ``max_drop`` points, else the deploy config's) and load the backend."""
    backend, precision = backend_of(deploy_cfg), precision_of(deploy_cfg)
    require('mmdeploy', 'onnx', backend, *(['nncf'] if precision == 'int8' else []))
    from mmdeploy.apis.utils import build_task_processor
    os.makedirs(work_dir, exist_ok=True)
    model, model_cfg, _ = build_inference_model(model_cfg_path, checkpoint, fuse=True)
    test_dataset = dict(iter_datasets(model_cfg)).get('test_dataloader')
    if test_dataset is not None and test_dataset.get('pipeline'):
        # mmdeploy prepares inputs with cfg.test_pipeline; tools/test.py, the metric check and
        # a --demo run's saved config use the test dataloader's pipeline: follow that one
        model_cfg.test_pipeline = copy.deepcopy(test_dataset.pipeline)
    processor = build_task_processor(model_cfg, deploy_cfg, 'cpu')
    input_shape = input_shape_of(deploy_cfg)

    def prepare(img: Images) -> dict:
        # mmdeploy edits the config it prepares with (array input: the loading step), so that
        # a file after an array would fail: each call starts from the model config
        processor.model_cfg = copy.deepcopy(model_cfg)
        # the pipeline is built from the registry of the current default scope: the model's
        # own, also after a model of the other framework was built in this process
        with DefaultScope.overwrite_default_scope(framework_of(model_cfg)):
            data, _ = processor.create_input(img, input_shape,
                                             data_preprocessor=model.data_preprocessor)
        return data

    onnx_file = export_end2end(model, deploy_cfg, prepare(image), work_dir)
    files = dict(onnx=onnx_file)
    if backend == 'openvino':  # the IR says the precision it runs at (int8: its float layers)
        files['openvino_xml'] = save_openvino_model(
            onnx_file, work_dir, 'f32' if precision == 'int8' else precision)
    images = quantization = None
    if precision == 'int8':
        calib = deploy_cfg.get('calib_config') or {}
        images = calibration_images(calibration_dataset_cfg(model_cfg, calib_dataset_cfg),
                                    calib.get('num_images', DEFAULT_CALIBRATION_IMAGES))
        accuracy = None
        say(f'[evit_mm deploy] int8: NNCF calibrates on {len(images)} images'
            + (', then validates on the val split, putting the operations that cost the most '
               'back in float until the drop holds (calib_config.method)'
               if calibration_method(calib) == 'accuracy_control' else ''))
        if calibration_method(calib) == 'accuracy_control':
            accuracy = _accuracy_control(model, model_cfg, deploy_cfg, files['openvino_xml'],
                                         threads, calib_dataset_cfg,
                                         max_metric_drop(deploy_cfg) if max_drop is None
                                         else max_drop)
        quantization = quantize_int8(files['openvino_xml'], images, prepare,
                                     osp.join(work_dir, 'end2end_int8.xml'),
                                     calib.get('ignored_scope'), accuracy)
        files['openvino_xml'] = quantization.pop('file')
        _check_quantized(quantization, files['openvino_xml'], say)
    backend_file = files.get('openvino_xml', onnx_file)
    backend_model = build_backend_model(model_cfg, deploy_cfg, [backend_file], threads, model,
                                        spinning)
    return Deployment(backend, precision, model_cfg, model, backend_model, files, prepare,
                      processor, static=input_shape is not None, calibration_images=images,
                      quantization=quantization)


def _check_quantized(report: dict, xml: str, say: Callable[[str], None]) -> None:
    """Refuse an int8 IR with nothing left in int8; say when accuracy control did not reach
    its drop (the metric check then decides)."""
    if report['fake_quantize_ops'] == 0:
        if report['method'] == 'accuracy_control':
            why = ("NNCF's accuracy control put every quantized operation back in float to keep "
                   f"the drop within {report['max_drop']:.2f} points")
            fix = ("quantize with calib_config.method='ptq' (an ignored_scope keeps the "
                   'sensitive layers in float) and accept a larger drop '
                   '(evaluation_config.max_drop)')
        else:
            why = 'NNCF quantized no operation (calib_config.ignored_scope may cover them all)'
            fix = 'narrow calib_config.ignored_scope'
        raise DeployError(f'{xml} has no int8 operation left: {why}. Deploy in f32 or bf16, or '
                          f'{fix}.')
    if report.get('reached') is False:
        say(f"[evit_mm deploy] int8: NNCF's accuracy control could not keep the drop on the val "
            f"images within {report['max_drop']:.2f} points; {len(report['kept_in_float'])} "
            'operations are in float. The metric check on the test images decides.')


def _metric_check(pair: Deployment, deploy_cfg: Config, work_dir: str, max_drop: float,
                  images: TestImages) -> dict:
    """PyTorch's metrics (with the model config's own test pipeline), the backend's (with the
    deploy config's input) on the test set (``images`` of it), and the drops. int8 on a CPU
    with bf16 units: the layers left in float are also tried in bf16, kept if faster and
    within the drop."""
    framework = framework_of(pair.model_cfg)
    result = dict(run=True, max_drop_points=max_drop, images=images.describe())
    runs = [('pytorch', pair.model, reference_config(pair.model_cfg)),
            (pair.backend, pair.backend_model, evaluation_config(pair.model_cfg, deploy_cfg))]
    for name, model, cfg in runs:
        metrics, speed = run_test(model, cfg, osp.join(work_dir, f'test_{name}'), images)
        result[name] = dict(metrics=main_metrics(metrics, framework), fps=speed.get('fps'))
    _judge(result, pair.backend, max_drop)
    if pair.precision == 'int8':
        _choose_float_layers(pair, deploy_cfg, result, runs[1][2], work_dir, max_drop, images)
    return result


def _bf16_trial_runs(precision: str) -> bool:
    """Whether the metric check of ``precision`` also evaluates the int8 IR's float layers in
    bf16 (:func:`_choose_float_layers`)."""
    if precision != 'int8':
        return False
    try:
        precision_support('bf16')
    except DeployError:
        return False
    return True


def _metric_check_estimate(pair: Deployment, data: dict, images: TestImages) -> str:
    """How many images the metric check evaluates and about how long it takes, from one timed
    prediction of each model on ``data`` (after one untimed: the first call of a backend also
    allocates and tunes)."""
    seconds = {}
    for name, model in (('pytorch', pair.model), (pair.backend, pair.backend_model)):
        predict(model, data)
        start = time.perf_counter()
        predict(model, data)
        seconds[name] = time.perf_counter() - start
    runs = 2 if _bf16_trial_runs(pair.precision) else 1
    total = images.count * (seconds['pytorch'] + runs * seconds[pair.backend])
    trial = ', then its float layers in bf16' if runs == 2 else ''
    return (f'metric check on {images.describe()} (--metric-images N to change): PyTorch and '
            f'{pair.backend} {pair.precision} each evaluate them{trial}, about '
            f'{total / 60:.1f} min ({seconds["pytorch"]:.2f} s + {seconds[pair.backend]:.2f} s '
            f"per image at {'x'.join(map(str, data['inputs'].shape[2:]))})")


def _judge(result: dict, backend: str, max_drop: float) -> None:
    reference, got = result['pytorch']['metrics'], result[backend]['metrics']
    result['drops'] = {key: reference[key] - got[key] for key in reference}
    result['drop_points'] = max(result['drops'].values())
    result['ok'] = result['drop_points'] <= max_drop


def _choose_float_layers(pair: Deployment, deploy_cfg: Config, result: dict, cfg: Config,
                         work_dir: str, max_drop: float, images: TestImages) -> None:
    """The inference precision of an int8 IR's float layers: f32, or bf16 where the CPU has
    bf16 units and it is faster within the drop. Written into the IR (its runtime options),
    so that a plain ``openvino.Core().compile_model`` runs what was checked."""
    result['float_layers'] = 'f32'
    try:
        precision_support('bf16')
    except DeployError as err:
        result['float_layers_note'] = f'bf16 not tried: {err}'
        return
    xml = pair.files['openvino_xml']
    set_precision_hint(xml, 'bf16')
    model = build_backend_model(pair.model_cfg, deploy_cfg, [xml],
                                torch.get_num_threads(), pair.model, spinning=False)
    metrics, speed = run_test(model, cfg, osp.join(work_dir, 'test_int8_bf16'), images)
    trial = dict(metrics=main_metrics(metrics, framework_of(pair.model_cfg)),
                 fps=speed.get('fps'))
    result['float_layers_bf16'] = trial
    drop = max(result['pytorch']['metrics'][k] - v for k, v in trial['metrics'].items())
    if drop <= max_drop and (trial['fps'] or 0) > (result[pair.backend]['fps'] or 0):
        result['float_layers'] = 'bf16'
        result[pair.backend] = trial
        pair.backend_model = model
        _judge(result, pair.backend, max_drop)
    else:
        set_precision_hint(xml, 'f32')


def _draw(pair: Deployment, image: str, results: Dict[str, object], work_dir: str
          ) -> Dict[str, str]:
    """Each side's result drawn by the model config's visualizer (mmdeploy's), to
    ``WORK_DIR/output_<name>.jpg`` as mmdeploy's deploy tool names them.

    The file is given to the visualizer directly: mmdeploy's segmentation ``visualize`` passes
    none, so its drawing went wherever the visualizer's storage backend pointed (the current
    folder, for a second deployment in one process)."""
    rgb = mmcv.imread(image, channel_order='rgb')
    drawn = {}
    for name, result in results.items():
        out_file = osp.join(work_dir, f'output_{name}.jpg')
        # mmengine keeps one visualizer per window name: one per side and work dir
        visualizer = pair.processor.get_visualizer(f'{name}:{osp.abspath(work_dir)}', work_dir)
        visualizer.add_datasample(f'output_{name}', rgb, data_sample=result, draw_gt=False,
                                  show=False, out_file=out_file)
        drawn[name] = out_file
    return drawn


def _check_reduced_precision(precision: str, model_cfg: Config, accept_unchecked: bool
                             ) -> Optional[str]:
    """bf16 and int8 are checked on the model config's test set: without one, stop (before
    the export) unless ``accept_unchecked``; then return why the check will not run."""
    if precision == 'f32':
        return None
    try:
        check_dataset(model_cfg, splits=('test',))
    except DatasetMissingError as err:
        if accept_unchecked:
            return str(err)
        raise DeployError(f"{precision} changes the model's results, which are checked on the "
                          f"model config's test set, and it is missing: {err} To deploy an "
                          'unchecked model anyway, add --accept-unchecked.') from None
    return None


def deploy(deploy_cfg_path: str, model_cfg_path: str, checkpoint: str, image: str,
           work_dir: str, test_images: Optional[List[str]] = None, iters: int = 10,
           warmup: int = 2, threads: Optional[int] = None, dump_info: bool = False,
           tolerances: Optional[Tolerances] = None, calib_dataset_cfg: Optional[str] = None,
           max_drop: Optional[float] = None, verbose: bool = False,
           accept_unchecked: bool = False,
           metric_images: Optional[int] = DEFAULT_METRIC_IMAGES) -> dict:
    """Export, check (parity, or the metrics for reduced precision), time, draw; return (and
    write) the record."""
    deploy_cfg = read_deploy_config(deploy_cfg_path)
    backend, precision = backend_of(deploy_cfg), precision_of(deploy_cfg)
    require('mmdeploy', 'onnx', backend, *(['nncf'] if precision == 'int8' else []))
    model_cfg = load_config(model_cfg_path, pretrained=False)
    check_task(deploy_cfg, model_cfg, model_cfg_path)
    support = precision_support(precision) if precision != 'f32' else 'native'
    for path in [image] + list(test_images or []):
        if not osp.isfile(path):
            raise DeployError(f'Image {path} not found.')
    unchecked = _check_reduced_precision(precision, model_cfg, accept_unchecked)
    scale_note = static_scale_note(model_cfg, deploy_cfg)
    if scale_note:
        print(f'[evit_mm deploy] note: {scale_note}', flush=True)
    max_drop = max_metric_drop(deploy_cfg) if max_drop is None else max_drop
    tolerances = replace(tolerances or Tolerances(), max_per_img=max_per_img_of(model_cfg))
    os.makedirs(work_dir, exist_ok=True)
    log_file = osp.join(work_dir, 'deploy.log')
    with quiet(log_file, verbose) as say, torch_threads(threads) as used_threads:
        pair = export_and_load(deploy_cfg, model_cfg_path, checkpoint, image, work_dir,
                               used_threads, calib_dataset_cfg, spinning=False,
                               max_drop=max_drop, say=say)
        data = pair.prepare(image)
        record = dict(deploy_config=deploy_cfg_path, model_config=model_cfg_path,
                      checkpoint=checkpoint, backend=backend, precision=precision,
                      precision_support=support, files=pair.files, log=log_file,
                      input_shape=list(data['inputs'].shape), static=pair.static,
                      scale_note=scale_note, fused=True,
                      calibration_images=pair.calibration_images,
                      calib_config=(dict(deploy_cfg.get('calib_config') or {})
                                    if precision == 'int8' else None),
                      quantization=pair.quantization, parity={},
                      **environment('cpu'))
        exact = precision == 'f32'
        failures = []
        for path in [image] + list(test_images or []):
            sample = data if path == image else pair.prepare(path)
            outputs = dict(pytorch=predict(pair.model, sample)[0],
                           **{backend: predict(pair.backend_model, sample)[0]})
            report = compare_results(outputs['pytorch'], outputs[backend], tolerances)
            record['parity'][path] = dict(input_shape=list(sample['inputs'].shape),
                                          checked=exact, **report.as_dict())
            if exact:
                failures += [f'{path}: {failure}' for failure in report.failures]
            if path == image:
                record['drawn'] = _draw(pair, image, outputs, work_dir)
        if not exact and unchecked:
            record['metric_check'] = dict(run=False, reason=unchecked)
        elif not exact:
            images = sample_test_images(evaluation_config(pair.model_cfg, deploy_cfg),
                                        metric_images)
            say(f'[evit_mm deploy] {_metric_check_estimate(pair, data, images)}')
            record['metric_check'] = _metric_check(pair, deploy_cfg, work_dir, max_drop, images)
        record['model_precision'] = model_precision(pair.files.get('openvino_xml',
                                                                   pair.files['onnx']))
        times = time_interleaved({'pytorch': functools.partial(predict, pair.model, data),
                                  backend: functools.partial(predict, pair.backend_model, data)},
                                 iters, warmup)
        if dump_info:
            from mmdeploy.backend.sdk.export_info import export2SDK
            export2SDK(deploy_cfg, pair.model_cfg, work_dir, pth=checkpoint, device='cpu')
    speed = record['speed'] = {name: summarize(seconds) for name, seconds in times.items()}
    record['speedup'] = speed['pytorch']['ms_per_img'] / speed[backend]['ms_per_img']
    with open(osp.join(work_dir, 'deploy_record.json'), 'w') as f:
        json.dump(record, f, indent=2)
    if failures:
        raise ParityError(f'{backend} differs from PyTorch ({len(failures)} problem(s)):\n  '
                          + '\n  '.join(failures))
    check = record.get('metric_check') or {}
    if check.get('run') and not check['ok']:
        lost = ', '.join(f"{key} {check['pytorch']['metrics'][key]:.2f} -> "
                         f"{check[backend]['metrics'][key]:.2f}" for key in check['drops'])
        raise MetricDropError(
            f"{backend} {precision} loses {check['drop_points']:.2f} points ({lost}), more "
            f'than the accepted {max_drop:.2f} (evaluation_config.max_drop or '
            '--max-metric-drop)')
    return record


def _quantization_lines(report: Optional[dict]) -> List[str]:
    if not report:
        return []
    if report['method'] == 'ptq':
        return ["  int8: plain post-training quantization (calib_config.method='ptq'), "
                f"{report['fake_quantize_ops']} FakeQuantize operations"]
    drop = report.get('quantized_drop')
    line = (f"  int8 under accuracy control on {report['validation_images']} val images: fully "
            f"quantized, the worst metric dropped {'–' if drop is None else f'{drop:.2f}'} "
            f"points (accepted {report['max_drop']:.2f})")
    if report.get('float_graph_drop'):
        line += (f"; the float graph's labels at the decode head's resolution already cost "
                 f"{report['float_graph_drop']:.2f} against PyTorch")
    if not report['steps']:
        return [line + ': nothing put back in float']
    last = report['steps'][-1]['drop']
    reached = 'reached' if report['reached'] else 'NOT reached'
    return [line + f"; {len(report['kept_in_float'])} of "
            f"{report.get('quantized_operations', '?')} quantized operations put back in float "
            f"in {len(report['steps'])} steps, drop {'–' if last is None else f'{last:.2f}'} "
            f"({reached}; the record lists them)"]


def summary_lines(record: Dict) -> List[str]:
    backend, precision = record['backend'], record['precision']
    lines = [f"[evit_mm deploy] {record['files'].get('openvino_xml', record['files']['onnx'])} "
             f"({backend} {precision}, input {'x'.join(map(str, record['input_shape']))}; "
             f"log: {record['log']})"]
    for path, parity in record['parity'].items():
        worst = ', '.join(f'{k} {v:.4g}' for k, v in parity['worst'].items()) or 'nothing above '\
            'the score threshold'
        verdict = ('OK' if parity['ok'] else 'FAILED') if parity['checked'] else 'info'
        counts = (f", {parity['counts'][0]} vs {parity['counts'][1]} above the threshold"
                  if parity.get('counts') else '')
        lines.append(f"  {'parity' if parity['checked'] else 'agreement'} on {path}: "
                     f"{verdict}, {parity['compared']} compared{counts}, worst {worst}")
    if record.get('scale_note'):
        lines.append(f"  note: {record['scale_note']}")
    check = record.get('metric_check')
    if check is not None and check.get('run'):
        lines.append(f"  metric check on {check['images']}")
        for key, drop in check['drops'].items():
            lines.append(f"  {key} on the test set: PyTorch {check['pytorch']['metrics'][key]:.2f}"
                         f" (the model's own test pipeline), {backend} {precision} "
                         f"{check[backend]['metrics'][key]:.2f} points (drop {drop:+.2f}, "
                         f"accepted {check['max_drop_points']:.2f}): "
                         f"{'OK' if drop <= check['max_drop_points'] else 'FAILED'}")
        if 'float_layers' in check:
            lines.append(f"  int8 layers kept in float run in {check['float_layers']} (written "
                         'into the IR)')
    elif check is not None:
        lines.append(f"  accuracy NOT checked (--accept-unchecked): {check['reason']}")
    lines += _quantization_lines(record.get('quantization'))
    if record['precision_support'] != 'native':
        lines.append(f"  note: {record['precision_support']}")
    speed = record['speed']
    lines.append(f"  FPS ({record['threads']} threads, batch 1, post-processing included; "
                 f"{record['device_name']}, {', '.join(record['cpu_flags']) or 'no flags'}): "
                 f"PyTorch fused {speed['pytorch']['fps']:.2f}, {backend} {precision} "
                 f"{speed[backend]['fps']:.2f} ({record['speedup']:.2f}x)")
    if record.get('drawn'):
        lines.append(f"  drawn: {', '.join(p for p in record['drawn'].values() if p)}")
    return lines


@exits_on_user_errors('deploy')
def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description='Export a detector or segmentor end to end '
                                                 'with mmdeploy; check and time the backend')
    parser.add_argument('deploy_cfg', help='deploy config, e.g. configs/deploy/'
                                           'detection_onnxruntime_static-800x1344.py')
    parser.add_argument('model_cfg', help='model config (ours)')
    parser.add_argument('checkpoint', help='trained checkpoint, e.g. work_dirs/.../epoch_12.pth')
    parser.add_argument('img', help='image used to export, check, draw and time the model')
    parser.add_argument('--work-dir', default=os.getcwd(), help='where the backend files go')
    parser.add_argument('--device', default='cpu', choices=['cpu'],
                        help='export device; the CPU backends run on the CPU (mmdeploy\'s option, '
                             'kept for its command line)')
    parser.add_argument('--test-img', nargs='+', default=[],
                        help='more images to check on (dynamic configs: at their size)')
    parser.add_argument('--calib-dataset-cfg',
                        help="int8: a config whose val_dataloader (else test_dataloader) gives "
                             "the calibration images (default: the model config's)")
    parser.add_argument('--dump-info', action='store_true',
                        help="also write mmdeploy's SDK files (deploy/pipeline/detail.json)")
    parser.add_argument('--iters', type=int, default=10, help='timed rounds (after 2 warm-up)')
    parser.add_argument('--threads', type=int, help='CPU threads for PyTorch and the backend')
    parser.add_argument('--allow-empty', action='store_true',
                        help='pass parity when neither side detects anything above the score '
                             'threshold')
    parser.add_argument('--max-metric-drop', type=float,
                        help='bf16/int8: metric points the backend may lose on the test set '
                             '(default: evaluation_config.max_drop of the deploy config, else 1.0)')
    parser.add_argument('--metric-images', type=int, default=DEFAULT_METRIC_IMAGES, metavar='N',
                        help='bf16/int8: check the metric on at most N test images, spread '
                             f'evenly (default {DEFAULT_METRIC_IMAGES}; 0: all of them)')
    parser.add_argument('--accept-unchecked', action='store_true',
                        help='bf16/int8 without a test set: deploy anyway, the accuracy NOT '
                             'checked (the record and summary say so)')
    parser.add_argument('--verbose', action='store_true',
                        help="show mmdeploy's, mmengine's and the runtimes' output instead of "
                             'writing it to WORK_DIR/deploy.log')
    args = parser.parse_args(argv)
    try:
        record = deploy(args.deploy_cfg, args.model_cfg, args.checkpoint, args.img,
                        args.work_dir, args.test_img, iters=args.iters, threads=args.threads,
                        dump_info=args.dump_info,
                        tolerances=Tolerances(allow_empty=args.allow_empty),
                        calib_dataset_cfg=args.calib_dataset_cfg,
                        max_drop=args.max_metric_drop, verbose=args.verbose,
                        accept_unchecked=args.accept_unchecked,
                        metric_images=args.metric_images)
    except (ParityError, MetricDropError) as err:
        kind = 'PARITY' if isinstance(err, ParityError) else 'METRIC CHECK'
        raise SystemExit(f'[evit_mm deploy] {kind} FAILED: {err}\n(record: '
                         f"{osp.join(args.work_dir, 'deploy_record.json')})")
    print('\n'.join(summary_lines(record)))
    return record
