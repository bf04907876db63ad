"""Shared fixtures: the official reference data and small checkpoint factories."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get('EVIT_MM_REFERENCE', REPO.parent / 'shared' / 'reference'))
VARIANTS = ['efficientvit_m0', 'efficientvit_m1', 'efficientvit_m2', 'efficientvit_m3',
            'efficientvit_m4', 'efficientvit_m5', 'shvit_s1', 'shvit_s2', 'shvit_s3', 'shvit_s4']


@pytest.fixture(scope='session')
def reference() -> Path:
    if not (REFERENCE / 'README.md').is_file():
        pytest.fail(f'Reference fixtures not found at {REFERENCE}; set EVIT_MM_REFERENCE to the '
                    'folder with the official outputs (shared/reference).')
    return REFERENCE


@pytest.fixture(scope='session')
def official_keys(reference) -> dict:
    return json.loads((reference / 'official_keys.json').read_text())['variants']


def load_input(reference: Path, size: str) -> torch.Tensor:
    return torch.from_numpy(np.load(reference / 'inputs' / f'input_{size}.npz')['x'].astype(np.float32))


def build(variant: str, **kwargs):
    from evit_mm import EfficientViT, SHViT
    family, arch = variant.split('_')
    return (EfficientViT if family == 'efficientvit' else SHViT)(arch, **kwargs)


def official_state_dict(keys: list, seed: int = 0) -> dict:
    """Random tensors with exactly the official keys, shapes and dtypes."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, dtype in keys:
        if dtype == 'int64':
            state[key] = torch.randint(0, 10, shape, generator=gen, dtype=torch.int64)
        elif key.endswith('running_var'):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.1
    return state
