"""Draw a detector's boxes/masks or a segmentor's label map on one image.

    python tools/image_demo.py CONFIG CHECKPOINT IMAGE --out-file result.png
"""
import evit_mm.compat  # noqa: F401  (opt in: mmengine checkpoints load weights-only on torch >= 2.6)
from evit_mm.cli import image_demo_main

if __name__ == '__main__':
    image_demo_main()
