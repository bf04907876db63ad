"""Dataset presence and the ``--demo`` settings of ``tools/train.py`` / ``tools/test.py``."""
import os
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from mmengine.config import Config, ConfigDict

from .demo_data import DET_OBJECTS, make_ade20k_demo, make_coco_demo
from .errors import DatasetMissingError
from .models.pretrained import PRETRAINED_URLS

DEMO_ROOT = os.path.join('data', 'evit_mm_demo')
BENCHMARKS = {  # default data root: where to get the dataset
    'data/coco': ('COCO 2017: download train2017, val2017 and annotations_trainval2017 from '
                  'https://cocodataset.org/#download and unpack them as '
                  'data/coco/{train2017,val2017,annotations}'),
    'data/ade': ('ADE20K: download ADEChallengeData2016.zip from '
                 'http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip and '
                 'unpack it as data/ade/ADEChallengeData2016'),
}


def _leaf_datasets(dataset) -> Iterator[ConfigDict]:
    """The datasets inside a wrapper: RepeatDataset & co (``dataset``), ConcatDataset
    (``datasets``), nested."""
    if 'dataset' in dataset:
        yield from _leaf_datasets(dataset['dataset'])
    elif 'datasets' in dataset:
        for inner in dataset['datasets']:
            yield from _leaf_datasets(inner)
    else:
        yield dataset


def iter_datasets(cfg: Config) -> Iterator[Tuple[str, ConfigDict]]:
    """``(loader name, dataset cfg)`` of every dataset of every dataloader, unwrapping
    RepeatDataset, ConcatDataset & co (a loader's name comes once per dataset in it)."""
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = (cfg.get(loader) or {}).get('dataset')
        if dataset is not None:
            yield from ((loader, leaf) for leaf in _leaf_datasets(dataset))


def spread_indices(length: int, count: int) -> List[int]:
    """``count`` indices spread evenly over ``range(length)``, first and last included (all
    of them when ``count >= length``)."""
    if length <= 0 or count <= 0:
        return []
    return [int(i) for i in np.unique(np.linspace(0, length - 1, min(count, length)).astype(int))]


def iter_evaluators(cfg: Config) -> Iterator[Tuple[str, ConfigDict]]:
    """``(setting, metric cfg)`` of every metric of ``val_evaluator`` and ``test_evaluator``."""
    for key in ('val_evaluator', 'test_evaluator'):
        evaluators = cfg.get(key)
        if isinstance(evaluators, (list, tuple)):
            yield from ((f'{key}[{i}]', metric) for i, metric in enumerate(evaluators))
        elif evaluators:
            yield key, evaluators


def set_data_root(cfg: Config, data_root: str) -> None:
    """Point every dataset, and every evaluator file under a dataset's old root, at
    ``data_root`` (``--data-root``)."""
    old_roots = set()
    for _, dataset in iter_datasets(cfg):
        if dataset.get('data_root'):
            old_roots.add(str(dataset['data_root']))
        dataset['data_root'] = data_root
    for _, metric in iter_evaluators(cfg):
        ann_file = metric.get('ann_file')
        for old in sorted(old_roots, key=len, reverse=True):
            if ann_file and ann_file.startswith(old):
                metric['ann_file'] = os.path.join(data_root, ann_file[len(old):].lstrip('/'))
                break


def _expected_paths(dataset: ConfigDict) -> List[str]:
    root = dataset.get('data_root', '') or ''
    paths = []
    if dataset.get('ann_file'):
        paths.append(os.path.join(root, dataset['ann_file']))
    for prefix in (dataset.get('data_prefix') or {}).values():
        if prefix:
            paths.append(os.path.join(root, prefix))
    return paths or [root]


def _needed_files(cfg: Config, splits: Sequence[str]) -> Iterator[Tuple[str, str]]:
    """``(setting, path)`` of every dataset path and evaluator annotation file of ``cfg``
    for the ``splits`` ('train', 'val', 'test')."""
    for loader, dataset in iter_datasets(cfg):
        if loader.split('_')[0] in splits:
            for path in _expected_paths(dataset):
                yield loader, path
    for key, metric in iter_evaluators(cfg):
        if key.split('_')[0] in splits and metric.get('ann_file'):
            yield key, metric['ann_file']


def check_dataset(cfg: Config, splits: Sequence[str] = ('train', 'val', 'test')) -> None:
    """Raise :class:`DatasetMissingError` naming the first missing dataset or evaluator file
    of the ``splits`` a run uses."""
    for loader, path in _needed_files(cfg, splits):
        if os.path.exists(path):
            continue
        benchmark = [help for root, help in BENCHMARKS.items()
                     if os.path.normpath(path).startswith(root)]
        if benchmark:
            hint = (f'{benchmark[0]}; or point the run at your copy with --data-root PATH '
                    '(every dataset and evaluator file). To try the pipeline without the '
                    'dataset, add --demo: it trains and tests on a small generated dataset.')
        else:
            hint = ('Check data_root, ann_file and data_prefix in the config (for your own '
                    'data: the templates in configs/*/custom/).')
        raise DatasetMissingError(f'Dataset not found: {path} (needed by {loader}). {hint}')


def _local_checkpoint(init_cfg: Optional[dict]) -> Optional[str]:
    checkpoint = (init_cfg or {}).get('checkpoint')
    if checkpoint and checkpoint not in PRETRAINED_URLS and os.path.isfile(
            os.path.expanduser(str(checkpoint))):
        return str(checkpoint)
    return None


def _set_pipeline_scale(pipeline: list, scale: Tuple[int, int]) -> None:
    for step in pipeline:
        if step.get('type') in ('Resize', 'RandomResize'):
            step['scale'] = scale
        if step.get('type') == 'RandomCrop':
            step['crop_size'] = (scale[1], scale[1])


def _set_num_classes(node, num_classes: int) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'num_classes':
                node[key] = num_classes
            else:
                _set_num_classes(value, num_classes)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _set_num_classes(value, num_classes)


def _shrink_two_stage(model: ConfigDict) -> None:
    """CPU-sized proposal and RoI sampling for a two-stage detector (few objects per image)."""
    model.train_cfg.rpn_proposal.update(nms_pre=1000, max_per_img=300)
    model.train_cfg.rcnn.sampler.num = 64
    model.test_cfg.rpn.update(nms_pre=500, max_per_img=300)


def apply_demo(cfg: Config, framework: str, root: str = DEMO_ROOT,
               iterations: Optional[int] = None, num_images: Optional[int] = None) -> List[str]:
    """Turn a COCO / ADE20K config into a CPU-sized run on generated data in the same formats.

    The model, dataset and metric types and the pipeline stay those of the config;
    the data root, input scale, batch size, schedule and learning rate are scaled
    down, and detection heads are sized to the demo's four COCO classes.
    The backbone trains from scratch unless its ``init_cfg`` names a local file.
    """
    notes = []
    backbone = cfg.model.backbone
    local = _local_checkpoint(backbone.get('init_cfg'))
    if local:
        notes.append(f'Backbone initialised from the local checkpoint {local}.')
    else:
        backbone['init_cfg'] = None  # tools/train.py then switches norm_eval off
        notes.append('Backbone trained from scratch (no local checkpoint given; pass one with '
                     '--cfg-options model.backbone.init_cfg.checkpoint=PATH).')
    if framework == 'mmdet':
        sizes = (num_images, max(1, num_images // 4)) if num_images else (160, 40)
        data_root = str(make_coco_demo(os.path.join(root, f'coco_{sizes[0]}'), *sizes)) + '/'
        scale = (160, 160)
        two_stage = 'roi_head' in cfg.model
        epochs = iterations or (8 if two_stage else 16)  # two-stage detectors learn faster
        classes = tuple(DET_OBJECTS)
        for loader, dataset in iter_datasets(cfg):
            dataset['data_root'] = data_root
            dataset['metainfo'] = dict(classes=classes)
            _set_pipeline_scale(dataset['pipeline'], scale)
        _set_num_classes(cfg.model, len(classes))
        if two_stage:
            _shrink_two_stage(cfg.model)
        notes.append(f'Demo classes (COCO names): {", ".join(classes)}; heads sized to them.')
        for key in ('val_evaluator', 'test_evaluator'):
            cfg[key]['ann_file'] = data_root + 'annotations/instances_val2017.json'
        cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs,
                             val_interval=max(1, epochs // 4))
        cfg.param_scheduler = [
            dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
            dict(type='MultiStepLR', begin=0, end=epochs, by_epoch=True,
                 milestones=[int(epochs * 0.75)], gamma=0.1)]
        # RetinaNet's focal-loss head stalls at 4e-4 from scratch at batch 4 (loss_cls flat until
        # the step); 1e-4 is the official rate. The two-stage demo learns fine at 4e-4.
        cfg.optim_wrapper.optimizer['lr'] = 4e-4 if two_stage else 1e-4
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=max(1, epochs // 4),
                                            max_keep_ckpts=2)
        batch = 4
    else:
        sizes = (num_images, max(1, num_images // 4)) if num_images else (80, 20)
        data_root = str(make_ade20k_demo(os.path.join(root, f'ade20k_{sizes[0]}'), *sizes))
        crop = (256, 256)
        iters = iterations or 500
        cfg.model.data_preprocessor['size'] = crop
        for loader, dataset in iter_datasets(cfg):
            dataset['data_root'] = data_root
            _set_pipeline_scale(dataset['pipeline'], (1024, 256))
        cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters,
                             val_interval=max(1, iters // 4))
        cfg.param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=iters,
                                    by_epoch=False)]
        cfg.optim_wrapper.optimizer['lr'] = 1e-3
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False,
                                            interval=max(1, iters // 4), max_keep_ckpts=2)
        batch = 4
    cfg.train_dataloader.batch_size = batch
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    cfg.default_hooks.logger['interval'] = min(cfg.default_hooks.logger.get('interval', 10), 10)
    notes.append(f'DEMO MODE: synthetic data at {data_root}, CPU-sized scale and schedule. '
                 'Metrics are on demo data, not on COCO / ADE20K.')
    return notes
