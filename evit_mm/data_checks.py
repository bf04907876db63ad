"""Checks of a user's dataset before training starts; each failure names the file or setting and the fix.

:func:`check_training_data` runs on the datasets the runner built (``tools/train.py``
calls it through :class:`~evit_mm.engine.DatasetCheckHook`): class count against
the heads, empty datasets, missing image files, segmentation label values, and
degenerate boxes (zero or negative size, or outside the image), which are listed
and dropped (``FilterAnnotations`` in the training pipeline) or, with
``strict_boxes``, refused.
"""
import json
import os.path as osp
import xml.etree.ElementTree as ET
from collections import Counter
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from mmengine.logging import print_log
from mmengine.registry import DATASETS

from .errors import DataError
from .runtime import iter_datasets, spread_indices

MAX_LISTED = 10
SEG_LABEL_SAMPLES = 20
MMSEG_IGNORE_INDEX = 255  # mmseg's default everywhere, and what reduce_zero_label writes
IGNORE_FIX = ('set the ignore index in all four places: the template\'s top-level ignore_index, '
              'or the datasets\' ignore_index, every decode/auxiliary head\'s ignore_index, '
              'model.data_preprocessor.seg_pad_val and the IoUMetric\'s ignore_index')


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
    for index in spread_indices(len(dataset), samples):
        path = dataset.get_data_info(index)['seg_map_path']
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
                f'{num_classes} classes (0..{num_classes - 1}) and not the ignore index {ignore} '
                f'({loader}.dataset.ignore_index). Map them to a class or to the ignore index; '
                f'if {bad[0]} marks void pixels, {IGNORE_FIX} to {bad[0]}; or fix '
                'metainfo.classes / reduce_zero_label.')


def _as_list(node) -> list:
    if not node:
        return []
    return list(node) if isinstance(node, (list, tuple)) else [node]


def _indexed(prefix: str, nodes: list, many: bool) -> Iterator[Tuple[str, dict]]:
    for index, node in enumerate(nodes):
        yield (f'{prefix}[{index}]' if many else prefix), node


def ignore_index_settings(cfg) -> List[Tuple[str, int]]:
    """``(setting, value)`` of every place an mmseg config sets the ignore label, mmseg's
    defaults filled in: datasets, decode and auxiliary heads, label padding, IoU metrics."""
    settings = [(f'{loader}.dataset.ignore_index', dataset.get('ignore_index', MMSEG_IGNORE_INDEX))
                for loader, dataset in iter_datasets(cfg)]
    for key in ('decode_head', 'auxiliary_head'):
        heads = cfg.model.get(key)
        for name, head in _indexed(f'model.{key}', _as_list(heads), isinstance(heads, list)):
            settings.append((f'{name}.ignore_index', head.get('ignore_index', MMSEG_IGNORE_INDEX)))
    preprocessor = cfg.model.get('data_preprocessor') or {}
    settings.append(('model.data_preprocessor.seg_pad_val',
                     preprocessor.get('seg_pad_val', MMSEG_IGNORE_INDEX)))
    for key in ('val_evaluator', 'test_evaluator'):
        evaluators = cfg.get(key)
        for name, metric in _indexed(key, _as_list(evaluators), isinstance(evaluators, list)):
            if str(metric.get('type', '')).split('.')[-1] == 'IoUMetric':
                settings.append((f'{name}.ignore_index',
                                 metric.get('ignore_index', MMSEG_IGNORE_INDEX)))
    return settings


def check_ignore_index(cfg) -> None:
    """Datasets, heads' losses, label padding and metrics must ignore the same label value
    (the training dataset's), and ``reduce_zero_label`` needs mmseg's 255."""
    settings = ignore_index_settings(cfg)
    reference, value = settings[0]
    wrong = [(name, v) for name, v in settings if v != value]
    if wrong:
        listed = ', '.join(f'{name}={v}' for name, v in wrong)
        names = ', '.join(name for name, _ in wrong)
        raise DataError(
            f'The ignore index disagrees: {reference}={value} but {listed}. Set {names} to '
            f'{value} (the templates in configs/*/custom/ feed all of them from their top-level '
            'ignore_index).')
    zero_reduced = [loader for loader, dataset in iter_datasets(cfg)
                    if dataset.get('reduce_zero_label')]
    if zero_reduced and value != MMSEG_IGNORE_INDEX:
        raise DataError(
            f'{zero_reduced[0]}.dataset.reduce_zero_label=True marks the former 0 pixels with '
            f'{MMSEG_IGNORE_INDEX} (mmseg\'s LoadAnnotations), but the ignore index is {value} '
            f'({reference}). Set ignore_index to {MMSEG_IGNORE_INDEX}, or map void to 0 yourself '
            'and set reduce_zero_label=False.')


def _labels_outside(values: Sequence[int], num_classes: int,
                    ignore: Optional[int]) -> List[int]:
    return [int(v) for v in values if v != ignore and not 0 <= v < num_classes]


def check_batch_labels(data_samples: Sequence, framework: str, num_classes: int,
                       setting: str, ignore: Optional[int] = None) -> None:
    """Every label of a batch must be a class index of the heads (or, mmseg, the ignore index);
    raise :class:`DataError` naming the value and the file otherwise."""
    for sample in data_samples:
        meta = getattr(sample, 'metainfo', {})
        if framework == 'mmseg' and 'gt_sem_seg' in sample:
            bad = _labels_outside(sample.gt_sem_seg.data.unique().tolist(), num_classes, ignore)
            if bad:
                raise DataError(
                    f'Label value {bad[0]} in {meta.get("seg_map_path", "a label map")} is '
                    f'outside the {num_classes} classes (0..{num_classes - 1}) of {setting} and '
                    f'is not the ignore index {ignore}. Map it to a class or to the ignore index; '
                    f'if {bad[0]} marks void pixels, {IGNORE_FIX} to {bad[0]}; if it is a class, '
                    'add it to metainfo.classes and num_classes.')
        elif framework == 'mmdet' and 'gt_instances' in sample:
            bad = _labels_outside(sample.gt_instances.labels.unique().tolist(), num_classes, None)
            if bad:
                raise DataError(
                    f'Label index {bad[0]} of an annotation of {meta.get("img_path", "an image")} '
                    f'is outside the {num_classes} classes (0..{num_classes - 1}) of {setting}. '
                    f'Set {setting} to the number of metainfo.classes.')


def _coco_category_names(ann_file: str) -> Dict[int, str]:
    with open(ann_file, encoding='utf-8') as f:
        return {c['id']: c['name'] for c in json.load(f).get('categories', [])}


def unknown_categories(dataset) -> Tuple[Counter, List[str]]:
    """``(annotation count per category name not in classes, classes with no category)`` of a
    COCO- or VOC-format dataset; mmdet drops those annotations silently."""
    classes = list(dataset.metainfo.get('classes') or [])
    dropped: Counter = Counter()
    absent: List[str] = []
    if hasattr(dataset, 'cat_img_map') and hasattr(dataset, 'cat_ids'):  # CocoDataset
        counts = {cat: len(images) for cat, images in dataset.cat_img_map.items()}
        if set(counts) - set(dataset.cat_ids) or len(dataset.cat_ids) < len(classes):
            names = _coco_category_names(dataset.ann_file)
            dropped.update({names.get(cat, str(cat)): n for cat, n in counts.items()
                            if cat not in dataset.cat_ids})
            absent = [c for c in classes if c not in names.values()]
    elif len(dataset) and 'xml_path' in dataset.get_data_info(0):  # VOC / XML format
        seen = set()
        for index in range(len(dataset)):
            path = dataset.get_data_info(index).get('xml_path')
            if not path or path in seen:
                continue
            seen.add(path)
            for obj in ET.parse(path).getroot().findall('object'):
                name = obj.findtext('name')
                if name not in classes:
                    dropped[name] += 1
    return dropped, absent


def report_unknown_categories(dataset, loader: str) -> None:
    """Log, once per dataset, the annotations mmdet drops because their category is not in
    ``metainfo.classes``, and the classes no annotation has."""
    dropped, absent = unknown_categories(dataset)
    if not dropped and not absent:
        return
    parts = []
    if dropped:
        listed = ', '.join(f"'{name}' ({n})" for name, n in dropped.most_common())
        parts.append(f'{sum(dropped.values())} annotations of categories not in metainfo.classes '
                     f'are ignored: {listed}')
    if absent:
        parts.append(f'metainfo.classes names {absent}, which no category of the annotations has')
    print_log(f'[evit_mm] {loader}: {_describe(dataset)}: {"; ".join(parts)}. Check the '
              'spelling of classes if that is not intended.', logger='current', level=30)


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
            else:
                report_unknown_categories(dataset, loader)
                if loader == 'train_dataloader':
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
