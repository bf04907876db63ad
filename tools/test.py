"""Test an evit_mm detector (mmdet) or segmentor (mmseg) checkpoint.

    python tools/test.py CONFIG CHECKPOINT [--out X] [--show-dir DIR] [--demo] ...
"""
import evit_mm.compat  # noqa: F401  (opt in: mmengine checkpoints load weights-only on torch >= 2.6)
from evit_mm.cli import test_main

if __name__ == '__main__':
    test_main()
