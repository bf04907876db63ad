"""Checks of a user's dataset before training starts; each failure names the file or setting and the fix.

:func:`check_training_data` runs on the datasets the runner built (``tools/train.py``
calls it through :class:`~evit_mm.engine.DatasetCheckHook`): class count against
the heads, empty datasets, missing image files, segmentation label values, and
degenerate boxes (zero or negative size, or outside the image), which are listed
and dropped (``FilterAnnotations`` in the training pipeline) or, with
``strict_boxes``, refused.
"""
import os.path as osp
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmengine.logging import print_log
from mmengine.registry import DATASETS

from .runtime import iter_datasets

MAX_LISTED = 10
SEG_LABEL_SAMPLES = 20


class DataError(ValueError):
    """A dataset or config mistake found before training; the message says how to fix it."""


def head_num_classes(model_cfg: dict) -> Dict[str, int]:
    """``{'model.bbox_head.num_classes': 80, ...}`` for every head of a model config."""
    found = {}

    def visit(node, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == 'num_classes' and isinstance(value, int):
                    found[f'{path}.num_classes'] = value
                elif key not in ('train_cfg', 'test_cfg'):
                    visit(value, f'{path}.{key}')

    visit(model_cfg, 'model')
    return found


def leaf_datasets(dataset) -> Iterator:
    """The datasets inside RepeatDataset / ConcatDataset / ClassBalancedDataset wrappers."""
    if hasattr(dataset, 'datasets'):
        for inner in dataset.datasets:
            yield from leaf_datasets(inner)
    elif hasattr(dataset, 'dataset'):
        yield from leaf_datasets(dataset.dataset)
    else:
        yield dataset


def _describe(dataset) -> str:
    ann_file = getattr(dataset, 'ann_file', '') or ''
    return f'{type(dataset).__name__}({ann_file or getattr(dataset, "data_root", "")})'


def check_num_classes(model_cfg: dict, classes: Sequence[str], loader: str) -> None:
    """The heads must predict as many classes as the dataset's ``metainfo`` lists."""
    wrong = {k: v for k, v in head_num_classes(model_cfg).items()
             if v != len(classes) and not k.endswith('rpn_head.num_classes')}
    if wrong:
        settings = ', '.join(f'{k}={v}' for k, v in wrong.items())
        raise DataError(
            f'The dataset has {len(classes)} classes ({loader}.dataset.metainfo.classes = '
            f'{tuple(classes)}) but the model predicts another number: {settings}. Set them to '
            f'{len(classes)} (the templates in configs/*/custom/ derive them from `classes`).')


def check_not_empty(dataset, loader: str) -> None:
    if len(dataset) == 0:
        raise DataError(
            f'{loader}: {_describe(dataset)} has no samples left. Either no image/annotation was '
            'found (check data_root, data_prefix and ann_file) or every image was filtered out '
            '(no usable boxes: check that metainfo.classes spells the class names exactly as the '
            'annotations do).')


def check_image_files(dataset, loader: str, samples: int = 5) -> None:
    """The first images of the dataset must exist (a wrong data_prefix shows here)."""
    for index in range(min(samples, len(dataset))):
        path = dataset.get_data_info(index).get('img_path')
        if path and not osp.isfile(path):
            raise DataError(f'{loader}: image file not found: {path}. Check data_root and '
                            'data_prefix.img (detection) / data_prefix.img_path (segmentation).')


def _box_problem(box: Sequence[float], width: Optional[int], height: Optional[int]
                 ) -> Optional[str]:
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        return 'zero or negative width/height'
    if width and height and (x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0):
        return f'outside the {width}x{height} image'
    return None


def degenerate_boxes(dataset) -> List[Tuple[str, List[float], str]]:
    """``(image file, box, problem)`` of every box with no area inside its image."""
    found = []
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        for instance in info.get('instances', []):
            problem = _box_problem(instance['bbox'], info.get('width'), info.get('height'))
            if problem and not instance.get('ignore_flag', 0):
                found.append((info.get('img_path', f'#{index}'),
                              [round(float(v), 2) for v in instance['bbox']], problem))
    return found


def report_degenerate_boxes(dataset, loader: str, strict: bool) -> None:
    """List degenerate boxes; raise if ``strict``, else say that they are dropped."""
    found = degenerate_boxes(dataset)
    if not found:
        return
    listing = '\n'.join(f'  {path}: {box} ({problem})' for path, box, problem in
                        found[:MAX_LISTED])
    more = f'\n  ... and {len(found) - MAX_LISTED} more' if len(found) > MAX_LISTED else ''
    images = len({path for path, _, _ in found})
    head = f'{loader}: {len(found)} degenerate boxes in {images} images of {_describe(dataset)}'
    if strict:
        raise DataError(f'{head}:\n{listing}{more}\nFix or remove them, or train without '
                        '--strict-boxes to drop them.')
    print_log(f'[evit_mm] {head}; they are dropped before training (FilterAnnotations), '
              f'--strict-boxes stops instead:\n{listing}{more}', logger='current',
              level=30)


def check_segmentation_labels(dataset, num_classes: int, loader: str,
                              samples: int = SEG_LABEL_SAMPLES) -> None:
    """Label maps of a sample of images may hold only class indices or the ignore index."""
    ignore = getattr(dataset, 'ignore_index', 255)
    reduce_zero = getattr(dataset, 'reduce_zero_label', False)
    for index in np.linspace(0, len(dataset) - 1, min(samples, len(dataset))).astype(int):
        path = dataset.get_data_info(int(index))['seg_map_path']
        label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if label is None:
            raise DataError(f'{loader}: label map {path} cannot be read (missing or corrupt).')
        values = np.unique(label)
        if reduce_zero:  # 0 becomes the ignore index, k becomes k - 1
            values = np.array([ignore if v == 0 else v - 1 for v in values])
        bad = [int(v) for v in values if v != ignore and not 0 <= v < num_classes]
        if bad:
            shift = ' after reduce_zero_label' if reduce_zero else ''
            raise DataError(
                f'{loader}: label map {path} holds values {bad}{shift}, outside the '
                f'{num_classes} classes (0..{num_classes - 1}) and not the ignore index {ignore}. '
                'Map them to a class or to the ignore index, or fix metainfo.classes / '
                'reduce_zero_label.')


def check_training_data(model_cfg: dict, datasets: Dict[str, object], framework: str,
                        strict_boxes: bool = False) -> None:
    """All checks, on ``{'train_dataloader': dataset, 'val_dataloader': dataset, ...}``."""
    for loader, wrapped in datasets.items():
        for dataset in leaf_datasets(wrapped):
            check_not_empty(dataset, loader)
            classes = dataset.metainfo.get('classes')
            if classes:
                check_num_classes(model_cfg, classes, loader)
            check_image_files(dataset, loader)
            if framework == 'mmseg':
                check_segmentation_labels(dataset, len(classes), loader)
            elif loader == 'train_dataloader':
                report_degenerate_boxes(dataset, loader, strict_boxes)


BOX_FILTER = dict(type='FilterAnnotations', min_gt_bbox_wh=(0.01, 0.01), keep_empty=False)
RESIZES = ('Resize', 'RandomResize', 'RandomChoiceResize', 'RandomChoice')


def add_box_filter(dataset_cfg: dict) -> bool:
    """Put mmdet's ``FilterAnnotations`` after the resize of a detection training pipeline,
    so that boxes with no area inside the (resized, clipped) image never reach the loss.
    Returns False when there is no pipeline to change or it filters already."""
    pipeline = dataset_cfg.get('pipeline') or []
    types = [step.get('type') for step in pipeline]
    if 'FilterAnnotations' in types or 'LoadAnnotations' not in types:
        return False
    resize = [i for i, t in enumerate(types) if t in RESIZES]
    position = (resize[0] if resize else types.index('LoadAnnotations')) + 1
    pipeline.insert(position, dict(BOX_FILTER))
    return True


def find_empty_dataset(cfg) -> None:
    """Build each dataset of ``cfg`` unserialised and raise the empty-dataset :class:`DataError`
    for the first one with no samples (mmengine itself fails on them with a bare ValueError)."""
    for loader, dataset_cfg in iter_datasets(cfg):
        check_not_empty(DATASETS.build(dict(dataset_cfg, serialize_data=False)), loader)
