"""Build a backbone, run one image-sized tensor through it and print the feature maps.

    python tools/backbone_demo.py [--arch efficientvit_m4] [--shape 800 1344] [--checkpoint X]
"""
import argparse
import time

import torch

from evit_mm.models import build_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--arch', default='efficientvit_m4',
                        help='efficientvit_m0..m5 or shvit_s1..s4')
    parser.add_argument('--shape', type=int, nargs=2, default=[800, 1344], metavar=('H', 'W'))
    parser.add_argument('--checkpoint', help='path, URL or short name of pretrained weights')
    parser.add_argument('--deploy', action='store_true', help='fuse Conv+BN before running')
    args = parser.parse_args()

    init_cfg = dict(type='Pretrained', checkpoint=args.checkpoint) if args.checkpoint else None
    model = build_backbone(args.arch, init_cfg=init_cfg)
    model.init_weights()
    model.eval()
    if args.deploy:
        model.switch_to_deploy()
    x = torch.randn(1, 3, *args.shape)
    with torch.no_grad():
        model(x)  # warm-up
        start = time.perf_counter()
        outs = model(x)
        elapsed = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters()) / 1e6
    weights = 'pretrained' if args.checkpoint else 'random init'
    print(f'{type(model).__name__}({model.arch_name}) [{weights}], {params:.2f} M params, '
          f'input {tuple(x.shape)}, {elapsed * 1000:.0f} ms on {torch.get_num_threads()} threads')
    for i, out in zip(model.out_indices, outs):
        print(f'  stage {i + 1}: {tuple(out.shape)}  stride {16 * 2 ** i}')


if __name__ == '__main__':
    main()
