"""``tools/deployment/benchmark.py``: a trained model's metric and speed in every runtime and
precision this CPU runs, in one table.

    python tools/deployment/benchmark.py MODEL_CFG CHECKPOINT [--runtimes ...]
        [--precisions ...] [--metric-images N] [--int8-method M] [--rounds R]
        [--work-dir DIR] [--threads T] [--verbose]

For PyTorch (fused, float32), ONNX Runtime float32 and OpenVINO float32, bf16 and int8, it
exports the model with our dynamic deploy config of its task into
``DIR/<runtime>_<precision>/`` (or reuses what an earlier run exported there from the same
configs and checkpoint, all unchanged) and evaluates it on the model config's test split (at
most ``--metric-images`` images, spread evenly). Then it times every runtime end to end as
``tools/test.py`` times a model (``test_step``: preprocessing, network, post-processing;
data loading excluded), batch 1, on the same ``TIMED_IMAGES`` of those images: ``--rounds``
rounds after a warm-up round, the runtimes in alternation so that drift hits all alike, the
median round giving the FPS. It prints one
markdown table (metric, drop against PyTorch, FPS, speed-up, file size) and writes
``DIR/benchmark.json`` with the CPU model, its flags, the threads, the input size and the
date. A precision the CPU has no units for is listed with the reason, never emulated.
"""
import argparse
import copy
import datetime
import hashlib
import json
import os
import os.path as osp
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate

from ..config import framework_of, load_config
from ..errors import DeployError, exits_on_user_errors
from ..inference import build_inference_model
from ..runtime import check_dataset, spread_indices
from ..timing import caps_text, environment, time_interleaved
from .backends import build_backend_model, quiet, require
from .deploy import export_and_load, torch_threads
from .deploy_config import DEPLOY_CONFIGS, TASKS, read_deploy_config, task_of_model
from .evaluate import (DEFAULT_METRIC_IMAGES, build_test_dataset, evaluation_config,
                       main_metrics, reference_config, run_test, sample_test_images,
                       test_scale)
from .quantize import METHODS, precision_support

RUNTIMES = {'pytorch': ('f32',), 'onnxruntime': ('f32',), 'openvino': ('f32', 'bf16', 'int8')}
BACKEND_FILES = {'onnxruntime': ('end2end.onnx',), 'openvino': ('end2end_int8.xml', 'end2end.xml')}
SOURCE_FILE = 'exported_from.json'
TIMED_IMAGES = 10  # of the evaluated images, spread evenly, timed in every runtime


def dynamic_deploy_config(task: str, backend: str, precision: str) -> str:
    suffix = '' if precision == 'f32' else f'-{precision}'
    return osp.join(DEPLOY_CONFIGS, f'{TASKS[task]}_{backend}{suffix}_dynamic.py')


def _source(model_cfg_path: str, deploy_cfg: Config, checkpoint: str) -> dict:
    """What a backend file is exported from: the model and deploy configs as they read (their
    bases included) and the checkpoint as it is."""
    def digest(cfg: Config) -> str:
        return hashlib.sha256(cfg.pretty_text.encode()).hexdigest()

    return dict(model_config=osp.abspath(model_cfg_path),
                model_config_sha256=digest(Config.fromfile(model_cfg_path)),
                deploy_config_sha256=digest(deploy_cfg), checkpoint=osp.abspath(checkpoint),
                checkpoint_bytes=osp.getsize(checkpoint),
                checkpoint_mtime_ns=os.stat(checkpoint).st_mtime_ns)


def mark_exported(work_dir: str, model_cfg_path: str, deploy_cfg: Config,
                  checkpoint: str) -> None:
    """Record in ``work_dir`` what its backend files were exported from."""
    with open(osp.join(work_dir, SOURCE_FILE), 'w') as f:
        json.dump(_source(model_cfg_path, deploy_cfg, checkpoint), f, indent=2)


def _existing_file(work_dir: str, backend: str, precision: str, model_cfg_path: str,
                   deploy_cfg: Config, checkpoint: str) -> Optional[str]:
    """The backend file an earlier run exported in ``work_dir`` for this precision from the
    same configs and checkpoint (unchanged since), if any."""
    try:
        with open(osp.join(work_dir, SOURCE_FILE)) as f:
            if json.load(f) != _source(model_cfg_path, deploy_cfg, checkpoint):
                return None
    except (OSError, ValueError):
        return None
    names = BACKEND_FILES[backend]
    if backend == 'openvino':
        names = names[:1] if precision == 'int8' else names[1:]
    found = [osp.join(work_dir, name) for name in names if osp.isfile(osp.join(work_dir, name))]
    return found[0] if found else None


def _size_mb(path: str) -> float:
    files = [path] + ([path[:-len('.xml')] + '.bin'] if path.endswith('.xml') else [])
    return sum(osp.getsize(f) for f in files if osp.isfile(f)) / 2 ** 20


def benchmark(model_cfg_path: str, checkpoint: str, work_dir: str,
              runtimes: Sequence[str] = tuple(RUNTIMES),
              precisions: Sequence[str] = ('f32', 'bf16', 'int8'),
              metric_images: Optional[int] = DEFAULT_METRIC_IMAGES,
              threads: Optional[int] = None, verbose: bool = False, rounds: int = 3,
              int8_method: Optional[str] = None) -> dict:
    """Metric and end-to-end speed of each runtime and precision on the test split; the
    record (also written to ``work_dir/benchmark.json``). ``int8_method`` replaces the int8
    deploy config's ``calib_config.method``."""
    if rounds < 1:
        raise DeployError(f'--rounds {rounds}: time at least one round.')
    if int8_method is not None and int8_method not in METHODS:
        raise DeployError(f'--int8-method {int8_method}: use one of {", ".join(METHODS)}.')
    model_cfg = load_config(model_cfg_path, pretrained=False)
    framework = framework_of(model_cfg)
    check_dataset(model_cfg, splits=('test',))
    require(*[name for name in runtimes if name != 'pytorch'],
            *(['mmdeploy', 'onnx'] if set(runtimes) - {'pytorch'} else []),
            *(['nncf'] if 'openvino' in runtimes and 'int8' in precisions else []))
    os.makedirs(work_dir, exist_ok=True)
    log = osp.join(work_dir, 'benchmark.log')
    rows: List[dict] = []
    timed: Dict[str, Tuple[torch.nn.Module, Config]] = {}
    with quiet(log, verbose) as say, torch_threads(threads) as used:
        images = sample_test_images(reference_config(model_cfg), metric_images)
        export_image = build_test_dataset(model_cfg).get_data_info(0)['img_path']
        say(f'[evit_mm benchmark] {images.describe()}; log: {log}')
        torch_model = build_inference_model(model_cfg_path, checkpoint, fuse=True)[0]
        for runtime in runtimes:
            for precision in RUNTIMES[runtime]:
                if precision not in precisions:
                    continue
                name = f'{runtime} {precision}'
                say(f'[evit_mm benchmark] {name} ...')
                try:
                    row, timed[name] = _measure(
                        runtime, precision, model_cfg, model_cfg_path, checkpoint, torch_model,
                        export_image, osp.join(work_dir, name.replace(' ', '_')), used,
                        images, int8_method, say)
                    rows.append(dict(name=name, **row))
                except DeployError as err:
                    rows.append(dict(name=name, not_run=str(err)))
        if timed:
            say(f'[evit_mm benchmark] timing {", ".join(timed)} in alternation ...')
        seconds, count = _time_in_alternation(timed, images, rounds)
    for row in rows:
        if row['name'] in seconds:
            row['fps'] = count / seconds[row['name']]
            row['ms'] = 1000 * seconds[row['name']] / count
    reference = next((row for row in rows if row['name'] == 'pytorch f32' and 'metrics' in row),
                     None)
    for row in rows:
        if reference is not None and 'metrics' in row:
            row['drops'] = {key: reference['metrics'][key] - value
                            for key, value in row['metrics'].items()}
            row['speedup'] = row['fps'] / reference['fps']
    scale = test_scale(model_cfg)
    record = dict(model_config=model_cfg_path, checkpoint=checkpoint, framework=framework,
                  images=images.describe(), rows=rows,
                  timing=dict(images=count, rounds=rounds, warmup_rounds=1),
                  int8_method=int8_method or 'as the int8 deploy config',
                  input=(f'test resize {scale[0][0]}x{scale[0][1]} (keep_ratio={scale[1]}), '
                         'each image at its own size' if scale else 'each image at its own size'),
                  date=datetime.date.today().isoformat(), **environment('cpu'))
    with open(osp.join(work_dir, 'benchmark.json'), 'w') as f:
        json.dump(record, f, indent=2)
    return record


def _one_at_a_time(cfg: Config) -> Config:
    """The test config with batch size 1: every row is evaluated as the caption says."""
    cfg.test_dataloader.batch_size = 1
    return cfg


def _measure(runtime: str, precision: str, model_cfg, model_cfg_path: str, checkpoint: str,
             torch_model: torch.nn.Module, image: str, work_dir: str, threads: int, images,
             int8_method: Optional[str], say) -> Tuple[dict, Tuple[torch.nn.Module, Config]]:
    """The row of a runtime (its metrics and file) and what times it: the model and the
    config whose test pipeline feeds it."""
    framework = framework_of(model_cfg)
    if runtime == 'pytorch':
        cfg = _one_at_a_time(reference_config(model_cfg))
        metrics, _ = run_test(torch_model, cfg, work_dir, images)
        weights = sum(t.numel() * t.element_size() for t in torch_model.state_dict().values())
        return (dict(metrics=main_metrics(metrics, framework), file=checkpoint,
                     size_mb=weights / 2 ** 20),  # the fused model's weights
                (torch_model, cfg))
    if precision != 'f32':
        precision_support(precision)  # DeployError where the CPU would only emulate it
    deploy_cfg = read_deploy_config(dynamic_deploy_config(task_of_model(model_cfg), runtime,
                                                          precision))
    if precision == 'int8' and int8_method is not None:
        deploy_cfg.calib_config = dict(deploy_cfg.get('calib_config') or {}, method=int8_method)
    file = _existing_file(work_dir, runtime, precision, model_cfg_path, deploy_cfg, checkpoint)
    if file is None:
        if osp.isfile(osp.join(work_dir, SOURCE_FILE)):  # not valid for what is exported now
            os.remove(osp.join(work_dir, SOURCE_FILE))
        pair = export_and_load(deploy_cfg, model_cfg_path, checkpoint, image, work_dir, threads,
                               spinning=False, say=say)
        mark_exported(work_dir, model_cfg_path, deploy_cfg, checkpoint)
        file = pair.files.get('openvino_xml', pair.files['onnx'])
        model = pair.backend_model
    else:
        say(f'[evit_mm benchmark]   reusing {file}')
        model = build_backend_model(model_cfg, deploy_cfg, [file], threads, torch_model,
                                    spinning=False)
    cfg = _one_at_a_time(evaluation_config(model_cfg, deploy_cfg))
    metrics, _ = run_test(model, cfg, work_dir, images)
    return (dict(metrics=main_metrics(metrics, framework), file=file, size_mb=_size_mb(file),
                 deploy_config=osp.relpath(deploy_cfg.filename)),
            (model, cfg))


def _timed_batches(cfg: Config, images, count: int) -> list:
    """``count`` of the evaluated images, spread evenly, each as a batch of one from ``cfg``'s
    test pipeline."""
    cfg = copy.deepcopy(cfg)
    if images.indices is not None:
        cfg.test_dataloader.dataset.indices = list(images.indices)
    dataset = build_test_dataset(cfg)
    return [pseudo_collate([dataset[i]]) for i in spread_indices(len(dataset), count)]


def _time_in_alternation(timed: Dict[str, Tuple[torch.nn.Module, Config]], images,
                         rounds: int) -> Tuple[Dict[str, float], int]:
    """Median seconds of each model's ``test_step`` over the same timed images, the models in
    alternation, without gradients as mmengine's test loop; and how many images a round has."""
    calls, count = {}, 0
    for name, (model, cfg) in timed.items():
        batches = _timed_batches(cfg, images, TIMED_IMAGES)
        calls[name] = lambda model=model, batches=batches: [model.test_step(b) for b in batches]
        count = len(batches)
    seconds = time_interleaved(calls, rounds, warmup=1, grad_mode=torch.no_grad)
    return {name: statistics.median(values) for name, values in seconds.items()}, count


def markdown_table(record: dict) -> str:
    keys = next((list(row['metrics']) for row in record['rows'] if 'metrics' in row), [])
    lines = ['| runtime | ' + ' | '.join(keys) + ' | drop | FPS | speed-up | file size |',
             '|---|' + '---|' * (len(keys) + 4)]
    for row in record['rows']:
        if 'not_run' in row:
            lines.append(f"| {row['name']} | " + ' | '.join(['–'] * (len(keys) + 4))
                         + f" |\n|  | not run: {row['not_run']} |")
            continue
        drop = ', '.join(f'{value:+.2f}' for value in (row.get('drops') or {}).values()) or '–'
        speedup = f"{row['speedup']:.2f}x" if row.get('speedup') else '–'
        fps = f"{row['fps']:.2f}" if row['fps'] else '–'
        size = f"{row['size_mb']:.1f} MB" if row.get('size_mb') is not None else '–'
        lines.append(f"| {row['name']} | "
                     + ' | '.join(f"{row['metrics'][key]:.2f}" for key in keys)
                     + f' | {drop} | {fps} | {speedup} | {size} |')
    return '\n'.join(lines)


def caption(record: dict) -> str:
    caps, timing = caps_text(record), record['timing']
    return (f"{record['images']}, {record['input']}; {record['device_name']} "
            f"({', '.join(record['cpu_flags']) or 'no listed flags'}"
            f"{f'; instructions capped: {caps}' if caps else ''}), {record['threads']} "
            f"threads, batch 1, end to end (pre- and post-processing included), FPS: median "
            f"of {timing['rounds']} rounds over {timing['images']} of the images, runtimes in "
            f"alternation, {record['date']}; metrics in points, drop against PyTorch fused; "
            "int8: the operations left in float run in f32")


@exits_on_user_errors('benchmark')
def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].strip('`: '))
    parser.add_argument('model_cfg', help='model config (for a --demo run: the copy in its '
                                          'work dir)')
    parser.add_argument('checkpoint', help='trained checkpoint')
    parser.add_argument('--runtimes', nargs='+', default=list(RUNTIMES), choices=list(RUNTIMES))
    parser.add_argument('--precisions', nargs='+', default=['f32', 'bf16', 'int8'],
                        choices=['f32', 'bf16', 'int8'])
    parser.add_argument('--metric-images', type=int, default=DEFAULT_METRIC_IMAGES, metavar='N',
                        help=f'test images per runtime, spread evenly (default '
                             f'{DEFAULT_METRIC_IMAGES}; 0: all)')
    parser.add_argument('--work-dir', default='work_dirs/benchmark',
                        help='backend files (reused by a later run), benchmark.json, the log')
    parser.add_argument('--int8-method', choices=list(METHODS),
                        help="int8 quantization, instead of the int8 deploy config's "
                             "calib_config.method (accuracy_control)")
    parser.add_argument('--rounds', type=int, default=3,
                        help=f'timing rounds over {TIMED_IMAGES} of the test images (median)')
    parser.add_argument('--threads', type=int, help='CPU threads for every runtime')
    parser.add_argument('--verbose', action='store_true',
                        help='show the frameworks\' and runtimes\' log instead of writing it to '
                             'WORK_DIR/benchmark.log')
    args = parser.parse_args(argv)
    record = benchmark(args.model_cfg, args.checkpoint, args.work_dir, args.runtimes,
                       args.precisions, args.metric_images, args.threads, args.verbose,
                       args.rounds, args.int8_method)
    print(markdown_table(record))
    print(f'\n{caption(record)}\n(record: {osp.join(args.work_dir, "benchmark.json")})')
    return record
