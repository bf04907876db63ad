"""Inference FPS of a whole model (forward + post-processing) or of its backbone alone.

mmdet's convention: batch 1, data loading excluded, warm-up iterations discarded;
we report the median and the quartiles of the timed iterations. The record also
holds the achieved GFLOP/s and its fraction of this machine's dense matmul peak,
measured in the same run. ``--batch-size N`` (backbone only) gives the papers'
throughput convention, images per second. ``--backend onnxruntime|openvino`` times
the exported model (the end-to-end one from configs/deploy/, or the backbone) and,
interleaved in the same process, the fused PyTorch model it came from.
"""
import argparse
import os.path as osp
from typing import List, Optional

import numpy as np
import torch

from ..deployment.backends import export_backbone
from ..deployment.deploy import export_and_load, predict
from ..deployment.deploy_config import deploy_config_for
from ..errors import exits_on_user_errors
from ..inference import build_inference_model, pseudo_batch
from ..timing import environment, matmul_peak_gflops, summarize, time_calls, time_interleaved
from .complexity import backbone_flops, complexity
from .records import benchmark_filename, default_work_dir, write_record


BATCH_NEEDS_BACKBONE = ("--batch-size > 1 times backbones (images per second, the papers' "
                        'throughput convention); add --backbone-only.')


def _check_batch_size(batch_size: int, backbone_only: bool) -> None:
    if batch_size > 1 and not backbone_only:
        raise ValueError(BATCH_NEEDS_BACKBONE)


def benchmark(config: str, checkpoint: Optional[str] = None, shape=(800, 1344),
              backbone_only: bool = False, fuse: bool = False, device: str = 'cpu',
              channels_last: bool = False, iters: int = 20, warmup: int = 5,
              threads: Optional[int] = None, progress: bool = True,
              measure_peak: bool = True, batch_size: int = 1) -> dict:
    """Time one model and return the JSON record (see module docstring)."""
    if threads:
        torch.set_num_threads(threads)
    _check_batch_size(batch_size, backbone_only)
    height, width = shape
    model, _, framework = build_inference_model(config, checkpoint, fuse=fuse, device=device)
    x = torch.randn(batch_size, 3, height, width, device=device)
    if channels_last:  # the whole model; a deployed backbone is channels-last already
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if backbone_only:
        flops = backbone_flops(model.backbone, height, width)  # per image
        times = time_calls(lambda: model.backbone(x), iters, warmup, device, progress)
    else:
        data = pseudo_batch(framework, height, width)
        parts = complexity(model, height, width)
        flops = parts['total']['flops']
        times = time_calls(lambda: model.test_step(data), iters, warmup, device, progress)
    record = dict(config=config, checkpoint=checkpoint, shape=[height, width],
                  part='backbone' if backbone_only else 'model', fused=fuse,
                  channels_last=channels_last, warmup=warmup, **environment(device),
                  **summarize(times, batch_size), flops=flops)
    if not backbone_only:
        record['complexity'] = parts
    record['achieved_gflops'] = 2 * flops / (record['ms_per_img'] / 1000) / 1e9
    if measure_peak:
        record['matmul_peak_gflops'] = matmul_peak_gflops(device)
        record['fraction_of_peak'] = record['achieved_gflops'] / record['matmul_peak_gflops']
    return record


def benchmark_backend(config: str, backend: str, checkpoint: Optional[str] = None,
                      shape=(800, 1344), backbone_only: bool = False, batch_size: int = 1,
                      iters: int = 20, warmup: int = 5, threads: Optional[int] = None,
                      work_dir: Optional[str] = None, precision: str = 'f32') -> dict:
    """Time the exported model in ``backend`` (at ``precision``; int8 calibrates on the
    config's val set) and the fused PyTorch model, interleaved."""
    _check_batch_size(batch_size, backbone_only)
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    height, width = shape
    work_dir = work_dir or osp.join(default_work_dir(config),
                                    f'{backend}_{"backbone" if backbone_only else "end2end"}'
                                    f'_{height}x{width}_b{batch_size}')
    if backbone_only:
        model, _, _ = build_inference_model(config, checkpoint, fuse=True)
        x = torch.randn(batch_size, 3, height, width)
        runner = export_backbone(model.backbone, x, work_dir, backend, threads)
        fns = dict(pytorch=lambda: model.backbone(x),
                   backend=lambda: runner({'input': x}))
        flops = backbone_flops(model.backbone, height, width)
    else:
        pair = export_and_load(deploy_config_for(config, backend, shape, precision), config,
                               checkpoint,
                               np.random.RandomState(0).randint(0, 256, (height, width, 3),
                                                                dtype=np.uint8),
                               work_dir, threads)
        data = pair.prepare(np.random.RandomState(1).randint(0, 256, (height, width, 3),
                                                             dtype=np.uint8))
        fns = dict(pytorch=lambda: predict(pair.model, data),
                   backend=lambda: predict(pair.backend_model, data))
        flops = complexity(pair.model, height, width)['total']['flops']
    times = time_interleaved(fns, iters, warmup)
    torch_record = summarize(times['pytorch'], batch_size)
    record = dict(config=config, checkpoint=checkpoint, shape=[height, width],
                  part='backbone' if backbone_only else 'model', backend=backend,
                  precision='f32' if backbone_only else precision, fused=True,
                  channels_last=False, warmup=warmup, **environment('cpu'),
                  **summarize(times['backend'], batch_size), flops=flops,
                  pytorch_fps=torch_record['fps'], pytorch_ms_per_img=torch_record['ms_per_img'],
                  work_dir=work_dir)
    record['speedup_vs_pytorch'] = record['fps'] / record['pytorch_fps']
    return record


def summary_line(record: dict) -> str:
    peak = (f", {record['achieved_gflops']:.1f} GFLOP/s = {100 * record['fraction_of_peak']:.0f}% "
            f"of matmul peak {record['matmul_peak_gflops']:.0f}" if 'fraction_of_peak' in record
            else '')
    height, width = record['shape']
    backend = record.get('backend', 'pytorch')
    unit = 'images/s' if record['batch_size'] > 1 else 'FPS'
    versus = (f"; PyTorch fused in the same run {record['pytorch_fps']:.2f} {unit} "
              f"({record['speedup_vs_pytorch']:.2f}x)" if 'pytorch_fps' in record else '')
    return (f"{osp.basename(record['config'])} {record['part']} {height}x{width}"
            f"{' fused' if record['fused'] else ''} in {backend} on {record['device']} "
            f"({record['threads']} threads, batch {record['batch_size']}): "
            f"{record['fps']:.2f} {unit}, "
            f"{record['ms_per_img']:.1f} ms/img (p25-p75 {record['ms_p25']:.1f}-"
            f"{record['ms_p75']:.1f}){peak}{versus}")


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
    parser.add_argument('--backend', default='pytorch',
                        choices=['pytorch', 'onnxruntime', 'openvino'],
                        help='time the exported model in this CPU backend (and, interleaved, '
                             'the fused PyTorch model)')
    parser.add_argument('--precision', default='f32', choices=['f32', 'bf16', 'int8'],
                        help='OpenVINO precision of the end-to-end model (int8 calibrates on '
                             "the config's val set; bf16 needs a CPU with bf16 units)")
    parser.add_argument('--batch-size', type=int, default=1,
                        help='images per call (backbone only; the papers use 512x512 for '
                             'throughput)')
    parser.add_argument('--iters', type=int, default=20, help='timed iterations')
    parser.add_argument('--warmup', type=int, default=5, help='discarded iterations')
    parser.add_argument('--out', help='JSON record path (default: benchmark_<name>.json in '
                                      'work_dirs/<config name>/)')
    args = parser.parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file not found: {args.config}')
    if args.batch_size > 1 and not args.backbone_only:
        parser.error(BATCH_NEEDS_BACKBONE)
    if args.backend == 'pytorch':
        record = benchmark(args.config, args.checkpoint, tuple(args.shape), args.backbone_only,
                           args.fuse, args.device, args.channels_last, args.iters,
                           args.warmup, args.threads, batch_size=args.batch_size)
    else:
        if args.device != 'cpu' or args.channels_last:
            parser.error(f'--backend {args.backend} runs on the CPU, as exported (no '
                         '--device, no --channels-last).')
        record = benchmark_backend(args.config, args.backend, args.checkpoint,
                                   tuple(args.shape), args.backbone_only, args.batch_size,
                                   args.iters, args.warmup, args.threads,
                                   precision=args.precision)
    backend = args.backend if args.precision == 'f32' else f'{args.backend}-{args.precision}'
    out = args.out or osp.join(default_work_dir(args.config), benchmark_filename(
        record['part'], record['fused'], args.shape, backend, args.batch_size))
    write_record(out, record)
    print(summary_line(record))
    print(f'record written to {out}')
    return record
