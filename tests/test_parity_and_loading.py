"""Numerical parity with the official backbones and checkpoint loading."""
import numpy as np
import pytest
import torch
from conftest import VARIANTS, build, load_input, official_state_dict

from evit_mm import EfficientViT, SHViT
from evit_mm.checkpoint import (PRETRAINED_URLS, CheckpointError, extract_state_dict,
                                load_pretrained, resolve_checkpoint)
from evit_mm.models.efficientvit import relative_offset_index

ATOL = 1e-4
CKPTS = {'efficientvit_m0': 'efficientvit_m0/efficientvit_m0_seed1000.pth',
         'shvit_s1': 'shvit_s1/shvit_s1_seed2001.pth'}


@pytest.fixture(scope='module')
def official_models(reference):
    models = {}
    for variant, rel in CKPTS.items():
        model = build(variant, init_cfg=dict(type='Pretrained', checkpoint=str(reference / rel)))
        model.init_weights()
        models[variant] = model.eval()
    return models


@pytest.mark.parametrize('variant,size', [
    ('efficientvit_m0', '512x512'), ('efficientvit_m0', '600x904'),
    ('efficientvit_m0', '800x1344'), ('shvit_s1', '224x224'), ('shvit_s1', '512x512'),
    ('shvit_s1', '600x904'), ('shvit_s1', '800x1344')])
def test_parity_with_official_detection_backbone(official_models, reference, variant, size):
    ref = np.load(reference / variant / f'ref_{size}.npz')
    with torch.no_grad():
        outs = official_models[variant](load_input(reference, size))
    assert len(outs) == 3
    for i, out in enumerate(outs):
        expected = torch.from_numpy(ref[f'out{i}'])
        assert out.shape == expected.shape
        assert (out - expected).abs().max().item() < ATOL, (variant, size, i)


def test_efficientvit_224_stages_match_classifier_and_last_stage_works(official_models, reference):
    cls = np.load(reference / 'efficientvit_m0' / 'cls.npz')
    with torch.no_grad():
        outs = official_models['efficientvit_m0'](load_input(reference, '224x224'))
    for i, name in enumerate(['blocks1_224x224', 'blocks2_224x224']):
        assert (outs[i] - torch.from_numpy(cls[name])).abs().max().item() < ATOL
    assert outs[2].shape == (1, 192, 4, 4) and torch.isfinite(outs[2]).all()


def test_stage3_biases_converted_like_official(official_models, reference):
    expected = np.load(reference / 'efficientvit_m0' / 'converted_attention_biases.npz')
    params = dict(official_models['efficientvit_m0'].named_parameters())
    assert len(expected.files) == 3
    for name in expected.files:
        key = name[len('converted.'):]
        torch.testing.assert_close(params[key].detach(), torch.from_numpy(expected[name]),
                                   rtol=0, atol=1e-6)


def test_relative_offset_index_equals_official_table(reference):
    state = torch.load(reference / CKPTS['efficientvit_m0'], weights_only=True)['model']
    official = state['blocks1.0.mixer.m.attn.attention_bias_idxs']
    assert torch.equal(relative_offset_index(7), official)
    assert 'attention_bias_idxs' not in ''.join(EfficientViT('m0').state_dict())


@pytest.mark.parametrize('variant', VARIANTS)
def test_official_keys_load_completely(variant, official_keys, tmp_path):
    keys = official_keys[variant]['keys']
    state = official_state_dict(keys, seed=VARIANTS.index(variant))
    path = tmp_path / f'{variant}.pth'
    torch.save({'model': state}, path)
    model = build(variant, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    loaded = model.state_dict()
    for key, value in loaded.items():
        source = state[key]
        if source.shape != value.shape:  # stage-3 biases of the 224 classifier: 4x4 -> 7x7
            assert key.endswith('attention_biases') and source.shape[1] == 16 and value.shape[1] == 49
            continue
        assert torch.equal(value, source), key
    used = set(loaded)
    dropped = {k for k, _, _ in keys} - used
    assert all(k.startswith('head.') or k.endswith('attention_bias_idxs') for k in dropped)


def test_short_names_map_to_release_urls():
    assert resolve_checkpoint('efficientvit_m4') == ('https://github.com/xinyuliu-jeffrey/'
                                                     'EfficientViT_Model_Zoo/releases/download/'
                                                     'v1.0/efficientvit_m4.pth')
    assert resolve_checkpoint('shvit_s4') == \
        'https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_s4.pth'
    assert len(PRETRAINED_URLS) == 10
    assert resolve_checkpoint('/some/file.pth') == '/some/file.pth'


def test_offline_download_names_url_and_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path))

    def refuse(url, dst, progress=True):
        raise OSError('network unreachable')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)
    with pytest.raises(CheckpointError, match=r'efficientvit_m1\.pth.*init_cfg\.checkpoint='):
        load_pretrained(EfficientViT('m1'), 'efficientvit_m1')


@pytest.mark.parametrize('layout', ['official', 'bare', 'module', 'mmengine_backbone', 'prefix'])
def test_checkpoint_layouts(layout, official_models, tmp_path):
    source = official_models['shvit_s1'].state_dict()
    wrap = {
        'official': lambda s: {'model': s},
        'bare': lambda s: s,
        'module': lambda s: {'model': {'module.' + k: v for k, v in s.items()}},
        'mmengine_backbone': lambda s: {'meta': {'epoch': 3}, 'state_dict': {
            **{'backbone.' + k: v for k, v in s.items()}, 'neck.lateral.weight': torch.ones(1)}},
        'prefix': lambda s: {'state_dict': {'encoder.' + k: v for k, v in s.items()}},
    }[layout]
    path = tmp_path / 'ckpt.pth'
    torch.save(wrap(source), path)
    model = SHViT('s1')
    load_pretrained(model, str(path), prefix='encoder' if layout == 'prefix' else None)
    for key, value in model.state_dict().items():
        assert torch.equal(value, source[key]), key


def test_wrong_arch_checkpoint_names_shapes_and_match(official_models, tmp_path):
    path = tmp_path / 'm0.pth'
    torch.save({'model': official_models['efficientvit_m0'].state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(EfficientViT('m4'), str(path))
    msg = str(err.value)
    assert "EfficientViT(arch='m4')" in msg
    assert "('patch_embed.0.c.weight', (8, 3, 3, 3), (16, 3, 3, 3))" in msg
    assert "matches EfficientViT(arch='m0')" in msg


def test_missing_keys_are_an_error(official_models, tmp_path):
    state = dict(official_models['shvit_s1'].state_dict())
    del state['blocks3.4.ffn.m.pw2.bn.weight']
    path = tmp_path / 'partial.pth'
    torch.save(state, path)
    model = SHViT('s1')
    before = model.state_dict()['blocks1.0.conv.m.c.weight'].clone()
    with pytest.raises(CheckpointError, match=r'missing keys \(1\): blocks3\.4\.ffn\.m\.pw2\.bn\.weight'):
        load_pretrained(model, str(path))
    assert torch.equal(model.state_dict()['blocks1.0.conv.m.c.weight'], before)  # nothing half-loaded


def test_wrong_family_is_an_error(official_models, tmp_path):
    path = tmp_path / 's1.pth'
    torch.save({'model': official_models['shvit_s1'].state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"matches SHViT\(arch='s1'\)"):
        load_pretrained(EfficientViT('m0'), str(path))


def test_corrupted_and_missing_files(tmp_path):
    bad = tmp_path / 'broken.pth'
    bad.write_bytes(b'PK\x03\x04 this is not a checkpoint')
    with pytest.raises(CheckpointError, match='corrupted or not a PyTorch checkpoint'):
        load_pretrained(SHViT('s1'), str(bad))
    with pytest.raises(CheckpointError, match='neither an existing file nor a known short name'):
        load_pretrained(SHViT('s1'), str(tmp_path / 'nope.pth'))
    torch.save([1, 2, 3], tmp_path / 'list.pth')
    with pytest.raises(CheckpointError, match='holds a list, not a dict'):
        load_pretrained(SHViT('s1'), str(tmp_path / 'list.pth'))


class _Payload:
    def __reduce__(self):
        return (print, ('code ran',))


def test_checkpoint_with_code_is_refused(tmp_path, capsys):
    path = tmp_path / 'evil.pth'
    torch.save({'model': {}, 'extra': _Payload()}, path)
    with pytest.raises(CheckpointError, match='weights_only=True'):
        load_pretrained(SHViT('s1'), str(path))
    assert 'code ran' not in capsys.readouterr().out


def test_extract_state_dict_rejects_non_tensors():
    with pytest.raises(CheckpointError, match='not tensors'):
        extract_state_dict({'model': {'a': 1}})
    with pytest.raises(CheckpointError, match="starts with 'backbone.'"):
        extract_state_dict({'state_dict': {'neck.x': torch.ones(1)}}, prefix='backbone')
