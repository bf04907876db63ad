"""Users' own datasets: the configs/*/custom/ templates train on COCO-, VOC- and folder-format data,
and dataset mistakes stop the run before training with a message naming the file and the fix."""
import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from evit_mm.demo_data import make_ade20k_demo, make_coco_demo
from evit_mm.cli import train_main
from evit_mm.engine import NonFiniteLossHook

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = {
    'coco': REPO / 'configs/detection/custom/retinanet_evit_m4_coco_format.py',
    'coco_mask': REPO / 'configs/detection/custom/mask_rcnn_evit_m4_coco_format.py',
    'voc': REPO / 'configs/detection/custom/retinanet_evit_m4_voc_format.py',
    'folders': REPO / 'configs/segmentation/custom/fpn_evit_m4_folders.py',
}
DET_CLASSES = ('person', 'car', 'dog', 'bottle')  # what the generated COCO data holds
SEG_CLASSES = ('other', 'wall', 'floor', 'person', 'car', 'tree', 'lamp')
ADE_INDEX = {'wall': 1, 'floor': 4, 'person': 13, 'car': 21, 'tree': 5, 'lamp': 37}
# small and short, on top of what a user sets in the template
QUICK = {
    'det': "train_cfg = dict(max_epochs=1)\n",
    'seg': "train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=4)\n",
}
QUICK_LOADERS = ("train_dataloader.update(batch_size={batch}, num_workers=0, "
                 "persistent_workers=False)\n"
                 "val_dataloader.update(num_workers=0, persistent_workers=False)\n")
NO_DOWNLOAD = ['model.backbone.init_cfg=None']


def user_config(tmp: Path, template: str, data_root: Path, classes, image_size,
                quick: bool = True) -> Path:
    """What a user does: copy a template and set data_root, classes and image_size."""
    path = TEMPLATES[template]
    text = path.read_text()
    text = re.sub(r"_base_ = '\.\./(.*)'", lambda m: f"_base_ = '{path.parent.parent / m[1]}'",
                  text)
    text = re.sub(r'(?m)^data_root = .*$', f"data_root = '{data_root}/'", text)
    text = re.sub(r'(?m)^classes = .*$', f'classes = {tuple(classes)!r}', text)
    text = re.sub(r'(?m)^image_size = \(.*?\)', f'image_size = {tuple(image_size)!r}', text)
    if quick:
        seg = template == 'folders'
        text += QUICK['seg' if seg else 'det'] + QUICK_LOADERS.format(batch=2 if seg else 4)
    config = tmp / f'my_{template}.py'
    config.write_text(text)
    return config


def train_cli(config: Path, *options: str, cwd: Path) -> subprocess.CompletedProcess:
    """``tools/train.py`` as a user runs it (its own process)."""
    return subprocess.run(
        [sys.executable, str(REPO / 'tools/train.py'), str(config), '--work-dir',
         str(cwd / 'work'), '--cfg-options', *NO_DOWNLOAD, *options],
        cwd=cwd, capture_output=True, text=True, timeout=900)


def _argv(config: Path, options, cwd: Path, extra) -> list:
    """``tools/train.py``'s arguments for a run in ``cwd/work`` without downloads."""
    return [str(config), '--work-dir', str(cwd / 'work'), *extra, '--cfg-options', *NO_DOWNLOAD,
            *options]


def train(config: Path, *options: str, cwd: Path, extra=()) -> subprocess.CompletedProcess:
    """What ``tools/train.py`` does and prints, run in this process (no interpreter start-up):
    exit status, and the output of the run (mmengine's log included). The visualizer gets a
    name of its own: mmengine keeps one instance per name in a process, writing to the work dir
    of the run that made it."""
    argv = _argv(config, [f'visualizer.name=visualizer_{uuid.uuid4().hex}', *options], cwd, extra)
    stdout, stderr = io.StringIO(), io.StringIO()
    returncode = 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            train_main(argv)
        except SystemExit as stop:
            returncode = 1
            print(stop.code, file=sys.stderr)
    return subprocess.CompletedProcess(argv, returncode, stdout.getvalue(), stderr.getvalue())


def train_error(config: Path, *options: str, cwd: Path, extra=()) -> str:
    """Train in this process (no interpreter start-up) a config that must stop with a user error;
    return the message ``tools/train.py`` exits with."""
    with pytest.raises(SystemExit) as stopped:
        train_main(_argv(config, options, cwd, extra))
    return str(stopped.value.code)


# ---- datasets in the three formats, made from the generated demo data ----------------------------
def coco_dataset(root: Path, num_train: int = 8) -> Path:
    demo = make_coco_demo(str(root / 'generated'), num_train, 4)
    (root / 'annotations').mkdir(parents=True)
    for split in ('train', 'val'):
        shutil.copytree(demo / f'{split}2017', root / split)
        shutil.copy(demo / 'annotations' / f'instances_{split}2017.json',
                    root / 'annotations' / f'{split}.json')
    return root


def voc_dataset(root: Path, degenerate: bool = False) -> Path:
    coco = coco_dataset(root / 'coco')
    names = {c['id']: c['name'] for c in json.loads(
        (coco / 'annotations/train.json').read_text())['categories']}
    for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
        (root / sub).mkdir(parents=True)
    for split in ('train', 'val'):
        data = json.loads((coco / 'annotations' / f'{split}.json').read_text())
        ids = []
        for image in data['images']:
            stem = f"{split}_{Path(image['file_name']).stem}"
            ids.append(stem)
            shutil.copy(coco / split / image['file_name'], root / 'JPEGImages' / f'{stem}.jpg')
            node = ET.Element('annotation')
            size = ET.SubElement(node, 'size')
            for key in ('width', 'height'):
                ET.SubElement(size, key).text = str(image[key])
            ET.SubElement(size, 'depth').text = '3'
            boxes = [a['bbox'] for a in data['annotations'] if a['image_id'] == image['id']]
            labels = [names[a['category_id']] for a in data['annotations']
                      if a['image_id'] == image['id']]
            if degenerate and split == 'train' and len(ids) == 1:
                boxes.append([20, 30, 0, 0])  # x1 == x2, y1 == y2 (mmdet reads VOC 1-based)
                labels.append(labels[0])
            for (x, y, w, h), label in zip(boxes, labels):
                obj = ET.SubElement(node, 'object')
                ET.SubElement(obj, 'name').text = label
                ET.SubElement(obj, 'difficult').text = '0'
                box = ET.SubElement(obj, 'bndbox')
                for key, value in zip(('xmin', 'ymin', 'xmax', 'ymax'), (x, y, x + w, y + h)):
                    ET.SubElement(box, key).text = str(int(round(value)))
            ET.ElementTree(node).write(root / 'Annotations' / f'{stem}.xml')
        (root / 'ImageSets/Main' / f'{split}.txt').write_text('\n'.join(ids) + '\n')
    return root


def folder_dataset(root: Path, num_train: int = 8) -> Path:
    ade = make_ade20k_demo(str(root / 'generated'), num_train, 4)
    lut = np.zeros(256, np.uint8)
    for index, name in enumerate(SEG_CLASSES[1:], start=1):
        lut[ADE_INDEX[name]] = index
    for split, ade_split in (('train', 'training'), ('val', 'validation')):
        (root / 'images' / split).mkdir(parents=True)
        (root / 'labels' / split).mkdir(parents=True)
        for image in sorted((ade / 'images' / ade_split).glob('*.jpg')):
            shutil.copy(image, root / 'images' / split / image.name)
            label = cv2.imread(str(ade / 'annotations' / ade_split / f'{image.stem}.png'),
                               cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(root / 'labels' / split / f'{image.stem}.png'), lut[label])
    return root


# ---- the templates train and evaluate --------------------------------------------------------------
# keep every score: a model trained for one epoch is not confident
RETINA_ALL, RCNN_ALL = ['model.test_cfg.score_thr=0.0'], ['model.test_cfg.rcnn.score_thr=0.0']


# the VOC template: test_own_data_settings.py::test_readme_recipe_runs_verbatim (the README recipe)
@pytest.mark.parametrize('template,make,classes,size,metric,options', [
    ('coco', coco_dataset, DET_CLASSES, (160, 160), 'coco/bbox_mAP', RETINA_ALL),
    ('coco_mask', coco_dataset, DET_CLASSES, (160, 160), 'coco/segm_mAP', RCNN_ALL),
    ('folders', folder_dataset, SEG_CLASSES, (128, 128), 'mIoU', []),
])
def test_template_trains_and_evaluates(tmp_path, template, make, classes, size, metric, options):
    data = make(tmp_path / 'data', num_train=4)  # one training batch
    config = user_config(tmp_path, template, data, classes, size)
    result = train(config, *options, cwd=tmp_path)
    assert_trained(result, tmp_path / 'work', metric)


def assert_trained(result: subprocess.CompletedProcess, work_dir: Path, metric: str) -> None:
    """A template's training ran, evaluated ``metric`` on its own data and ended with the metric
    and the FPS on its last line."""
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    record = json.loads((work_dir / 'val_metrics.json').read_text())
    assert record['demo'] is False and metric in record['metrics']
    assert 0.0 <= record['metrics'][metric] <= (100.0 if metric == 'mIoU' else 1.0)
    log = result.stdout + result.stderr
    assert 'norm_eval switched off' in log  # no pretrained backbone in this test
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith('[evit_mm train] ') and \
        f'{metric}={record["metrics"][metric]:.3f}' in last.split(' | ')[0]
    assert f"| {record['speed']['fps']:.2f} FPS (cpu" in last


# ---- mistakes caught before training ----------------------------------------------------------------
def test_num_classes_mismatch(tmp_path):
    config = user_config(tmp_path, 'coco', coco_dataset(tmp_path / 'data'), DET_CLASSES,
                         (160, 160))
    message = train_error(config, 'model.bbox_head.num_classes=80', cwd=tmp_path)
    assert ("The dataset has 4 classes (train_dataloader.dataset.metainfo.classes = ('person', "
            "'car', 'dog', 'bottle')) but the model predicts another number: "
            "model.bbox_head.num_classes=80. Set them to 4") in message


def test_missing_annotation_file_and_missing_images(tmp_path):
    data = coco_dataset(tmp_path / 'data')
    config = user_config(tmp_path, 'coco', data, DET_CLASSES, (160, 160))
    (data / 'annotations/train.json').rename(data / 'annotations/other.json')
    message = train_error(config, cwd=tmp_path)
    assert f'Dataset not found: {data}/annotations/train.json' in message
    assert 'cocodataset.org' not in message  # not the COCO download hint
    (data / 'annotations/other.json').rename(data / 'annotations/train.json')
    for image in (data / 'train').glob('*.jpg'):
        image.unlink()
    assert f'train_dataloader: image file not found: {data}/train/' in train_error(config,
                                                                                   cwd=tmp_path)


def test_every_image_filtered_out(tmp_path):
    config = user_config(tmp_path, 'coco', coco_dataset(tmp_path / 'data'), ('Person', 'Car'),
                         (160, 160))
    message = train_error(config, cwd=tmp_path)
    assert 'train_dataloader: CocoDataset(' in message and 'has no samples left' in message
    assert 'metainfo.classes spells the class names exactly' in message


def test_segmentation_label_out_of_range(tmp_path):
    data = folder_dataset(tmp_path / 'data')
    label = next((data / 'labels/train').glob('*.png'))
    array = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    array[:4, :4] = 9
    cv2.imwrite(str(label), array)
    config = user_config(tmp_path, 'folders', data, SEG_CLASSES, (128, 128))
    assert (f'label map {label} holds values [9], outside the 7 classes (0..6) and not the '
            'ignore index 255') in train_error(config, cwd=tmp_path)


def test_empty_image_folder(tmp_path):
    data = folder_dataset(tmp_path / 'data')
    shutil.rmtree(data / 'images/train')
    (data / 'images/train').mkdir()
    config = user_config(tmp_path, 'folders', data, SEG_CLASSES, (128, 128))
    message = train_error(config, cwd=tmp_path)
    assert 'train_dataloader: BaseSegDataset(' in message and 'has no samples left' in message


def test_degenerate_boxes_listed_and_dropped_or_refused(tmp_path):
    data = voc_dataset(tmp_path / 'data', degenerate=True)
    config = user_config(tmp_path, 'voc', data, DET_CLASSES, (160, 160))
    strict = train_error(config, cwd=tmp_path, extra=['--strict-boxes'])
    assert strict.startswith('[evit_mm train] train_dataloader: 1 degenerate boxes in 1 images '
                             'of VOCDataset(')
    assert f'{data}/JPEGImages/train_000000.jpg: [19.0, 29.0, 19.0, 29.0] (zero or negative ' \
           'width/height)' in strict
    dropped = train(config, cwd=tmp_path)
    assert dropped.returncode == 0, dropped.stderr[-3000:]
    log = dropped.stdout + dropped.stderr
    assert "they are dropped before training (FilterAnnotations)" in log
    losses = [json.loads(line) for line in
              next((tmp_path / 'work').glob('*/vis_data/scalars.json')).read_text().splitlines()]
    assert all(np.isfinite(r['loss_bbox']) for r in losses if 'loss_bbox' in r)


def test_corrupt_image_is_named(tmp_path):
    data = coco_dataset(tmp_path / 'data')
    broken = sorted((data / 'train').glob('*.jpg'))[3]
    broken.write_bytes(b'not a jpeg')
    config = user_config(tmp_path, 'coco', data, DET_CLASSES, (160, 160), quick=False)
    config.write_text(config.read_text() + "train_cfg = dict(max_epochs=1)\n")
    message = train_error(config, 'train_dataloader.batch_size=4', cwd=tmp_path)  # 2 workers
    assert message.endswith(f'Unreadable or corrupt image: {broken}. Replace or '
                            'remove it (and its annotations).')


def test_non_finite_loss_stops_and_is_never_saved():
    class Sample:
        metainfo = dict(img_path='/data/a.jpg')

    class Runner:
        iter, epoch = 41, 3

    hook = NonFiniteLossHook()
    hook.after_train_iter(Runner, 0, {}, {'loss': torch.tensor(1.0)})
    with pytest.raises(ValueError, match=r"Non-finite loss at iteration 42 \(epoch 4\): "
                                         r"\{'loss_bbox': inf\}. Images of the batch: /data/a.jpg"):
        hook.after_train_iter(Runner, 0, dict(data_samples=[Sample()]),
                              {'loss_cls': torch.tensor(0.5), 'loss_bbox': torch.tensor(np.inf)})
    hook.before_save_checkpoint(Runner, dict(state_dict={'w': torch.ones(2)}))
    with pytest.raises(ValueError, match='Refusing to save a checkpoint with non-finite weights'):
        hook.before_save_checkpoint(Runner, dict(state_dict={'w': torch.tensor([1.0, np.nan])}))


def test_diverging_run_stops_with_iteration_and_images(tmp_path):
    """tools/train.py in its own process, as a user runs it: a diverging run stops with the
    iteration and the images of the batch, and saves nothing."""
    config = user_config(tmp_path, 'coco', coco_dataset(tmp_path / 'data'), DET_CLASSES,
                         (160, 160))
    result = train_cli(config, 'optim_wrapper.optimizer.lr=1e12', cwd=tmp_path)
    message = result.stderr
    assert result.returncode == 1, result.stderr[-2000:]
    assert re.search(r'Non-finite loss at iteration \d+ \(epoch 1\): .*Images of the batch: '
                     rf'{tmp_path}/data/train/\d+\.jpg', message), message
    assert not list((tmp_path / 'work').glob('*.pth'))


def test_demo_data_at_one_image_size(tmp_path):
    """``image_size`` (H, W) gives every generated image and label map that size, the COCO
    annotations too; asking for another size generates the data again."""
    coco = make_coco_demo(str(tmp_path / 'coco'), 0, 2, image_size=(60, 100))
    ann = json.loads((coco / 'annotations' / 'instances_val2017.json').read_text())
    assert [(i['height'], i['width']) for i in ann['images']] == [(60, 100)] * 2
    assert cv2.imread(str(coco / 'val2017' / ann['images'][1]['file_name'])).shape == (60, 100, 3)
    for size in ((50, 70), (40, 70)):
        ade = make_ade20k_demo(str(tmp_path / 'ade'), 0, 2, image_size=size)
        maps = sorted((ade / 'annotations' / 'validation').glob('*.png'))
        assert [cv2.imread(str(m), cv2.IMREAD_UNCHANGED).shape for m in maps] == [size] * 2
