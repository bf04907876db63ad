"""Own data, second pass: the README recipe as written, one ignore label in every place mmseg reads it,
label values no head can take, categories mmdet drops, a data root that moves every file, and the
metric with its FPS on the last line of a training run."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.structures import InstanceData, PixelData

from evit_mm.config import ConfigError, load_config
from evit_mm.data_checks import DataError, check_batch_labels, check_ignore_index, unknown_categories
from evit_mm.runtime import DatasetMissingError, check_dataset, set_data_root

from test_custom_data import (DET_CLASSES, SEG_CLASSES, TEMPLATES, assert_trained, coco_dataset,
                              folder_dataset, train, train_cli, train_error, user_config,
                              voc_dataset)

REPO = Path(__file__).resolve().parents[1]
CUSTOM_DATASET_DOC = (REPO / 'docs' / 'custom_dataset.md').read_text()


def _section(title: str) -> str:
    start = CUSTOM_DATASET_DOC.index(f'\n## {title}\n')
    end = CUSTOM_DATASET_DOC.find('\n## ', start + 1)
    return CUSTOM_DATASET_DOC[start:end if end > 0 else None]


def _fresh_checkout(dest: Path) -> Path:
    """The files a clone of this checkout has (tracked, or new and not ignored)."""
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split('\n')
    for name in filter(None, files):
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


# ---- 1. the README's own-data recipe, verbatim ------------------------------------------------------
def test_readme_recipe_runs_verbatim(tmp_path):
    """The README's commands on VOC-format data: the VOC template trains and evaluates."""
    block = re.search(r'```bash\n(.*?)```', _section('Training on your own data'), re.S)[1]
    commands = [line.split('#')[0].strip() for line in block.splitlines() if line.strip()]
    copy, run = commands[0], commands[1]
    assert copy.startswith('cp configs/detection/custom/retinanet_evit_m4_voc_format.py ')
    assert run.startswith('python tools/train.py ')
    clone = _fresh_checkout(tmp_path / 'clone')
    voc_dataset(clone / 'data' / 'my_dataset')  # the template's data_root
    subprocess.run(copy, shell=True, cwd=clone, check=True)
    config = clone / copy.split()[-1]
    # the user's edits: the three values; then CPU-sized for the test (no download, one epoch)
    text = config.read_text()
    text = re.sub(r'(?m)^classes = .*$', f'classes = {DET_CLASSES!r}', text)
    text = re.sub(r'(?m)^image_size = \(.*?\)', 'image_size = (160, 160)', text)
    config.write_text(text + "model.update(backbone=dict(init_cfg=None))\n"
                      "train_cfg = dict(max_epochs=1)\n"
                      "train_dataloader.update(batch_size=4, num_workers=0, "
                      "persistent_workers=False)\n"
                      "val_dataloader.update(num_workers=0, persistent_workers=False)\n")
    result = subprocess.run(run, shell=True, cwd=clone, capture_output=True, text=True,
                            timeout=900)
    assert_trained(result, clone / 'work_dirs' / config.stem, 'pascal_voc/mAP')
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r'\[evit_mm train\] pascal_voc/mAP=\d\.\d{3} \| \d+\.\d\d FPS \(cpu, .*\)'
                        rf' \| checkpoint: work_dirs/{config.stem}/epoch_1\.pth', last), last


def test_missing_base_is_one_line_with_the_fix(tmp_path):
    copy = tmp_path / 'my_voc.py'
    shutil.copy(TEMPLATES['voc'], copy)
    with pytest.raises(ConfigError) as err:
        load_config(copy)
    message = str(err.value)
    assert message == (
        f"Config {copy} names _base_ '../retinanet_evit_m4.py', which is not there "
        f"({tmp_path.parent / 'retinanet_evit_m4.py'}); _base_ paths are relative to the config's "
        f"own folder. Fix: set _base_ = '{REPO / 'configs/detection/retinanet_evit_m4.py'}' in "
        f"{copy}, or keep the copy in the template's folder.")
    result = subprocess.run([sys.executable, str(REPO / 'tools/train.py'), str(copy)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip() == f'[evit_mm train] {message}'  # one line, no traceback
    with pytest.raises(ConfigError, match=f'Config file not found: {tmp_path}/nothing.py'):
        load_config(tmp_path / 'nothing.py')


# ---- 2. one ignore label ----------------------------------------------------------------------------
def void_folder_dataset(root: Path, void: int) -> Path:
    """The folders layout with label ``void`` (not 255) on a band of every label map."""
    data = folder_dataset(root)
    for label in data.glob('labels/*/*.png'):
        array = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
        array[:, :6] = void
        cv2.imwrite(str(label), array)
    return data


def void_config(tmp_path: Path, data: Path, void: int) -> Path:
    config = user_config(tmp_path, 'folders', data, SEG_CLASSES, (128, 128))
    text = re.sub(r'(?m)^ignore_index = \d+', f'ignore_index = {void}', config.read_text())
    config.write_text(text)
    return config


def test_void_label_not_255_trains_and_is_ignored(tmp_path):
    void = len(SEG_CLASSES)  # K: labels hold 0..K-1 and K for void
    config = void_config(tmp_path, void_folder_dataset(tmp_path / 'data', void), void)
    result = train(config, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    record = json.loads((tmp_path / 'work' / 'val_metrics.json').read_text())
    assert 0.0 <= record['metrics']['mIoU'] <= 100.0
    assert record['speed']['fps'] > 0
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith(f"[evit_mm train] mIoU={record['metrics']['mIoU']:.3f}, aAcc=")
    assert re.search(r' \| \d+\.\d\d FPS \(cpu, \d+ threads, batch 1, not fused;', last), last


def test_evaluator_ignores_the_templates_void_label(tmp_path):
    """IoUMetric built from the template against a hand computation on a 2x4 label map."""
    from mmseg.registry import METRICS
    void = 3
    config = user_config(tmp_path, 'folders', tmp_path, ('a', 'b', 'c'), (128, 128))
    config.write_text(re.sub(r'(?m)^ignore_index = \d+', f'ignore_index = {void}',
                             config.read_text()))
    cfg = load_config(config)
    metric = METRICS.build(cfg.val_evaluator)
    metric.dataset_meta = dict(classes=('a', 'b', 'c'))
    label = torch.tensor([[0, 0, 1, 1], [2, 3, 3, 3]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])  # the void pixels are predicted anything
    metric.process([{}], [dict(pred_sem_seg=dict(data=pred[None]),
                               gt_sem_seg=dict(data=label[None]))])
    result = metric.compute_metrics(metric.results)
    # by hand, void ignored: a: I=1, U=2; b: I=2, U=3; c: I=1, U=1 -> mIoU = (1/2 + 2/3 + 1) / 3
    assert result['mIoU'] == pytest.approx(100 * (1 / 2 + 2 / 3 + 1) / 3, abs=0.01)
    assert result['aAcc'] == pytest.approx(100 * 4 / 5, abs=0.01)


@pytest.mark.parametrize('option,setting', [
    ('model.decode_head.ignore_index=255', 'model.decode_head.ignore_index=255'),
    ('model.data_preprocessor.seg_pad_val=255', 'model.data_preprocessor.seg_pad_val=255'),
    ('val_evaluator.ignore_index=255', 'val_evaluator.ignore_index=255'),
    ('val_dataloader.dataset.ignore_index=255', 'val_dataloader.dataset.ignore_index=255'),
])
def test_each_ignore_index_mismatch_names_the_setting(tmp_path, option, setting):
    data = void_folder_dataset(tmp_path / 'data', 7)
    config = void_config(tmp_path, data, 7)
    key, value = option.split('=')
    cfg = load_config(config, {key: int(value)})
    with pytest.raises(DataError) as err:
        check_ignore_index(cfg)
    name = setting.split('=')[0]
    assert str(err.value).startswith(
        f'The ignore index disagrees: train_dataloader.dataset.ignore_index=7 but {setting}')
    assert f'Set {name}' in str(err.value) and ' to 7 (the templates' in str(err.value)
    if key.startswith('model.decode_head'):  # and through the tool: one line, before training
        result = train_cli(config, option, cwd=tmp_path)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert lines[-1] == f'[evit_mm train] {err.value}'
        assert not any('Traceback' in line for line in lines)


def test_reduce_zero_label_needs_255_and_still_works(tmp_path):
    config = user_config(tmp_path, 'folders', tmp_path, SEG_CLASSES, (128, 128))
    cfg = load_config(config, {'train_dataloader.dataset.reduce_zero_label': True})
    check_ignore_index(cfg)  # 255: fine
    config.write_text(re.sub(r'(?m)^ignore_index = \d+', 'ignore_index = 7', config.read_text()))
    cfg = load_config(config, {'train_dataloader.dataset.reduce_zero_label': True})
    with pytest.raises(DataError, match=r'train_dataloader.dataset.reduce_zero_label=True marks '
                                        r'the former 0 pixels with 255 .* the ignore index is 7'):
        check_ignore_index(cfg)
    check_ignore_index(load_config(REPO / 'configs/segmentation/fpn_evit_m4_ade20k.py'))


def test_sampled_check_names_the_ignore_settings(tmp_path):
    data = void_folder_dataset(tmp_path / 'data', 7)
    config = user_config(tmp_path, 'folders', data, SEG_CLASSES, (128, 128))  # ignore 255
    assert re.search(r'holds values \[7\], outside the 7 classes \(0\.\.6\) and not the ignore '
                     r'index 255 \(train_dataloader\.dataset\.ignore_index\)\. .*if 7 marks void '
                     r"pixels, set the ignore index in all four places: the template's top-level "
                     r'ignore_index', train_error(config, cwd=tmp_path))


# ---- 3. labels no head can take ---------------------------------------------------------------------
def _seg_sample(label: torch.Tensor, path: str):
    from mmseg.structures import SegDataSample
    sample = SegDataSample(metainfo=dict(seg_map_path=path))
    sample.gt_sem_seg = PixelData(data=label[None])
    return sample


def test_label_out_of_range_in_a_batch_is_a_data_error():
    ok = _seg_sample(torch.tensor([[0, 1], [6, 255]]), '/data/ok.png')
    check_batch_labels([ok], 'mmseg', 7, 'model.decode_head.num_classes', 255)
    bad = _seg_sample(torch.tensor([[0, 9], [6, 255]]), '/data/bad.png')
    with pytest.raises(DataError) as err:
        check_batch_labels([ok, bad], 'mmseg', 7, 'model.decode_head.num_classes', 255)
    assert str(err.value).startswith(
        'Label value 9 in /data/bad.png is outside the 7 classes (0..6) of '
        'model.decode_head.num_classes and is not the ignore index 255. Map it to a class or to '
        'the ignore index; if 9 marks void pixels, set the ignore index in all four places')
    from mmdet.structures import DetDataSample
    det = DetDataSample(metainfo=dict(img_path='/data/a.jpg'))
    det.gt_instances = InstanceData(labels=torch.tensor([0, 4]), bboxes=torch.zeros(2, 4))
    with pytest.raises(DataError, match=r'^Label index 4 of an annotation of /data/a\.jpg is '
                                        r'outside the 4 classes \(0\.\.3\) of '
                                        r'model\.bbox_head\.num_classes\. Set model\.bbox_head'):
        check_batch_labels([det], 'mmdet', 4, 'model.bbox_head.num_classes')


def test_label_the_sampled_check_missed_stops_training(tmp_path):
    """A bad value in a label map the sampled check does not read reaches the batch check (and
    stops the run with its file), not the loss. With 21 images the check samples 20: not #19."""
    data = folder_dataset(tmp_path / 'data', num_train=21)
    labels = sorted((data / 'labels/train').glob('*.png'))
    array = cv2.imread(str(labels[19]), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(labels[19]), np.full_like(array, 9))
    config = user_config(tmp_path, 'folders', data, SEG_CLASSES, (128, 128))
    message = train_error(config, 'train_dataloader.batch_size=7', 'train_cfg.max_iters=3',
                          cwd=tmp_path)
    assert message.startswith(f'[evit_mm train] Label value 9 in {labels[19]} is outside the 7 '
                              'classes (0..6) of model.decode_head.num_classes'), message


# ---- detection categories outside classes -----------------------------------------------------------
def _dataset(config: Path, loader: str = 'train_dataloader'):
    from mmengine.registry import DATASETS
    cfg = load_config(config)
    return DATASETS.build(cfg[loader].dataset)


@pytest.mark.parametrize('make,template', [(coco_dataset, 'coco'), (voc_dataset, 'voc')])
def test_categories_outside_classes_are_counted(tmp_path, make, template):
    data = make(tmp_path / 'data')
    config = user_config(tmp_path, template, data, ('person', 'car', 'Dog'), (160, 160))
    dropped, absent = unknown_categories(_dataset(config))
    coco = coco_dataset(tmp_path / 'count') if template == 'voc' else data
    annotations = json.loads((coco / 'annotations/train.json').read_text())
    names = {c['id']: c['name'] for c in annotations['categories']}
    expected = {}
    for ann in annotations['annotations']:
        name = names[ann['category_id']]
        if name in ('dog', 'bottle'):
            expected[name] = expected.get(name, 0) + 1
    assert dict(dropped) == expected and min(expected.values()) > 0
    if template == 'voc':
        return  # the count is the same function's; the run reports it (COCO case)
    assert absent == ['Dog']
    result = train(config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    listed = ', '.join(f"'{n}' ({c})" for n, c in dropped.most_common())
    assert (f'{sum(expected.values())} annotations of categories not in metainfo.classes are '
            f'ignored: {listed}') in result.stdout + result.stderr


# ---- one data root for every file -------------------------------------------------------------------
def test_data_root_moves_datasets_and_evaluators(tmp_path):
    cfg = load_config(REPO / 'configs/detection/retinanet_evit_m4.py')
    set_data_root(cfg, str(tmp_path / 'coco'))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.data_root == str(tmp_path / 'coco')
    for key in ('val_evaluator', 'test_evaluator'):
        assert cfg[key].ann_file == str(tmp_path / 'coco/annotations/instances_val2017.json')
    coco = coco_dataset(tmp_path / 'mine')
    (tmp_path / 'coco').mkdir()
    for name in ('annotations', 'train2017', 'val2017'):
        (tmp_path / 'coco' / name).mkdir()
    (tmp_path / 'coco/annotations/instances_train2017.json').write_text('{}')
    with pytest.raises(DatasetMissingError, match=r'Dataset not found: .*/coco/annotations/'
                                                  r'instances_val2017\.json \(needed by '
                                                  r'val_dataloader\)'):
        check_dataset(cfg)
    assert coco.exists()
    cfg.val_dataloader.dataset.ann_file = 'annotations/instances_train2017.json'
    cfg.test_dataloader.dataset.ann_file = 'annotations/instances_train2017.json'
    with pytest.raises(DatasetMissingError, match=r'needed by val_evaluator\)'):
        check_dataset(cfg)  # the evaluator's own file is checked too
