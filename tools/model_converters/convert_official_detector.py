"""Convert an official EfficientViT / SHViT mmdet 2.x COCO checkpoint for an evit_mm config.

    python tools/model_converters/convert_official_detector.py \
        retinanet_efficientvit_m4_fpn_1x_coco.pth configs/detection/retinanet_evit_m4.py \
        retinanet_evit_m4_coco.pth

Supported: retinanet_efficientvit_m4_fpn_1x_coco.pth, mask_rcnn_efficientvit_m4_fpn_1x_coco.pth
(EfficientViT model zoo release) and retinanet_shvit_s4_1x_coco.pth, maskrcnn_shvit_s4_1x_coco.pth
(SHViT release), with the matching *_evit_m4.py / *_shvit_s4.py config.
"""
import argparse

import torch

from evit_mm.cli import exits_on_user_errors
from evit_mm.convert import convert_detector


@exits_on_user_errors('convert')
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='official checkpoint (path or URL)')
    parser.add_argument('config', help='evit_mm config the result is for')
    parser.add_argument('dst', help='output checkpoint path')
    args = parser.parse_args()
    state_dict, meta = convert_detector(args.src, args.config)
    torch.save(dict(state_dict=state_dict, meta=meta), args.dst)
    print(f'wrote {len(state_dict)} tensors to {args.dst} (every key of {args.config} filled)')


if __name__ == '__main__':
    main()
