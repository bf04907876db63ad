"""Export the deploy structure to ONNX and check ONNX Runtime against PyTorch.

Exports the backbone alone or the network's raw outputs (:class:`RawNetwork`, no
NMS), runs both on the same input, reports the max abs difference (must be at
most ``tolerance``) and the FPS of each.
"""
import argparse
import os
import os.path as osp
from typing import List, Optional

import numpy as np
import torch

from ..deployment.backends import ONNXRuntimeRunner, legacy_onnx_exporter
from ..errors import exits_on_user_errors
from ..inference import RawNetwork, build_inference_model
from ..timing import summarize, time_calls
from .records import default_work_dir


class ExportParityError(RuntimeError):
    """ONNX Runtime's outputs differ from PyTorch's by more than the tolerance."""


def export_onnx(config: str, out_file: str, checkpoint: Optional[str] = None, shape=(512, 512),
                backbone_only: bool = False, dynamic: bool = False, opset: int = 17,
                tolerance: float = 1e-4, iters: int = 10, warmup: int = 2) -> dict:
    """Export, compare and time; return a record with ``max_abs_diff`` and both FPS."""
    model, _, _ = build_inference_model(config, checkpoint, fuse=True)
    network = model.backbone if backbone_only else RawNetwork(model)
    network.eval()
    x = torch.randn(1, 3, *shape)
    with torch.no_grad():
        expected = network(x)
    names = [f'output{i}' for i in range(len(expected))]
    axes = None
    if dynamic:
        axes = {'input': {0: 'batch', 2: 'height', 3: 'width'}}
        axes.update({n: {0: 'batch', 2: f'{n}_height', 3: f'{n}_width'} for n in names})
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    with torch.no_grad(), legacy_onnx_exporter():
        torch.onnx.export(network, (x,), out_file, input_names=['input'], output_names=names,
                          dynamic_axes=axes, opset_version=opset)
    session = ONNXRuntimeRunner(out_file, names, torch.get_num_threads())
    feed = {'input': x.numpy()}
    got = session.run(feed)
    diff = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
    record = dict(config=config, onnx=out_file, shape=list(shape), dynamic=dynamic,
                  part='backbone' if backbone_only else 'network', outputs=len(names),
                  max_abs_diff=diff, threads=torch.get_num_threads())
    if diff > tolerance:
        raise ExportParityError(f'ONNX Runtime differs from PyTorch by {diff:.3g} (> {tolerance}) '
                                f'for {config} at {shape}; the export is not faithful.')
    if dynamic:  # the graph must also be right at a size it was not traced at
        other = (shape[0] + 32, shape[1] + 64)
        y = torch.randn(1, 3, *other)
        with torch.no_grad():
            expected = network(y)
        got = session.run({'input': y.numpy()})
        record['dynamic_check_shape'] = list(other)
        record['dynamic_max_abs_diff'] = max(
            float(np.abs(g - e.numpy()).max()) if g.shape == e.shape else float('inf')
            for g, e in zip(got, expected))
        if record['dynamic_max_abs_diff'] > tolerance:
            raise ExportParityError(
                f'The dynamic-shape export is wrong at {other} (max abs diff '
                f"{record['dynamic_max_abs_diff']:.3g}): a layer froze a size computed at the "
                f'export shape (e.g. an upsampling to a computed size in the head). Export '
                f'with a fixed --shape, or the backbone alone (--backbone-only).')
    record['torch_fps'] = summarize(time_calls(lambda: network(x), iters, warmup))['fps']
    record['onnxruntime_fps'] = summarize(
        time_calls(lambda: session.run(feed), iters, warmup))['fps']
    return record


@exits_on_user_errors('export_onnx')
def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description='Export to ONNX (deploy structure) and check it')
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?')
    parser.add_argument('--shape', type=int, nargs=2, default=[512, 512], metavar=('H', 'W'))
    parser.add_argument('--dynamic', action='store_true', help='dynamic batch, height and width')
    parser.add_argument('--backbone-only', action='store_true',
                        help='export the backbone (default: raw outputs of the whole network)')
    parser.add_argument('--out', help='ONNX file (default: work_dirs/<config name>/<part>.onnx)')
    parser.add_argument('--opset', type=int, default=17)
    args = parser.parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file not found: {args.config}')
    out = args.out or osp.join(default_work_dir(args.config),
                               'backbone.onnx' if args.backbone_only else 'network.onnx')
    record = export_onnx(args.config, out, args.checkpoint, tuple(args.shape), args.backbone_only,
                         args.dynamic, args.opset)
    print(f"exported {record['part']} to {out}: max abs diff vs PyTorch "
          f"{record['max_abs_diff']:.2e}; FPS PyTorch {record['torch_fps']:.2f}, "
          f"ONNX Runtime {record['onnxruntime_fps']:.2f} ({record['threads']} threads)")
    return record
