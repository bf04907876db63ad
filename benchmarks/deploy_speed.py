"""Deployed models on a CPU, per runtime and precision: speed against the fused PyTorch model,
and the metric on the demo val split, both from ``tools/deployment/benchmark.py``.

    python benchmarks/deploy_speed.py [--threads 2] [--rounds 5] [--only retinanet_m4]
        [--demo-dir NAME=WORK_DIR ...]
    python benchmarks/deploy_speed.py --table [--readme README.md]   # the results as markdown

Speed: ``tools/deployment/benchmark.py`` on each reference model with its initial weights
(seed 0), tested on generated images of the case's size that its test pipeline keeps as they
are (RetinaNet: 800x1333, padded to 800x1344; Semantic FPN: 512x512): every runtime and
precision exported with our dynamic deploy configs (int8: plain NNCF PTQ, calibrated on the
generated val images, as random weights give no metric to control), timed end to end (batch
1, post-processing included) in alternation, medians: PyTorch fused (float32), ONNX Runtime
float32, OpenVINO f32, OpenVINO bf16 (only on a CPU with bf16 units; elsewhere recorded as
not run, with the reason) and OpenVINO int8. Targets, against PyTorch fused:

* RetinaNet-M4 at 800x1344 and Semantic FPN-M4 at 512x512: OpenVINO int8 >= 3x (on a CPU
  with AVX-512 VNNI), bf16 >= 2x (where the CPU has bf16 units).

Then the profile of those exported files, timed in alternation on one of the images: the
backbone alone, the network without post-processing, each exported graph (the rest of the
end-to-end time is post-processing), and whether ONNX Runtime int8 would pay: the float32
graph quantized by ``onnxruntime.quantization`` (static, QDQ, int8 convolutions and matrix
products, per tensor: the opset-11 export has no per-channel DequantizeLinear), timed against
the float32 graph and OpenVINO's int8 graph.

Metric: with ``--demo-dir NAME=WORK_DIR`` (a ``tools/train.py CONFIG --demo`` work dir),
``tools/deployment/benchmark.py`` on that checkpoint (dynamic deploy configs, int8 under
accuracy control: the demo's own test resize, on the demo val split): metric and FPS, labelled
demo.

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
from typing import Dict, Tuple

import torch
from mmengine.dataset import pseudo_collate

from evit_mm.analysis.model_zoo import update_readme
from evit_mm.config import framework_of, load_config
from evit_mm.demo_data import make_ade20k_demo, make_coco_demo
from evit_mm.deployment.backends import (build_backend_model, export_backbone, graph_feed,
                                         make_runner, numpy_feed, quiet)
from evit_mm.deployment.benchmark import benchmark
from evit_mm.deployment.deploy_config import read_deploy_config
from evit_mm.deployment.evaluate import build_test_dataset
from evit_mm.inference import RawNetwork, build_inference_model
from evit_mm.timing import caps_text, environment, time_interleaved

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(HERE)
OUT = osp.join(HERE, 'results', 'deploy_speed.json')
CASES = {  # name: config, generated image size (H, W) that its test pipeline keeps, targets?
    'retinanet_m4': ('configs/detection/retinanet_evit_m4.py', (800, 1333), True),
    'fpn_m4': ('configs/segmentation/fpn_evit_m4_ade20k.py', (512, 512), True),
    'retinanet_s4': ('configs/detection/retinanet_shvit_s4.py', (800, 1333), False),
    'fpn_s4': ('configs/segmentation/fpn_shvit_s4_ade20k.py', (512, 512), False),
}
TARGETS = {'openvino int8': 3.0, 'openvino bf16': 2.0}
README_MARKS = ('<!-- deploy-speed:start -->', '<!-- deploy-speed:end -->')
SPEED_IMAGES = 8  # generated val (= test) images of a speed case: calibration and timing
PROFILED = ('onnxruntime f32', 'openvino f32', 'openvino int8')


def _speed_case(config: str, image_size: Tuple[int, int], root: str) -> Tuple[str, str]:
    """The reference config tested (and validated) on generated images of ``image_size``,
    and a checkpoint of its initial weights (seed 0)."""
    cfg = load_config(config, pretrained=False)
    if framework_of(cfg) == 'mmseg':
        data = str(make_ade20k_demo(osp.join(root, 'ade20k'), 0, SPEED_IMAGES,
                                    image_size=image_size))
    else:
        data = str(make_coco_demo(osp.join(root, 'coco'), 0, SPEED_IMAGES,
                                  image_size=image_size)) + '/'
        for key in ('val_evaluator', 'test_evaluator'):
            cfg[key].ann_file = data + 'annotations/instances_val2017.json'
    for loader in ('val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data
    case_cfg = osp.join(root, osp.basename(config))
    cfg.dump(case_cfg)
    torch.manual_seed(0)
    with quiet(osp.join(root, 'initial_weights.log'), verbose=False):
        model = build_inference_model(case_cfg)[0]
    checkpoint = osp.join(root, 'initial_weights.pth')
    torch.save(dict(state_dict=model.state_dict()), checkpoint)
    return case_cfg, checkpoint


def measure_speed(config: str, image_size: Tuple[int, int], threads: int, rounds: int,
                  work_root: str) -> dict:
    """benchmark() on the speed case (its speeds, the runtimes it could not run) and the
    profile of its exported files."""
    case_cfg, checkpoint = _speed_case(config, image_size, work_root)
    record = benchmark(case_cfg, checkpoint, osp.join(work_root, 'benchmark'), threads=threads,
                       rounds=rounds, int8_method='ptq')
    rows = {row['name']: row for row in record['rows']}
    ms = {('pytorch' if name == 'pytorch f32' else name): row['ms']
          for name, row in rows.items() if 'ms' in row}
    shape, profile = _profile(case_cfg, checkpoint, rows, threads, rounds, work_root)
    graph_speedup = {name[:-len(' graph')]: profile['onnxruntime f32 graph'] / value
                     for name, value in profile.items()
                     if name.endswith(' graph') and 'onnxruntime f32 graph' in profile}
    return dict(config=config, shape=shape, image_size=list(image_size), rounds=rounds,
                timed_images=record['timing']['images'], ms={**ms, **profile},
                speedup={name: row['speedup'] for name, row in rows.items()
                         if name != 'pytorch f32' and 'speedup' in row},
                graph_speedup=graph_speedup,
                not_run={name: row['not_run'] for name, row in rows.items() if 'not_run' in row})


def _profile(case_cfg: str, checkpoint: str, rows: Dict[str, dict], threads: int, rounds: int,
             work_root: str) -> Tuple[list, Dict[str, float]]:
    """The network input's shape, and milliseconds of the parts, timed in alternation on the
    first test image: backbones, the network without post-processing, the exported graphs."""
    model, cfg, framework = build_inference_model(case_cfg, checkpoint, fuse=True)
    detector = framework == 'mmdet'
    dataset = build_test_dataset(cfg)
    prepared = [model.data_preprocessor(pseudo_collate([dataset[i]]), False) for i in range(4)]
    x, samples = prepared[0]['inputs'], prepared[0]['data_samples']
    feed = graph_feed(x, samples, detector)
    network = RawNetwork(model)
    fns = {'pytorch backbone': lambda: model.backbone(x), 'pytorch network': lambda: network(x)}
    for backend in ('onnxruntime', 'openvino'):
        runner = export_backbone(model.backbone, x, osp.join(work_root, f'bb_{backend}'),
                                 backend, threads)
        fns[f'{backend} f32 backbone'] = lambda runner=runner: runner({'input': x})
    graphs = {name: build_backend_model(cfg, read_deploy_config(rows[name]['deploy_config']),
                                        [rows[name]['file']], threads, model,
                                        spinning=False).wrapper
              for name in PROFILED if 'file' in rows.get(name, {})}
    if 'onnxruntime f32' in graphs:
        feeds = [numpy_feed(graph_feed(p['inputs'], p['data_samples'], detector))
                 for p in prepared]
        graphs['onnxruntime int8'] = _onnxruntime_int8(rows['onnxruntime f32']['file'],
                                                       graphs['onnxruntime f32'].output_names,
                                                       feeds, threads, work_root)
    fns.update({f'{name} graph': (lambda graph=graph: graph(feed))
                for name, graph in graphs.items()})
    times = time_interleaved(fns, rounds, warmup=2)
    return list(x.shape[-2:]), {name: 1000 * statistics.median(values)
                                for name, values in times.items()}


def _onnxruntime_int8(onnx_file: str, output_names, feeds, threads: int, work_root: str):
    """ONNX Runtime's static int8 quantization of the float32 end-to-end graph, as a runner
    (calibrated on ``feeds``)."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    graph_inputs = {i.name for i in onnx.load(onnx_file, load_external_data=False).graph.input}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{name: value for name, value in feed.items()
                                if name in graph_inputs} for feed in feeds])

        def get_next(self):
            return next(self.feeds, None)

    out = osp.join(work_root, 'onnxruntime_int8.onnx')
    quantize_static(onnx_file, out, Reader(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=['Conv', 'MatMul', 'Gemm'], per_channel=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return make_runner('onnxruntime', out, output_names, threads, spinning=False)


def measure_metric(config: str, work_dir: str, threads: int, rounds: int, work_root: str
                   ) -> dict:
    """Each runtime on the demo val split of a ``--demo`` work dir (metric in points, FPS end to
    end): ``tools/deployment/benchmark.py`` on its saved config and latest checkpoint."""
    checkpoint = sorted(glob.glob(osp.join(work_dir, '*.pth')), key=osp.getmtime)[-1]
    saved = osp.join(work_dir, osp.basename(config))  # the demo config: demo data, demo scale
    record = benchmark(saved, checkpoint, osp.join(work_root, 'benchmark'), threads=threads,
                       rounds=rounds)
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
          f"medians of {result['rounds']} rounds in alternation (end to end: per image over "
          f"{result['timed_images']} images; the parts: one image):")
    for what, value in result['ms'].items():
        print(f'  {what:<26} {value:9.1f} ms  ({1000 / value:6.2f} FPS)')
    for what, reason in result['not_run'].items():
        print(f'  {what:<26} not run: {reason}')
    for what, value in result.get('graph_speedup', {}).items():
        print(f'  {what} graph vs onnxruntime f32 graph: {value:.2f}x')
    for runtime in PROFILED:
        if f'{runtime} graph' in result['ms'] and runtime in result['ms']:
            share = 1 - result['ms'][f'{runtime} graph'] / result['ms'][runtime]
            print(f'  {runtime}: post-processing {100 * share:.0f}% of the end-to-end time '
                  '(two timing sessions: a few % is their spread)')
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
        for name, (config, image_size, has_targets) in CASES.items():
            if args.only and name not in args.only:
                continue
            result = measure_speed(osp.join(REPO, config), image_size, args.threads, args.rounds,
                                   osp.join(work_root, name))
            result.update(config=config, env=figures['env'])
            if name in demo_dirs:
                result['demo_metric'] = measure_metric(config, demo_dirs[name], args.threads,
                                                       args.rounds,
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
