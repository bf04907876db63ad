"""Fixtures: the reference data in ``tests/data`` and what is regenerated from seeds.

Inputs and official-format checkpoints are not stored: they are rebuilt here by
the rules in ``tests/data/README.md`` and checked against the hashes in
``tests/data/meta.json``, so a generator that drifts fails loudly.
"""
import gzip
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable, Dict, Sequence

import numpy as np
import pytest
import torch

# Under pytest-xdist (pytest.ini: one worker per core) each worker, and every process it starts,
# computes on one thread: two workers with a thread per core each would oversubscribe the cores,
# and spinning OpenMP threads then slow everything several-fold.
if os.environ.get('PYTEST_XDIST_WORKER'):
    os.environ['OMP_NUM_THREADS'] = '1'  # the processes the tests start
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _torch_threads():
    """A test that sets torch's thread count (benchmark(threads=2)) leaves the others theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)

DATA = Path(__file__).resolve().parent / 'data'
VARIANTS = [f'efficientvit_m{i}' for i in range(6)] + [f'shvit_s{i}' for i in range(1, 5)]
# the last BatchNorm of a residual branch gets a smaller scale (official generator rule)
_RESIDUAL_GAMMA = re.compile(r'\.m\.(bn|pw2\.bn|proj\.1\.bn|attn\.proj\.1\.bn)\.weight$')


# test modules that share session fixtures (one export per deploy config) run on one worker
GROUPS = {'test_deployment': 'deployment', 'test_deployment_precision': 'deployment'}
# the slowest groups first (pytest --durations), so that the two workers finish together; the
# modules that train in the test process before the deployments: a training run in a process that
# had run the deployment tests' OpenVINO / ONNX Runtime sessions segfaulted (reproduced with -n0,
# cause not found)
SLOWEST_FIRST = ('test_training', 'test_custom_data', 'test_tools', 'deployment',
                 'test_own_data_settings', 'test_configs', 'test_analysis')


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items) -> None:
    def group(item) -> str:
        return GROUPS.get(item.path.stem, item.path.stem)

    for item in items:
        # tests that share the deployments run where those were made; the others of those
        # modules may run on any worker
        shares = group(item) != 'deployment' or 'deployed' in item.fixturenames
        item.add_marker(pytest.mark.xdist_group(group(item) if shares else item.nodeid))
    rank = {name: index for index, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(group(item), len(rank)))  # stable: module order kept


def pytest_generate_tests(metafunc) -> None:
    """A test that takes a ``variant`` argument runs for all ten backbones, unless it says otherwise."""
    if 'variant' in metafunc.fixturenames and not any(
            'variant' in m.args[0] for m in metafunc.definition.iter_markers('parametrize')):
        metafunc.parametrize('variant', VARIANTS)


def state_dict_sha256(state_dict: Dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key, value in state_dict.items():
        digest.update(key.encode() + str(value.dtype).encode() + str(tuple(value.shape)).encode()
                      + value.numpy().tobytes())
    return digest.hexdigest()


def _key_rng(seed: int, key: str) -> np.random.RandomState:
    return np.random.RandomState(
        int.from_bytes(hashlib.sha256(f'{seed}|{key}'.encode()).digest()[:4], 'little'))


def _offset_table(side: int) -> np.ndarray:
    ys, xs = np.divmod(np.arange(side * side), side)
    return np.abs(ys[:, None] - ys[None]) * side + np.abs(xs[:, None] - xs[None])


def seeded_tensor(seed: int, key: str, shape: Sequence[int]) -> torch.Tensor:
    """The value the reference generator gives ``key`` (rules in tests/data/README.md)."""
    shape = tuple(shape)
    if key.endswith('num_batches_tracked'):
        return torch.tensor(0, dtype=torch.int64)
    if key.endswith('attention_bias_idxs'):
        return torch.from_numpy(_offset_table(round(shape[0] ** 0.5)).astype(np.int64))
    rng = _key_rng(seed, key)
    if key.endswith('running_var'):
        value = rng.uniform(0.5, 1.5, shape)
    else:
        normal = rng.standard_normal(shape)
        if key.endswith('attention_biases'):
            value = 0.5 * normal
        elif key.endswith('running_mean'):
            value = 0.1 * normal
        elif len(shape) == 1 and key.endswith('.weight'):
            value = (1 + 0.1 * normal) * (0.4 if _RESIDUAL_GAMMA.search(key) else 1.0)
        elif len(shape) == 1:
            value = 0.1 * normal
        else:
            value = normal / np.sqrt(np.prod(shape[1:]))
    return torch.from_numpy(value.astype(np.float32))


@pytest.fixture(scope='session')
def meta() -> dict:
    return json.loads((DATA / 'meta.json').read_text())


@pytest.fixture(scope='session')
def official_keys() -> dict:
    """``{variant: [[key, shape, dtype], ...]}`` of the official classification state dicts."""
    with gzip.open(DATA / 'official_keys.json.gz', 'rt') as f:
        return {v: record['keys'] for v, record in json.load(f)['variants'].items()}


@pytest.fixture(scope='session')
def seeded_state_dict() -> Callable[[Sequence, int], Dict[str, torch.Tensor]]:
    """``make(keys, seed)``: the generator's state dict for ``[key, shape, ...]`` entries."""
    def make(keys: Sequence, seed: int) -> Dict[str, torch.Tensor]:
        return {entry[0]: seeded_tensor(seed, entry[0], entry[1]) for entry in keys}
    return make


@pytest.fixture(scope='session')
def reference_input(meta) -> Callable[[str], torch.Tensor]:
    """``make('512x512')``: the seeded reference input, checked against its hash."""
    def make(size: str) -> torch.Tensor:
        record = meta['inputs'][size]
        height, width = map(int, size.split('x'))
        normal = np.random.RandomState(record['seed']).standard_normal((1, 3, height, width))
        x = normal.astype(np.float16).astype(np.float32)
        assert hashlib.sha256(x.tobytes()).hexdigest() == record['sha256'], \
            f'the input generator drifted for {size}'
        return torch.from_numpy(x)
    return make


@pytest.fixture(scope='session')
def official_checkpoint(meta, official_keys, seeded_state_dict, tmp_path_factory
                        ) -> Callable[[str], Path]:
    """``path('efficientvit_m0')``: the seeded official-format checkpoint the references used."""
    folder = tmp_path_factory.mktemp('official_checkpoints')

    def path(variant: str) -> Path:
        file = folder / f'{variant}.pth'
        if not file.exists():
            record = meta['checkpoints'][variant]
            state = seeded_state_dict(official_keys[variant], record['seed'])
            assert state_dict_sha256(state) == record['sha256'], \
                f'the checkpoint generator drifted for {variant}'
            torch.save({'model': state}, file)
        return file
    return path


@pytest.fixture(scope='session')
def reference_outputs() -> Callable[[str], Dict[str, np.ndarray]]:
    """``outputs('shvit_s1')``: the official outputs stored in tests/data."""
    def load(variant: str) -> Dict[str, np.ndarray]:
        return dict(np.load(DATA / f'{variant}_outputs.npz'))
    return load


@pytest.fixture(scope='session')
def official_neck(meta, seeded_state_dict) -> dict:
    """The RetinaNet-M4 neck reference: ``cfg``, official ``keys`` (with the detector's
    ``neck.`` prefix), seeded ``state_dict`` (hash-checked) and the official ``io`` arrays."""
    record = meta['neck']
    state = seeded_state_dict(record['keys'], record['seed'])
    assert state_dict_sha256(state) == record['sha256'], 'the neck weight generator drifted'
    return dict(cfg=record['cfg'], keys=record['keys'], state_dict=state,
                io=dict(np.load(DATA / record['io'])))


# ---- deployment: inputs and one export per shared deploy config ------------------------------------
@pytest.fixture(scope='session')
def images(tmp_path_factory) -> dict:
    """A landscape and a portrait image, not multiples of 32."""
    from deploy_helpers import make_image
    root = tmp_path_factory.mktemp('images')
    return dict(wide=make_image(root / 'wide.jpg', 300, 420, 0),
                tall=make_image(root / 'tall.jpg', 410, 270, 1))


@pytest.fixture(scope='session')
def weights(tmp_path_factory) -> dict:
    """Seeded checkpoints: detectors with confident boxes that grow past the image borders."""
    from deploy_helpers import FPN, MASK_RCNN, RETINANET, large_boxes, make_checkpoint
    root = tmp_path_factory.mktemp('weights')
    return dict(retinanet=large_boxes(RETINANET, root / 'retinanet.pth'),
                mask_rcnn=large_boxes(MASK_RCNN, root / 'mask_rcnn.pth'),
                fpn=make_checkpoint(FPN, root / 'fpn.pth'))


@pytest.fixture(scope='session')
def coco_demo(tmp_path_factory) -> Path:
    from evit_mm.demo_data import make_coco_demo
    return make_coco_demo(str(tmp_path_factory.mktemp('coco') / 'coco'), 4, 4)


@pytest.fixture(scope='session')
def deployed(tmp_path_factory, images, weights, coco_demo) -> Callable:
    """``deployed('detection_onnxruntime_dynamic.py')``: ``deploy.py`` run once per session
    with that deploy config (static ones at 330x250), on the wide image with the tall one as
    ``--test-img``: RetinaNet-M4 (detection configs) or Mask R-CNN-M4 (instance-seg ones) on
    the generated COCO data, at a test scale whose resized sides are not multiples of 32."""
    from deploy_helpers import (DEPLOY, MASK_RCNN, ODD_SCALE, RETINANET, demo_config, run_deploy,
                                small_deploy_config)
    root = tmp_path_factory.mktemp('deployed')
    done = {}

    def get(name: str):
        if name not in done:
            work = root / name.replace('.py', '')
            work.mkdir(exist_ok=True)  # again after a failed export: that test shows its error
            detector = 'mask_rcnn' if name.startswith('instance-seg') else 'retinanet'
            model_cfg = str(demo_config(work, MASK_RCNN if detector == 'mask_rcnn' else RETINANET,
                                        coco_demo, ODD_SCALE))
            checkpoint = weights[detector]
            deploy_cfg = (str(DEPLOY / name) if 'dynamic' in name
                          else small_deploy_config(work, name, *ODD_SCALE))
            done[name] = run_deploy(work / 'out', deploy_cfg, model_cfg, checkpoint,
                                    images['wide'], '--test-img', images['tall'])
        return done[name]
    return get
