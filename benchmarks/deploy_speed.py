"""Speed targets of the deployed models: ONNX Runtime and OpenVINO against the fused PyTorch model.

    python benchmarks/deploy_speed.py [--threads 2] [--rounds 5] [--only retinanet]

CPU, batch 1, float32, one process, the three (four) models timed in alternation,
medians. Every model runs end to end from the same preprocessed image to mmdet /
mmseg results (post-processing included); the backends run the end-to-end ONNX
exported by mmdeploy (NMS inside the graph) with the configs in configs/deploy/.

* RetinaNet-M4, 800x1344: OpenVINO >= 3x and ONNX Runtime >= 2x the PyTorch FPS;
* Semantic FPN-M4, 512x512: the same.

RetinaNet-SHViT-S4 is measured too (no target; its FPS goes into the speed plot).

Also printed, not targets: OpenVINO in bfloat16 (its default on CPUs with bf16 units;
results then miss the float32 parity tolerances), and a profile of where each runtime's
time goes: the backbone alone (exported at the same shape); the network without
post-processing (PyTorch: raw head outputs) or the exported graph (backends: with the
in-graph NMS / logit resize); and the rest, post-processing in Python (PyTorch: box
decoding and NMS, or logit resize and argmax; backends: mmdeploy's rescaling, or mmseg's
resize to the image and argmax).
Writes benchmarks/results/deploy_speed.json.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import tempfile

import numpy as np
import torch

from evit_mm.inference import RawNetwork
from evit_mm.timing import environment, time_interleaved
from evit_mm.deployment.backends import OpenVINORunner, export_backbone
from evit_mm.deployment.deploy import deploy_config_for, export_and_load, predict

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(HERE)
CASES = [  # name, config, (H, W), whether the speed targets apply
    ('retinanet_m4', 'configs/detection/retinanet_evit_m4.py', (800, 1344), True),
    ('fpn_m4', 'configs/segmentation/fpn_evit_m4_ade20k.py', (512, 512), True),
    ('retinanet_s4', 'configs/detection/retinanet_shvit_s4.py', (800, 1344), False),
]
TARGETS = dict(openvino=3.0, onnxruntime=2.0)
OUT = osp.join(HERE, 'results', 'deploy_speed.json')


def measure(config: str, shape, threads: int, rounds: int, work_root: str) -> dict:
    height, width = shape
    image = np.random.RandomState(0).randint(0, 256, (height, width, 3), dtype=np.uint8)
    pairs = {backend: export_and_load(deploy_config_for(config, backend, shape), config, None,
                                      image, osp.join(work_root, backend), threads)
             for backend in ('onnxruntime', 'openvino')}
    model = pairs['onnxruntime'].model
    data = pairs['onnxruntime'].prepare(image)
    bf16 = OpenVINORunner(pairs['openvino'].files['openvino_xml'],
                          pairs['openvino'].backend_model.wrapper.output_names, threads,
                          precision='bf16')
    bf16_model = pairs['openvino'].backend_model
    fp32_runner = bf16_model.wrapper

    def openvino_bf16():
        bf16_model.wrapper = bf16
        try:
            return predict(bf16_model, data)
        finally:
            bf16_model.wrapper = fp32_runner

    x = data['inputs']
    network = RawNetwork(model)
    backbones = {backend: export_backbone(model.backbone, x, osp.join(work_root, f'bb_{backend}'),
                                          backend, threads)
                 for backend in ('onnxruntime', 'openvino')}
    fns = {'pytorch': lambda: predict(model, data),
           'onnxruntime': lambda: predict(pairs['onnxruntime'].backend_model, data),
           'openvino': lambda: predict(pairs['openvino'].backend_model, data),
           'openvino_bf16': openvino_bf16,
           'pytorch_backbone': lambda: model.backbone(x),
           'onnxruntime_backbone': lambda: backbones['onnxruntime']({'input': x}),
           'openvino_backbone': lambda: backbones['openvino']({'input': x}),
           'pytorch_network': lambda: network(x),
           'onnxruntime_graph': lambda: pairs['onnxruntime'].backend_model.wrapper({'input': x}),
           'openvino_graph': lambda: pairs['openvino'].backend_model.wrapper({'input': x})}
    times = time_interleaved(fns, rounds, warmup=2)
    ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    return dict(config=config, shape=list(shape), rounds=rounds, ms=ms,
                speedup={name: ms['pytorch'] / ms[name]
                         for name in ('onnxruntime', 'openvino', 'openvino_bf16')})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--only', help='substring filter on the case names')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    figures = dict(env=environment('cpu'), cases={}, targets=[])
    with tempfile.TemporaryDirectory() as work_root:
        for name, config, shape, has_targets in CASES:
            if args.only and args.only not in name:
                continue
            result = measure(osp.join(REPO, config), shape, args.threads, args.rounds,
                             osp.join(work_root, name))
            result['config'] = config
            result['env'] = figures['env']
            figures['cases'][name] = result
            print(f"{name} {shape[0]}x{shape[1]}, {args.threads} threads, medians of "
                  f"{args.rounds} interleaved rounds:")
            for what, value in result['ms'].items():
                print(f'  {what:<22} {value:9.1f} ms  ({1000 / value:6.2f} FPS)')
            for backend, target in (TARGETS.items() if has_targets else []):
                value = result['speedup'][backend]
                met = value >= target
                figures['targets'].append(dict(name=f'{name} {backend} vs PyTorch fused',
                                               value=value, target=target, met=met))
                print(f"  {'MET ' if met else 'MISS'} {backend} vs PyTorch fused: {value:.2f}x "
                      f"(target >= {target}x)")
            bf16 = result['speedup']['openvino_bf16']
            print(f'  info openvino bf16 vs PyTorch fused: {bf16:.2f}x (not parity-checked at '
                  'the float32 tolerances)')
            ms = result['ms']
            for runtime, graph in (('pytorch', 'network'), ('onnxruntime', 'graph'),
                                   ('openvino', 'graph')):
                total, body = ms[runtime], ms[f'{runtime}_{graph}']
                print(f'  profile {runtime} ({total:.0f} ms): backbone '
                      f'{ms[runtime + "_backbone"]:.0f} ms, {graph} {body:.0f} ms, the rest '
                      f'(Python post-processing) {total - body:.0f} ms')
    os.makedirs(osp.dirname(OUT), exist_ok=True)
    merged = merge_previous(figures)
    with open(OUT, 'w') as f:
        json.dump(merged, f, indent=2)
    print(f"{OUT}: {', '.join(merged['cases'])}")


def merge_previous(figures: dict) -> dict:
    """Keep the cases of the results file that this run did not measure (``--only``), each
    with the environment it was measured in."""
    if not osp.exists(OUT):
        return figures
    with open(OUT) as f:
        previous = json.load(f)
    cases = {name: dict(case, env=case.get('env', previous.get('env')))
             for name, case in previous.get('cases', {}).items() if name not in figures['cases']}
    targets = [t for t in previous.get('targets', [])
               if t['name'].split(' ')[0] in cases]
    return dict(figures, cases={**cases, **figures['cases']},
                targets=targets + figures['targets'])


if __name__ == '__main__':
    main()
