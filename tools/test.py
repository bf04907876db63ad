"""Test an evit_mm detector (mmdet) or segmentor (mmseg) checkpoint.

    python tools/test.py CONFIG CHECKPOINT [--out X] [--show-dir DIR] [--demo] ...
"""
from evit_mm.cli import test_main

if __name__ == '__main__':
    test_main()
