"""Small synthetic datasets in the real COCO and ADE20K formats, for ``--demo`` runs and tests.

Detection: COCO ``instances_*.json`` (all 80 COCO categories listed, four of
them used) with boxes and polygon masks of coloured shapes on textured
backgrounds; images of varied sizes, objects that sometimes overlap.
Segmentation: ADEChallengeData2016-style JPEG images with PNG label maps
(0 = other, k = ADE20K class k), a wall/floor scene with several object classes.
Images have varied sizes, or all one ``image_size`` (H, W). Generation is deterministic for
a seed and skipped when the data already exist.
"""
import contextlib
import fcntl
import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

# COCO category ids of the 80 classes, in mmdet's class order.
COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
            28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
            54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
            81, 82, 84, 85, 86, 87, 88, 89, 90]
# class name: (shape, BGR colour)
DET_OBJECTS = {'person': ('rectangle', (40, 40, 220)), 'car': ('ellipse', (60, 200, 40)),
               'dog': ('triangle', (230, 80, 50)), 'bottle': ('diamond', (40, 210, 230))}
# ADE20K class: BGR colour; wall and floor form the background.
SEG_OBJECTS = {'person': (40, 40, 220), 'car': (60, 200, 40), 'tree': (30, 120, 30),
               'lamp': (40, 220, 230)}
SEG_BACKGROUND = {'wall': (170, 170, 160), 'floor': (70, 100, 140)}
DATA_VERSION = 2


def _polygon(kind: str, cx: float, cy: float, w: float, h: float) -> np.ndarray:
    if kind == 'rectangle':
        pts = [(cx - w / 2, cy - h / 2), (cx + w / 2, cy - h / 2), (cx + w / 2, cy + h / 2),
               (cx - w / 2, cy + h / 2)]
    elif kind == 'ellipse':
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = list(zip(cx + w / 2 * np.cos(t), cy + h / 2 * np.sin(t)))
    elif kind == 'triangle':
        pts = [(cx, cy - h / 2), (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)]
    else:  # diamond
        pts = [(cx, cy - h / 2), (cx + w / 2, cy), (cx, cy + h / 2), (cx - w / 2, cy)]
    return np.round(np.array(pts, dtype=np.float64)).astype(np.int32)


def _background(rng: np.random.RandomState, h: int, w: int) -> np.ndarray:
    base = rng.randint(90, 170, size=3)
    ramp = np.linspace(-25, 25, w)[None, :, None] * rng.choice([-1, 1])
    noise = rng.normal(0, 12, size=(h, w, 3))
    return np.clip(base + ramp + noise, 0, 255).astype(np.uint8)


def _box_iou(a: List[float], b: List[float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


Size = Optional[Tuple[int, int]]


def _size(rng: np.random.RandomState, low: int, high: int, image_size: Size) -> Tuple[int, int]:
    """``image_size``, or a random (H, W) in ``[low, high]``."""
    if image_size is not None:
        return int(image_size[0]), int(image_size[1])
    return int(rng.randint(low, high + 1)), int(rng.randint(low, high + 1))


def _coco_split(rng: np.random.RandomState, img_dir: Path, count: int,
                cat_ids: Dict[str, int], image_size: Size) -> dict:
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        h, w = _size(rng, 224, 384, image_size)
        img = _background(rng, h, w)
        boxes: List[List[float]] = []
        for _ in range(rng.randint(1, 5)):
            name = list(DET_OBJECTS)[rng.randint(len(DET_OBJECTS))]
            kind, colour = DET_OBJECTS[name]
            ow, oh = rng.uniform(0.2, 0.5) * w, rng.uniform(0.2, 0.5) * h
            cx, cy = rng.uniform(ow / 2, w - ow / 2), rng.uniform(oh / 2, h - oh / 2)
            poly = _polygon(kind, cx, cy, ow, oh)
            x0, y0 = poly.min(0)
            x1, y1 = poly.max(0)
            box = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
            if any(_box_iou(box, other) > 0.3 for other in boxes):
                continue  # some overlap, never hidden objects
            boxes.append(box)
            shade = np.clip(np.array(colour) + rng.randint(-25, 26, size=3), 0, 255)
            cv2.fillPoly(img, [poly], tuple(int(c) for c in shade))
            annotations.append(dict(
                id=len(annotations) + 1, image_id=index + 1, category_id=cat_ids[name],
                segmentation=[poly.astype(float).flatten().tolist()],
                area=float(cv2.contourArea(poly.astype(np.float32))), bbox=box, iscrowd=0))
        file_name = f'{index:06d}.jpg'
        cv2.imwrite(str(img_dir / file_name), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append(dict(id=index + 1, file_name=file_name, height=h, width=w))
    return dict(images=images, annotations=annotations)


def make_coco_demo(root: str, num_train: int = 160, num_val: int = 40, seed: int = 0,
                   image_size: Size = None) -> Path:
    """Write ``root/{train2017,val2017}/`` and ``root/annotations/instances_*.json``."""
    from mmdet.datasets import CocoDataset
    root_path = Path(root)
    stamp = _stamp(num_train, num_val, seed, image_size)
    with _exclusive(root_path):
        if not _is_current(root_path, stamp):
            _write_coco(root_path, CocoDataset.METAINFO['classes'], num_train, num_val, seed,
                        image_size)
            _mark(root_path, stamp)
    return root_path


def _write_coco(root_path: Path, names, num_train: int, num_val: int, seed: int,
                image_size: Size) -> None:
    rng = np.random.RandomState(seed)
    categories = [dict(id=cid, name=name, supercategory='object')
                  for cid, name in zip(COCO_IDS, names)]
    cat_ids = {c['name']: c['id'] for c in categories}
    (root_path / 'annotations').mkdir(parents=True, exist_ok=True)
    for split, count in (('train2017', num_train), ('val2017', num_val)):
        data = _coco_split(rng, root_path / split, count, cat_ids, image_size)
        data.update(info=dict(description='evit_mm synthetic demo data (not COCO)'),
                    licenses=[], categories=categories)
        (root_path / 'annotations' / f'instances_{split}.json').write_text(json.dumps(data))


def _ade_sample(rng: np.random.RandomState, class_index: Dict[str, int], image_size: Size
                ) -> Tuple[np.ndarray, np.ndarray]:
    h, w = _size(rng, 256, 384, image_size)
    img = _background(rng, h, w)
    label = np.zeros((h, w), np.uint8)
    horizon = int(rng.uniform(0.4, 0.7) * h)
    for name, rows in (('wall', slice(0, horizon)), ('floor', slice(horizon, h))):
        colour = np.array(SEG_BACKGROUND[name]) + rng.randint(-20, 21, size=3)
        img[rows] = np.clip(0.6 * img[rows] + 0.4 * colour * 1.6, 0, 255).astype(np.uint8)
        label[rows] = class_index[name]
    for _ in range(rng.randint(1, 5)):
        name = list(SEG_OBJECTS)[rng.randint(len(SEG_OBJECTS))]
        kind = ['rectangle', 'ellipse', 'triangle', 'diamond'][rng.randint(4)]
        ow, oh = rng.uniform(0.15, 0.4) * w, rng.uniform(0.15, 0.4) * h
        poly = _polygon(kind, rng.uniform(ow / 2, w - ow / 2), rng.uniform(oh / 2, h - oh / 2),
                        ow, oh)
        shade = np.clip(np.array(SEG_OBJECTS[name]) + rng.randint(-25, 26, size=3), 0, 255)
        cv2.fillPoly(img, [poly], tuple(int(c) for c in shade))
        cv2.fillPoly(label, [poly], int(class_index[name]))
    return img, label


def make_ade20k_demo(root: str, num_train: int = 80, num_val: int = 20, seed: int = 0,
                     image_size: Size = None) -> Path:
    """Write ``root/images/{training,validation}/*.jpg`` and ``root/annotations/.../*.png``."""
    from mmseg.datasets import ADE20KDataset
    root_path = Path(root)
    stamp = _stamp(num_train, num_val, seed, image_size)
    with _exclusive(root_path):
        if not _is_current(root_path, stamp):
            _write_ade20k(root_path, ADE20KDataset.METAINFO['classes'], num_train, num_val, seed,
                          image_size)
            _mark(root_path, stamp)
    return root_path


def _write_ade20k(root_path: Path, classes, num_train: int, num_val: int, seed: int,
                  image_size: Size) -> None:
    rng = np.random.RandomState(seed)
    # label value k is ADE20K class k (1-based); 0 is "other", ignored with reduce_zero_label
    class_index = {name: classes.index(name) + 1 for name in [*SEG_BACKGROUND, *SEG_OBJECTS]}
    for split, count in (('training', num_train), ('validation', num_val)):
        img_dir, ann_dir = root_path / 'images' / split, root_path / 'annotations' / split
        img_dir.mkdir(parents=True, exist_ok=True)
        ann_dir.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            img, label = _ade_sample(rng, class_index, image_size)
            stem = f'ADE_{split[:5]}_{index:08d}'
            cv2.imwrite(str(img_dir / f'{stem}.jpg'), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(str(ann_dir / f'{stem}.png'), label)


@contextlib.contextmanager
def _exclusive(root: Path):
    """One writer at a time (distributed ranks generate into the same folder)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _stamp(num_train: int, num_val: int, seed: int, image_size: Size) -> str:
    stamp = dict(version=DATA_VERSION, train=num_train, val=num_val, seed=seed)
    if image_size is not None:
        stamp['image_size'] = [int(side) for side in image_size]
    return json.dumps(stamp)


def _is_current(root: Path, stamp: str) -> bool:
    marker = root / 'DEMO_DATA.json'
    return marker.exists() and marker.read_text() == stamp


def _mark(root: Path, stamp: str) -> None:
    (root / 'DEMO_DATA.json').write_text(stamp)
