"""Backbone latency (800x1344, batch 1) and throughput (512x512, batch N) of all ten variants
and mmdet's ResNet-18/50, in PyTorch (deploy structure), ONNX Runtime and OpenVINO.

    python benchmarks/backbone_speed.py [--threads 2] [--iters 3] [--batch-size 8]
    python tools/analysis/speed_plot.py   # the picture, from the JSON this writes

CPU, float32, medians; each backbone's three runtimes are timed in alternation. Also
records parameters and FLOPs (multiply-adds) at both sizes. Writes
benchmarks/results/backbone_speed.json.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import tempfile

import torch
import torch.nn as nn

from evit_mm.analysis.complexity import backbone_flops
from evit_mm.timing import environment, time_interleaved
from evit_mm.deployment.backends import export_backbone
from evit_mm.models import EfficientViT, SHViT

HERE = osp.dirname(osp.abspath(__file__))
RUNTIMES = ('pytorch', 'onnxruntime', 'openvino')


def backbones() -> dict:
    """name -> a callable that builds the backbone in eval mode, deploy structure."""
    def ours(cls, arch):
        def build():
            model = cls(arch).eval()
            model.switch_to_deploy()
            return model
        return build

    def resnet(depth):
        def build():
            from mmcv.cnn import fuse_conv_bn
            from mmdet.models.backbones import ResNet
            model = ResNet(depth=depth, out_indices=(0, 1, 2, 3))
            model.eval()
            return fuse_conv_bn(model)
        return build
    table = {f'EfficientViT-{a.upper()}': ours(EfficientViT, a)
             for a in ('m0', 'm1', 'm2', 'm3', 'm4', 'm5')}
    table.update({f'SHViT-{a.upper()}': ours(SHViT, a) for a in ('s1', 's2', 's3', 's4')})
    table.update({'ResNet-18 (mmdet)': resnet(18), 'ResNet-50 (mmdet)': resnet(50)})
    return table


def time_runtimes(model: nn.Module, x: torch.Tensor, threads: int, iters: int,
                  work_dir: str) -> dict:
    runners = {backend: export_backbone(model, x, osp.join(work_dir, backend), backend, threads)
               for backend in RUNTIMES[1:]}
    fns = {'pytorch': lambda: model(x)}
    fns.update({name: (lambda r=runner: r({'input': x})) for name, runner in runners.items()})
    times = time_interleaved(fns, iters, warmup=1)
    return {name: 1000 * statistics.median(values) / x.shape[0] for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--iters', type=int, default=3)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--only', help='substring filter on backbone names')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = dict(env=environment('cpu'), iters=args.iters, batch_size=args.batch_size,
                   latency_shape=[800, 1344], throughput_shape=[512, 512], backbones={})
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in backbones().items():
            if args.only and args.only not in name:
                continue
            model = build()
            latency = time_runtimes(model, torch.randn(1, 3, 800, 1344), args.threads,
                                    args.iters, osp.join(tmp, name, 'latency'))
            per_image = time_runtimes(model, torch.randn(args.batch_size, 3, 512, 512),
                                      args.threads, args.iters, osp.join(tmp, name, 'tput'))
            row = dict(params=sum(p.numel() for p in model.parameters()),
                       flops_800x1344=backbone_flops(model, 800, 1344),
                       flops_512x512=backbone_flops(model, 512, 512),
                       latency_ms=latency,
                       throughput_img_per_s={k: 1000 / v for k, v in per_image.items()})
            results['backbones'][name] = row
            print(f"{name:<20} {row['params'] / 1e6:5.1f} M params, "
                  f"{row['flops_800x1344'] / 1e9:5.1f} G MACs | 800x1344 ms: "
                  + ', '.join(f'{k} {v:.0f}' for k, v in latency.items())
                  + f" | 512x512 b{args.batch_size} img/s: "
                  + ', '.join(f'{k} {v:.1f}' for k, v in row['throughput_img_per_s'].items()),
                  flush=True)
    os.makedirs(osp.join(HERE, 'results'), exist_ok=True)
    out = osp.join(HERE, 'results', 'backbone_speed.json')
    if args.only and osp.exists(out):  # keep the rows not re-measured
        with open(out) as f:
            old = json.load(f)['backbones']
        results['backbones'] = {**old, **results['backbones']}
    with open(out, 'w') as f:
        json.dump(results, f, indent=2)


if __name__ == '__main__':
    main()
