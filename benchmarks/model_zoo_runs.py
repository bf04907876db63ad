"""FPS and complexity of every config, written where tools/analysis/model_zoo.py reads them.

    python benchmarks/model_zoo_runs.py [--threads 2] [--iters 5] [--work-root work_dirs]
        [--backends onnxruntime openvino] [--only NAME]
    python tools/analysis/model_zoo.py 'work_dirs/*' --readme README.md

Whole model (forward + post-processing), fused, batch 1: detection at 800x1344 (a
1333x800 image padded to a multiple of 32), segmentation at 512x512. Each config's
records go to WORK_ROOT/<config name>/ next to any metrics that training or testing
wrote there (a --demo run writes to WORK_ROOT/<config name>_demo/; pass --suffix _demo
to put the speed next to it). ``--backends`` also times the end-to-end export in each
CPU backend (Mask R-CNN: ONNX Runtime only).
"""
import argparse
import glob
import os.path as osp

import torch

from evit_mm.analysis.benchmark import benchmark, benchmark_backend, summary_line
from evit_mm.analysis.records import benchmark_filename, complexity_filename, write_record

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--work-root', default='work_dirs')
    parser.add_argument('--suffix', default='', help='work-dir suffix, e.g. _demo')
    parser.add_argument('--only', help='substring filter on config names')
    parser.add_argument('--backends', nargs='*', default=[], choices=['onnxruntime', 'openvino'])
    parser.add_argument('--skip-pytorch', action='store_true', help='backends only')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configs = sorted(glob.glob(osp.join(REPO, 'configs/detection/*.py'))
                     + glob.glob(osp.join(REPO, 'configs/segmentation/*.py')))
    for config in configs:
        name = osp.splitext(osp.basename(config))[0]
        if args.only and args.only not in name:
            continue
        shape = (512, 512) if 'segmentation' in config else (800, 1344)
        work_dir = osp.join(args.work_root, name + args.suffix)
        rel = osp.relpath(config, REPO)
        if not args.skip_pytorch:
            record = benchmark(config, shape=shape, fuse=True, iters=args.iters,
                               warmup=args.warmup, progress=False, measure_peak=False)
            record['config'] = rel
            write_record(osp.join(work_dir, benchmark_filename('model', True, shape)), record)
            write_record(osp.join(work_dir, complexity_filename(shape)),
                         dict(config=rel, shape=list(shape), flops_unit='multiply-adds',
                              **record['complexity']))
            print(summary_line(record), flush=True)
        for backend in args.backends:
            if backend == 'openvino' and name.startswith('mask_rcnn'):
                continue
            record = benchmark_backend(config, backend, shape=shape, iters=args.iters,
                                       warmup=args.warmup)
            record['config'] = rel
            write_record(osp.join(work_dir, benchmark_filename('model', True, shape, backend)),
                         record)
            print(summary_line(record), flush=True)


if __name__ == '__main__':
    main()
