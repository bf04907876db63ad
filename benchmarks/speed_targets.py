"""Speed targets of the fast (deploy) path, each measured against a stated baseline, interleaved.

    python benchmarks/speed_targets.py [--threads 2] [--rounds 7]

CPU, batch 1, 800x1344 input, float32, medians of interleaved runs in one process.
The targets and what each is measured against:

* EfficientViT-M4 deploy backbone vs the same backbone unfused in eval mode: >= 1.25x;
* EfficientViT-M4 deploy backbone vs mmdet's ResNet-50 backbone (eval, NCHW): >= 15x;
* EfficientViT-M4 deploy backbone, achieved GFLOP/s vs this machine's dense float32
  matmul peak measured in the same run: >= 60%;
* SHViT-S4 deploy backbone vs mmdet's ResNet-50 backbone: >= 7x;
* RetinaNet M4 vs mmdet's RetinaNet R-50 FPN, both whole models fused, ``test_step`` on a
  1333x800 image: >= 1.4x.

Also printed, not targets: the backbone ratios against a ResNet-50 run channels-last.
Prints every figure and whether each target is met; writes
benchmarks/results/speed_targets.json.
"""
import argparse
import json
import os
import os.path as osp
import statistics

import torch

from evit_mm.analysis.complexity import backbone_flops
from evit_mm.inference import build_inference_model, pseudo_batch
from evit_mm.timing import environment, matmul_peak_gflops, time_interleaved
from evit_mm.models import EfficientViT, SHViT

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(HERE)


def mmdet_config(name: str) -> str:
    import mmdet
    return osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', name)


def resnet50():
    from mmdet.models.backbones import ResNet
    model = ResNet(depth=50, out_indices=(0, 1, 2, 3))
    model.eval()  # mmdet's ResNet.train() returns None
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=7)
    parser.add_argument('--skip-detectors', action='store_true')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    h, w = 800, 1344
    x = torch.randn(1, 3, h, w)
    m4_plain = EfficientViT('m4').eval()
    m4_fast = EfficientViT('m4').eval()
    m4_fast.load_state_dict(m4_plain.state_dict())
    m4_fast.switch_to_deploy()
    s4_fast = SHViT('s4').eval()
    s4_fast.switch_to_deploy()
    r50 = resnet50()
    r50_nhwc = resnet50().to(memory_format=torch.channels_last)
    r50_nhwc.load_state_dict(r50.state_dict())
    x_nhwc = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        diff = max((a - b).abs().max().item() for a, b in zip(m4_plain(x), m4_fast(x)))
    peak = matmul_peak_gflops()
    times = time_interleaved({'m4_plain': lambda: m4_plain(x), 'm4_deploy': lambda: m4_fast(x),
                              's4_deploy': lambda: s4_fast(x), 'resnet50': lambda: r50(x),
                              'resnet50_nhwc': lambda: r50_nhwc(x_nhwc)},
                             rounds=args.rounds)
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    m4_gflops = 2 * backbone_flops(m4_fast, h, w) / (ms['m4_deploy'] / 1000) / 1e9
    figures = dict(env=environment('cpu'), shape=[h, w], rounds=args.rounds,
                   matmul_peak_gflops=peak, ms=ms, m4_deploy_vs_plain_max_abs_diff=diff,
                   m4_deploy_gflops=m4_gflops)
    checks = [
        ('M4 deploy vs plain', ms['m4_plain'] / ms['m4_deploy'], 1.25),
        ('M4 deploy vs ResNet-50', ms['resnet50'] / ms['m4_deploy'], 15.0),
        ('M4 deploy fraction of matmul peak', m4_gflops / peak, 0.60),
        ('S4 deploy vs ResNet-50', ms['resnet50'] / ms['s4_deploy'], 7.0),
    ]
    # not targets: the same ratios against a ResNet-50 also run channels-last
    extra = [('M4 deploy vs ResNet-50 channels-last', ms['resnet50_nhwc'] / ms['m4_deploy']),
             ('S4 deploy vs ResNet-50 channels-last', ms['resnet50_nhwc'] / ms['s4_deploy'])]
    if not args.skip_detectors:
        ours, _, _ = build_inference_model(
            osp.join(REPO, 'configs/detection/retinanet_evit_m4.py'), fuse=True)
        theirs, _, _ = build_inference_model(
            mmdet_config('retinanet/retinanet_r50_fpn_1x_coco.py'), fuse=True)
        data = pseudo_batch('mmdet', 800, 1333)
        det = time_interleaved({'retinanet_m4': lambda: ours.test_step(data),
                                'retinanet_r50': lambda: theirs.test_step(data)},
                               rounds=max(3, args.rounds // 2), warmup=1)
        ms.update({k: 1000 * statistics.median(v) for k, v in det.items()})
        checks.append(('RetinaNet M4 vs R-50 FPN (FPS ratio, 1333x800)',
                       ms['retinanet_r50'] / ms['retinanet_m4'], 1.4))
    print(f"CPU {figures['env']['device_name']}, {args.threads} threads, torch "
          f"{torch.__version__}; matmul peak {peak:.1f} GFLOP/s")
    for name, value in ms.items():
        print(f'  {name:<14} {value:9.1f} ms  ({1000 / value:6.2f} FPS)')
    print(f'  M4 deploy: {m4_gflops:.1f} GFLOP/s; deploy vs plain max abs diff {diff:.2e}')
    figures['targets'] = []
    for name, value, target in checks:
        met = value >= target
        figures['targets'].append(dict(name=name, value=value, target=target, met=met))
        print(f"  {'MET ' if met else 'MISS'} {name}: {value:.2f} (target >= {target})")
    for name, value in extra:
        print(f'  info {name}: {value:.2f}')
    figures['info'] = dict(extra)
    os.makedirs(osp.join(HERE, 'results'), exist_ok=True)
    with open(osp.join(HERE, 'results', 'speed_targets.json'), 'w') as f:
        json.dump(figures, f, indent=2)


if __name__ == '__main__':
    main()
