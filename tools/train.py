"""Train an evit_mm detector (mmdet) or segmentor (mmseg) config.

    python tools/train.py configs/detection/retinanet_evit_m4.py [--demo] [--resume] ...
"""
import evit_mm.compat  # noqa: F401  (opt in: mmengine checkpoints load weights-only on torch >= 2.6)
from evit_mm.cli import train_main

if __name__ == '__main__':
    train_main()
