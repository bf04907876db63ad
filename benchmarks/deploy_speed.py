"""Deployed models on a CPU, per runtime and precision: speed against the fused PyTorch model,
and the metric on the demo val split.

    python benchmarks/deploy_speed.py [--threads 2] [--rounds 5] [--only retinanet_m4]
        [--demo-dir NAME=WORK_DIR ...]
    python benchmarks/deploy_speed.py --table [--readme README.md]   # the results as markdown

Speed: batch 1, one process, every runtime timed in alternation on the same
preprocessed image, end to end (post-processing included), medians: PyTorch fused
(float32), ONNX Runtime float32, OpenVINO f32, OpenVINO bf16 (only on a CPU with bf16
units; elsewhere it is recorded as not run, with the reason) and OpenVINO int8 (NNCF,
calibrated on generated demo images). Targets, against PyTorch fused:

* RetinaNet-M4 at 800x1344 and Semantic FPN-M4 at 512x512: OpenVINO int8 >= 3x (on a CPU
  with AVX-512 VNNI), bf16 >= 2x (where the CPU has bf16 units).

Plus the profile of the float32 runtimes (backbone alone; the network without
post-processing, or the exported graph; the rest is Python post-processing), and whether
ONNX Runtime int8 would pay: the float32 graph quantized by ``onnxruntime.quantization``
(static, QDQ, int8 convolutions and matrix products, per tensor: the opset-11 export has no
per-channel DequantizeLinear), timed against the float32
graph and OpenVINO's int8 graph (speed only: calibrated on a few random images).

Metric: with ``--demo-dir NAME=WORK_DIR`` (a ``tools/train.py CONFIG --demo`` work dir),
``tools/deployment/benchmark.py`` runs on that checkpoint (every runtime and precision,
dynamic deploy configs: the demo's own test resize, on the demo val split): metric and FPS
end to end, labelled demo. The speed cases above (random weights at 800x1344 / 512x512,
with the profile) are this script's own.

Writes benchmarks/results/deploy_speed.json (cases not run this time are kept, each with
the CPU it was measured on) and prints every figure with the CPU name and flags.
"""
import argparse
import glob
import json
import os
import os.path as osp
import statistics
import tempfile
from typing import Dict

import numpy as np
import torch
from mmengine.config import Config

from evit_mm.analysis.model_zoo import update_readme
from evit_mm.demo_data import make_ade20k_demo, make_coco_demo
from evit_mm.deployment.backends import export_backbone, graph_feed, make_runner, numpy_feed
from evit_mm.deployment.benchmark import benchmark
from evit_mm.deployment.deploy import export_and_load, predict
from evit_mm.deployment.deploy_config import deploy_config_for
from evit_mm.deployment.quantize import precision_support
from evit_mm.errors import DeployError
from evit_mm.inference import RawNetwork
from evit_mm.timing import caps_text, environment, time_interleaved

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(HERE)
OUT = osp.join(HERE, 'results', 'deploy_speed.json')
CASES = {  # name: config, (H, W) for speed, whether the targets apply
    'retinanet_m4': ('configs/detection/retinanet_evit_m4.py', (800, 1344), True),
    'fpn_m4': ('configs/segmentation/fpn_evit_m4_ade20k.py', (512, 512), True),
    'retinanet_s4': ('configs/detection/retinanet_shvit_s4.py', (800, 1344), False),
    'fpn_s4': ('configs/segmentation/fpn_shvit_s4_ade20k.py', (512, 512), False),
}
RUNTIMES = (('onnxruntime', 'f32'), ('openvino', 'f32'), ('openvino', 'bf16'),
            ('openvino', 'int8'))
TARGETS = {'openvino int8': 3.0, 'openvino bf16': 2.0}
README_MARKS = ('<!-- deploy-speed:start -->', '<!-- deploy-speed:end -->')
CALIBRATION_IMAGES = 16


def _segmentation(config: str) -> bool:
    return Config.fromfile(config).get('default_scope') == 'mmseg'


def _calibration_cfg(config: str, root: str) -> str:
    """A config whose val_dataloader is a small generated dataset of the task (for int8)."""
    if _segmentation(config):
        data = make_ade20k_demo(osp.join(root, 'ade'), 4, CALIBRATION_IMAGES)
        text = (f"_base_ = '{osp.abspath(config)}'\n"
                f"val_dataloader = dict(dataset=dict(data_root='{data}'))\n")
    else:
        data = make_coco_demo(osp.join(root, 'coco'), 4, CALIBRATION_IMAGES)
        text = (f"_base_ = '{osp.abspath(config)}'\n"
                f"val_dataloader = dict(dataset=dict(data_root='{data}/'))\n")
    path = osp.join(root, 'calibration.py')
    with open(path, 'w') as f:
        f.write(text)
    return path


def _deploy_cfg(config: str, backend: str, precision: str, shape) -> Config:
    cfg = deploy_config_for(config, backend, shape, precision)
    if precision == 'int8':
        cfg.calib_config = dict(num_images=CALIBRATION_IMAGES)
    return cfg


def _runtimes(config: str, shape, threads: int, work_root: str) -> Dict:
    """``{'onnxruntime f32': Deployment or the reason it cannot run, ...}``."""
    image = np.random.RandomState(0).randint(0, 256, (*shape, 3), dtype=np.uint8)
    calibration = _calibration_cfg(config, osp.join(work_root, 'calibration'))
    pairs = {}
    for backend, precision in RUNTIMES:
        name = f'{backend} {precision}'
        try:
            if precision != 'f32':
                precision_support(precision)
            cfg = _deploy_cfg(config, backend, precision, shape)
            pairs[name] = export_and_load(cfg, config, None, image,
                                          osp.join(work_root, name.replace(' ', '_')),
                                          threads, calibration, spinning=False)
        except DeployError as err:
            pairs[name] = str(err)
    return pairs


def measure_speed(config: str, shape, threads: int, rounds: int, work_root: str) -> dict:
    pairs = _runtimes(config, shape, threads, work_root)
    runnable = {name: pair for name, pair in pairs.items() if not isinstance(pair, str)}
    reference = runnable['onnxruntime f32']
    model, data = reference.model, reference.prepare(
        np.random.RandomState(0).randint(0, 256, (*shape, 3), dtype=np.uint8))
    x = data['inputs']
    network = RawNetwork(model)
    backbones = {backend: export_backbone(model.backbone, x, osp.join(work_root, f'bb_{backend}'),
                                          backend, threads)
                 for backend in ('onnxruntime', 'openvino')}
    feed = graph_feed(x, data['data_samples'], detector=not _segmentation(config))
    fns = {'pytorch': lambda: predict(model, data)}
    fns.update({name: (lambda p=pair: predict(p.backend_model, data))
                for name, pair in runnable.items()})
    fns.update({'pytorch backbone': lambda: model.backbone(x),
                'onnxruntime f32 backbone': lambda: backbones['onnxruntime']({'input': x}),
                'openvino f32 backbone': lambda: backbones['openvino']({'input': x}),
                'pytorch network': lambda: network(x)})
    graphs = {name: _graph(runnable[name]) for name in ('onnxruntime f32', 'openvino f32',
                                                         'openvino int8') if name in runnable}
    graphs['onnxruntime int8'] = _onnxruntime_int8(reference, shape, threads, work_root)
    fns.update({f'{name} graph': (lambda g=graph: g(feed))
                for name, graph in graphs.items()})
    times = time_interleaved(fns, rounds, warmup=2)
    ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    return dict(config=config, shape=list(shape), rounds=rounds, ms=ms,
                speedup={name: ms['pytorch'] / ms[name] for name in runnable},
                graph_speedup={name: ms['onnxruntime f32 graph'] / ms[f'{name} graph']
                               for name in graphs},
                not_run={name: reason for name, reason in pairs.items() if isinstance(reason, str)})


def _onnxruntime_int8(pair, shape, threads: int, work_root: str):
    """ONNX Runtime's static int8 quantization of the float32 end-to-end graph, as a runner."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    graph_inputs = {i.name for i in onnx.load(pair.files['onnx'], load_external_data=False)
                    .graph.input}
    rng = np.random.RandomState(1)
    feeds = []
    for _ in range(4):
        data = pair.prepare(rng.randint(0, 256, (*shape, 3), dtype=np.uint8))
        feed = numpy_feed(graph_feed(data['inputs'], data['data_samples'], detector=True))
        feeds.append({name: value for name, value in feed.items() if name in graph_inputs})

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(feeds)

        def get_next(self):
            return next(self.feeds, None)

    out = osp.join(work_root, 'onnxruntime_int8.onnx')
    quantize_static(pair.files['onnx'], out, Reader(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=['Conv', 'MatMul', 'Gemm'], per_channel=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return make_runner('onnxruntime', out, _graph(pair).output_names, threads, spinning=False)


def _graph(pair):
    model = pair.backend_model
    return model.wrapper


def measure_metric(config: str, work_dir: str, threads: int, work_root: str) -> dict:
    """Each runtime on the demo val split of a ``--demo`` work dir (metric in points, FPS end to
    end): ``tools/deployment/benchmark.py`` on its saved config and latest checkpoint."""
    checkpoint = sorted(glob.glob(osp.join(work_dir, '*.pth')), key=osp.getmtime)[-1]
    saved = osp.join(work_dir, osp.basename(config))  # the demo config: demo data, demo scale
    record = benchmark(saved, checkpoint, osp.join(work_root, 'benchmark'), threads=threads)
    results = dict(checkpoint=checkpoint, input=record['input'], images=record['images'],
                   not_run={})
    for row in record['rows']:
        if 'not_run' in row:
            results['not_run'][row['name']] = row['not_run']
        else:
            key, points = next(iter(row['metrics'].items()))
            results[row['name']] = dict(metric=key, points=points, fps=row['fps'])
    return results


def merge_previous(figures: dict) -> dict:
    """Keep the cases of the results file that this run did not measure (``--only``), each
    with the environment it was measured in."""
    if not osp.exists(OUT):
        return figures
    with open(OUT) as f:
        previous = json.load(f)
    cases = {name: dict(case, env=case.get('env', previous.get('env')))
             for name, case in previous.get('cases', {}).items() if name not in figures['cases']}
    targets = [t for t in previous.get('targets', []) if t['name'].split(' ')[0] in cases]
    return dict(figures, cases={**cases, **figures['cases']},
                targets=targets + figures['targets'])


def report(name: str, result: dict, figures: dict, has_targets: bool) -> None:
    env = result['env']
    print(f"{name} {result['shape'][0]}x{result['shape'][1]} on {env['device_name']} "
          f"({', '.join(env['cpu_flags']) or 'no listed flags'}), {env['threads']} threads, "
          f"medians of {result['rounds']} interleaved rounds:")
    for what, value in result['ms'].items():
        print(f'  {what:<26} {value:9.1f} ms  ({1000 / value:6.2f} FPS)')
    for what, reason in result['not_run'].items():
        print(f'  {what:<26} not run: {reason}')
    for what, value in result.get('graph_speedup', {}).items():
        print(f'  {what} graph vs onnxruntime f32 graph: {value:.2f}x')
    for runtime, target in (TARGETS.items() if has_targets else []):
        value = result['speedup'].get(runtime)
        figures['targets'].append(dict(name=f'{name} {runtime} vs PyTorch fused', value=value,
                                       target=target, met=value is not None and value >= target))
        shown = f'{value:.2f}x' if value is not None else 'not run'
        print(f'  target {runtime} vs PyTorch fused >= {target}x: {shown}')
    for metric_name, metric in (result.get('demo_metric') or {}).items():
        if isinstance(metric, dict) and 'points' in metric:
            print(f"  demo val {metric_name:<20} {metric['metric']} {metric['points']:.2f} "
                  f"points, {metric['fps']:.2f} FPS")


LABELS = {'retinanet_m4': 'RetinaNet-M4', 'fpn_m4': 'Semantic FPN-M4',
          'retinanet_s4': 'RetinaNet-S4', 'fpn_s4': 'Semantic FPN-S4'}
COLUMNS = ('pytorch', 'onnxruntime f32', 'openvino f32', 'openvino int8', 'openvino bf16')
HEADER = ('| PyTorch fused f32 | ONNX Runtime f32 | OpenVINO f32 | OpenVINO int8 | OpenVINO bf16 |',
          '|---|---|---|---|---|')


def _not_run(reason: str) -> str:
    if 'MAX_CPU_ISA' in reason:
        return '– (capped below bf16)'
    return '– (no bf16 units)' if 'bf16 units' in reason else '– (not run)'


def markdown_tables(figures: dict) -> str:
    """The speed table and the demo-metric table of the results file, as docs/model_zoo.md
    shows them: the runtimes and precisions the deploy configs offer (ONNX Runtime int8, which
    none offers, stays in the results file and docs/benchmarks.md's text)."""
    cases = [name for name in CASES if name in figures['cases']]
    lines = ['| model, input | CPU (flags) ' + HEADER[0],
             '|---|---' + HEADER[1]]
    for name in cases:
        case = figures['cases'][name]
        env = case['env']
        cells = [f"{case['ms']['pytorch']:.0f} ms"]
        for runtime in COLUMNS[1:]:
            if runtime in case['speedup']:
                cells.append(f"{case['ms'][runtime]:.0f} ms: {case['speedup'][runtime]:.2f}x")
            else:
                cells.append(_not_run(case.get('not_run', {}).get(runtime, '')))
        flags = ', '.join(env.get('cpu_flags', [])) or 'not recorded'
        if caps_text(env):
            flags += f'; capped: {caps_text(env)}'
        lines.append(f"| {LABELS[name]}, {case['shape'][0]}x{case['shape'][1]} | "
                     f"{env['device_name']} ({flags}) | " + ' | '.join(cells) + ' |')
    lines += ['', '| model (demo val split, input) | metric ' + HEADER[0], '|---|---' + HEADER[1]]
    for name in cases:
        demo = figures['cases'][name].get('demo_metric')
        cells = []
        for runtime in COLUMNS:
            result = (demo or {}).get('pytorch f32' if runtime == 'pytorch' else runtime)
            if result:
                points = result['points']
                shown = f'{points / 100:.3f}' if 'mAP' in result['metric'] else f'{points:.1f}'
                cells.append(f"{shown}, {result['fps']:.1f} FPS")
            else:
                cells.append(_not_run((demo or {}).get('not_run', {}).get(runtime, '')))
        metric = next((r['metric'] for r in (demo or {}).values()
                       if isinstance(r, dict) and 'metric' in r), '–')
        what = ('not measured' if not demo else 'dynamic' if 'input' in demo or 'mAP' in metric
                else f"static {demo['shape'][0]}x{demo['shape'][1]}")  # segmentation before 12/2026
        lines.append(f'| {LABELS[name]} ({what}) | {metric} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--only', nargs='+', help=f'cases to run, of {", ".join(CASES)}')
    parser.add_argument('--demo-dir', nargs='+', default=[], metavar='NAME=WORK_DIR',
                        help='demo-trained work dir of a case, for its metric on the demo val '
                             'split')
    parser.add_argument('--table', action='store_true',
                        help='print the results file as markdown tables, measuring nothing')
    parser.add_argument('--readme', help='with --table: also replace the deploy-speed section of '
                                         'this README')
    args = parser.parse_args()
    if args.table:
        with open(OUT) as f:
            tables = markdown_tables(json.load(f))
        print(tables)
        if args.readme:
            update_readme(args.readme, tables, *README_MARKS)
        return
    torch.set_num_threads(args.threads)
    demo_dirs = dict(item.split('=', 1) for item in args.demo_dir)
    figures = dict(env=environment('cpu'), cases={}, targets=[])
    with tempfile.TemporaryDirectory() as work_root:
        for name, (config, shape, has_targets) in CASES.items():
            if args.only and name not in args.only:
                continue
            result = measure_speed(osp.join(REPO, config), shape, args.threads, args.rounds,
                                   osp.join(work_root, name))
            result.update(config=config, env=figures['env'])
            if name in demo_dirs:
                result['demo_metric'] = measure_metric(config, demo_dirs[name], args.threads,
                                                       osp.join(work_root, f'{name}_demo'))
            figures['cases'][name] = result
            report(name, result, figures, has_targets)
    os.makedirs(osp.dirname(OUT), exist_ok=True)
    merged = merge_previous(figures)
    with open(OUT, 'w') as f:
        json.dump(merged, f, indent=2)
    print(f"{OUT}: {', '.join(merged['cases'])}")


if __name__ == '__main__':
    main()
