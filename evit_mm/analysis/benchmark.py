"""Inference FPS of a whole model (forward + post-processing) or of its backbone alone.

mmdet's convention: batch 1, data loading excluded, warm-up iterations discarded;
we report the median and the quartiles of the timed iterations. The record also
holds the achieved GFLOP/s and its fraction of this machine's dense matmul peak,
measured in the same run.
"""
import argparse
import os.path as osp
from typing import List, Optional

import torch

from ..cli import exits_on_user_errors
from .complexity import backbone_flops, complexity
from .inference import build_inference_model, pseudo_batch
from .records import benchmark_filename, default_work_dir, write_record
from .timing import environment, matmul_peak_gflops, summarize, time_calls


def benchmark(config: str, checkpoint: Optional[str] = None, shape=(800, 1344),
              backbone_only: bool = False, fuse: bool = False, device: str = 'cpu',
              channels_last: bool = False, iters: int = 20, warmup: int = 5,
              threads: Optional[int] = None, progress: bool = True,
              measure_peak: bool = True) -> dict:
    """Time one model and return the JSON record (see module docstring)."""
    if threads:
        torch.set_num_threads(threads)
    height, width = shape
    model, _, framework = build_inference_model(config, checkpoint, fuse=fuse, device=device)
    x = torch.randn(1, 3, height, width, device=device)
    if channels_last:  # the whole model; a deployed backbone is channels-last already
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if backbone_only:
        flops = backbone_flops(model.backbone, height, width)
        times = time_calls(lambda: model.backbone(x), iters, warmup, device, progress)
    else:
        data = pseudo_batch(framework, height, width)
        parts = complexity(model, height, width)
        flops = parts['total']['flops']
        times = time_calls(lambda: model.test_step(data), iters, warmup, device, progress)
    record = dict(config=config, checkpoint=checkpoint, shape=[height, width],
                  part='backbone' if backbone_only else 'model', fused=fuse,
                  channels_last=channels_last, warmup=warmup, **environment(device),
                  **summarize(times), flops=flops)
    if not backbone_only:
        record['complexity'] = parts
    record['achieved_gflops'] = 2 * flops / (record['ms_per_img'] / 1000) / 1e9
    if measure_peak:
        record['matmul_peak_gflops'] = matmul_peak_gflops(device)
        record['fraction_of_peak'] = record['achieved_gflops'] / record['matmul_peak_gflops']
    return record


def summary_line(record: dict) -> str:
    peak = (f", {record['achieved_gflops']:.1f} GFLOP/s = {100 * record['fraction_of_peak']:.0f}% "
            f"of matmul peak {record['matmul_peak_gflops']:.0f}" if 'fraction_of_peak' in record
            else '')
    height, width = record['shape']
    return (f"{osp.basename(record['config'])} {record['part']} {height}x{width}"
            f"{' fused' if record['fused'] else ''} on {record['device']} "
            f"({record['threads']} threads): {record['fps']:.2f} FPS, "
            f"{record['ms_per_img']:.1f} ms/img (p25-p75 {record['ms_p25']:.1f}-"
            f"{record['ms_p75']:.1f}){peak}")


@exits_on_user_errors('benchmark')
def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description='Inference speed of a model or its backbone')
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', help='optional: speed does not depend on weights')
    parser.add_argument('--shape', type=int, nargs=2, default=[800, 1344], metavar=('H', 'W'),
                        help='network input height and width (default 800 1344)')
    parser.add_argument('--backbone-only', action='store_true', help='time the backbone alone')
    parser.add_argument('--fuse', action='store_true',
                        help='switch_to_deploy + mmcv Conv+BN fusion before timing')
    parser.add_argument('--device', default='cuda:0' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, help='CPU threads (default: torch default)')
    parser.add_argument('--channels-last', action='store_true')
    parser.add_argument('--iters', type=int, default=20, help='timed iterations')
    parser.add_argument('--warmup', type=int, default=5, help='discarded iterations')
    parser.add_argument('--out', help='JSON record path (default: benchmark_<name>.json in '
                                      'work_dirs/<config name>/)')
    args = parser.parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file not found: {args.config}')
    record = benchmark(args.config, args.checkpoint, tuple(args.shape), args.backbone_only,
                       args.fuse, args.device, args.channels_last, args.iters, args.warmup,
                       args.threads)
    out = args.out or osp.join(default_work_dir(args.config),
                               benchmark_filename(record['part'], args.fuse, args.shape))
    write_record(out, record)
    print(summary_line(record))
    print(f'record written to {out}')
    return record
