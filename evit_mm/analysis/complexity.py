"""Parameters and FLOPs per part (backbone, neck, head) with mmengine's analysis.

FLOPs here are multiply-adds (one fused multiply-add counts once), the convention
the EfficientViT and SHViT papers and mmengine's FlopAnalyzer use.
"""
import argparse
import os.path as osp
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from ..errors import exits_on_user_errors
from ..inference import RawNetwork, build_inference_model
from .records import complexity_filename, config_name, default_work_dir, write_record

PARTS = ('backbone', 'neck', 'head')


def _flops_by_module(module: nn.Module, height: int, width: int) -> Dict[str, int]:
    """Multiply-adds per submodule name ('' = all) of ``module`` on one zero image."""
    from mmengine.analysis import FlopAnalyzer
    inputs = torch.zeros(1, 3, height, width, device=next(module.parameters()).device)
    analyzer = FlopAnalyzer(module, (inputs,))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    with torch.no_grad():
        return dict(analyzer.by_module())


def complexity(model: nn.Module, height: int, width: int) -> Dict[str, Dict[str, int]]:
    """``{part: {'params': n, 'flops': multiply-adds}}`` for backbone, neck, head and total.

    ``model`` is a detector or segmentor; the head is what :class:`RawNetwork` runs
    (for two-stage detectors the RPN: RoI heads depend on the proposals).
    """
    from mmengine.analysis import parameter_count
    flops = _flops_by_module(RawNetwork(model).eval(), height, width)
    params = parameter_count(model)
    head_names = [n for n in ('decode_head', 'auxiliary_head', 'bbox_head', 'rpn_head',
                              'roi_head') if hasattr(model, n)]
    result = {
        'backbone': dict(params=params.get('backbone', 0), flops=flops.get('model.backbone', 0)),
        'neck': dict(params=params.get('neck', 0), flops=flops.get('model.neck', 0)),
        'head': dict(params=sum(params.get(n, 0) for n in head_names),
                     flops=sum(flops.get(f'model.{n}', 0) for n in head_names)),
    }
    result['total'] = dict(params=params[''], flops=flops[''])
    return result


def backbone_flops(backbone: nn.Module, height: int, width: int) -> int:
    """Multiply-adds of a backbone alone at ``height`` x ``width``."""
    return int(_flops_by_module(backbone, height, width)[''])


@exits_on_user_errors('get_flops')
def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description='Parameters and FLOPs (multiply-adds) per part')
    parser.add_argument('config')
    parser.add_argument('--shape', type=int, nargs=2, default=[800, 1344], metavar=('H', 'W'))
    parser.add_argument('--out', help='JSON record (default: work_dirs/<config name>/'
                                      'complexity_<H>x<W>.json)')
    args = parser.parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file not found: {args.config}')
    model, _, _ = build_inference_model(args.config)
    parts = complexity(model, *args.shape)
    record = dict(config=args.config, shape=list(args.shape), flops_unit='multiply-adds', **parts)
    out = args.out or osp.join(default_work_dir(args.config), complexity_filename(args.shape))
    write_record(out, record)
    print(f"{config_name(args.config)} at {args.shape[0]}x{args.shape[1]} (FLOPs = multiply-adds, as in the papers)")
    for part in (*PARTS, 'total'):
        print(f'  {part:<9} params {parts[part]["params"] / 1e6:8.2f} M   '
              f'FLOPs {parts[part]["flops"] / 1e9:8.2f} G')
    print(f'record written to {out}')
    return record
