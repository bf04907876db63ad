"""Numerical parity with the official backbones and checkpoint loading."""
from pathlib import Path

import numpy as np
import pytest
import torch

from evit_mm import EfficientViT, SHViT
from evit_mm.checkpoint import CheckpointError, extract_state_dict, read_checkpoint
from evit_mm.models import build_backbone
from evit_mm.models.efficientvit import relative_offset_index
from evit_mm.models.pretrained import PRETRAINED_URLS, load_pretrained, resolve_checkpoint

ATOL = 1e-4
REFERENCE_VARIANTS = ['efficientvit_m0', 'shvit_s1']


@pytest.fixture(scope='module')
def official_models(official_checkpoint):
    """The two reference backbones, loaded from their seeded official-format checkpoints."""
    models = {}
    for variant in REFERENCE_VARIANTS:
        model = build_backbone(variant, init_cfg=dict(
            type='Pretrained', checkpoint=str(official_checkpoint(variant))))
        model.init_weights()
        models[variant] = model.eval()
    return models


@pytest.mark.parametrize('variant,size', [
    ('efficientvit_m0', '512x512'), ('efficientvit_m0', '600x904'), ('shvit_s1', '224x224'),
    ('shvit_s1', '600x904')])
def test_parity_with_official_detection_backbone(official_models, reference_input,
                                                 reference_outputs, variant, size):
    ref = reference_outputs(variant)
    with torch.no_grad():
        outs = official_models[variant](reference_input(size))
    assert len(outs) == 3
    for i, out in enumerate(outs):
        expected = torch.from_numpy(ref[f'{size}/out{i}'])
        assert out.shape == expected.shape
        assert (out - expected).abs().max().item() < ATOL, (variant, size, i)


def test_efficientvit_224_stages_match_classifier_and_last_stage_works(
        official_models, reference_input, reference_outputs):
    ref = reference_outputs('efficientvit_m0')
    with torch.no_grad():
        outs = official_models['efficientvit_m0'](reference_input('224x224'))
    for i in range(2):
        assert (outs[i] - torch.from_numpy(ref[f'224x224/out{i}'])).abs().max().item() < ATOL
    assert outs[2].shape == (1, 192, 4, 4) and torch.isfinite(outs[2]).all()


def test_stage3_biases_converted_like_official(official_models, reference_outputs):
    expected = {k: v for k, v in reference_outputs('efficientvit_m0').items()
                if k.startswith('converted.')}
    params = dict(official_models['efficientvit_m0'].named_parameters())
    assert len(expected) == 3
    for name, value in expected.items():
        key = name[len('converted.'):]
        torch.testing.assert_close(params[key].detach(), torch.from_numpy(value), rtol=0, atol=1e-6)


def test_relative_offset_index_equals_official_table(official_checkpoint):
    state = torch.load(official_checkpoint('efficientvit_m0'), weights_only=True)['model']
    assert torch.equal(relative_offset_index(7), state['blocks1.0.mixer.m.attn.attention_bias_idxs'])
    assert torch.equal(relative_offset_index(4), state['blocks3.3.mixer.m.attn.attention_bias_idxs'])
    assert 'attention_bias_idxs' not in ''.join(EfficientViT('m0').state_dict())


def test_official_keys_load_completely(variant, official_keys, seeded_state_dict, tmp_path):
    keys = official_keys[variant]
    state = seeded_state_dict(keys, seed=7)
    path = tmp_path / f'{variant}.pth'
    torch.save({'model': state}, path)
    model = build_backbone(variant, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    loaded = model.state_dict()
    for key, value in loaded.items():
        source = state[key]
        if source.shape != value.shape:  # stage-3 biases of the 224 classifier: 4x4 -> 7x7
            assert key.endswith('attention_biases') and source.shape[1] == 16 and value.shape[1] == 49
            continue
        assert torch.equal(value, source), key
    dropped = {k for k, _, _ in keys} - set(loaded)
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


def _truncated(length_of):
    def make(good: Path, bad: Path) -> None:
        data = good.read_bytes()
        bad.write_bytes(data[:length_of(len(data))])
    return make


BAD_FILES = {
    'truncated_100': _truncated(lambda n: 100),
    'truncated_5000': _truncated(lambda n: 5000),
    'truncated_half': _truncated(lambda n: n // 2),
    'truncated_last_byte': _truncated(lambda n: n - 1),
    'random_bytes': lambda good, bad: bad.write_bytes(np.random.RandomState(0).bytes(20000)),
    'random_bytes_2': lambda good, bad: bad.write_bytes(np.random.RandomState(1).bytes(5000)),
    'zip_magic_then_junk': lambda good, bad: bad.write_bytes(b'PK\x03\x04 not a checkpoint'),
    'empty': lambda good, bad: bad.write_bytes(b''),
    'directory': lambda good, bad: bad.mkdir(),
}


@pytest.mark.parametrize('kind', list(BAD_FILES))
def test_unreadable_checkpoint_is_named(tmp_path, official_checkpoint, kind):
    bad = tmp_path / f'{kind}.pth'
    BAD_FILES[kind](official_checkpoint('shvit_s1'), bad)
    expected = f'{bad} is corrupted or not a PyTorch checkpoint .*; re-download or re-save it'
    with pytest.raises(CheckpointError, match=expected):
        read_checkpoint(str(bad))
    with pytest.raises(CheckpointError, match=expected):
        load_pretrained(SHViT('s1'), str(bad))


def test_missing_checkpoint_is_named(tmp_path):
    missing = tmp_path / 'nope.pth'
    with pytest.raises(CheckpointError, match=f'Checkpoint {missing} not found'):
        read_checkpoint(str(missing))
    with pytest.raises(CheckpointError, match=f"'{missing}' is neither an existing file nor a "
                                              'known short name'):
        load_pretrained(SHViT('s1'), str(missing))


def test_non_dict_checkpoint(tmp_path):
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


def test_torch_without_scoped_allow_list_reads_tensors_and_names_the_rest(tmp_path, monkeypatch):
    """torch < 2.5 has no ``safe_globals``: tensor-only files still load weights-only, and an
    mmengine runner checkpoint (numpy, HistoryBuffer) is named, not loaded unrestricted."""
    from mmengine.logging import HistoryBuffer
    monkeypatch.delattr(torch.serialization, 'safe_globals', raising=False)  # torch < 2.5: absent
    plain, runner = tmp_path / 'plain.pth', tmp_path / 'runner.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}}, plain)
    torch.save({'state_dict': {'w': torch.ones(2)}, 'message_hub': HistoryBuffer(),
                'meta': {'seed': np.int64(3)}}, runner)
    assert torch.equal(read_checkpoint(str(plain))['state_dict']['w'], torch.ones(2))
    with pytest.raises(CheckpointError, match=f'{runner} contains pickled Python objects other '
                                              'than tensors'):
        read_checkpoint(str(runner))
