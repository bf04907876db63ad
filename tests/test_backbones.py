"""Shapes, arch validation and training-time semantics of both backbones."""
import re

import pytest
import torch

from evit_mm import EfficientViT, SHViT
from evit_mm.models import build_backbone

CHANNELS = {
    'efficientvit_m0': [64, 128, 192], 'efficientvit_m1': [128, 144, 192],
    'efficientvit_m2': [128, 192, 224], 'efficientvit_m3': [128, 240, 320],
    'efficientvit_m4': [128, 256, 384], 'efficientvit_m5': [192, 288, 384],
    'shvit_s1': [128, 224, 320], 'shvit_s2': [128, 308, 448],
    'shvit_s3': [192, 352, 448], 'shvit_s4': [224, 336, 448],
}
# strides 16/32/64, sides rounded up: multiples of 64, of 16 only, of neither (odd halves at every
# stage), and smaller than one 7x7 window
SIZES = {(224, 224): [(14, 14), (7, 7), (4, 4)], (128, 128): [(8, 8), (4, 4), (2, 2)],
         (216, 328): [(14, 21), (7, 11), (4, 6)], (64, 64): [(4, 4), (2, 2), (1, 1)]}


def test_output_shapes_all_sizes(variant):
    model = build_backbone(variant).eval()
    assert model.out_channels == CHANNELS[variant]
    with torch.no_grad():
        for (h, w), sizes in SIZES.items():
            outs = model(torch.randn(1, 3, h, w))
            assert [tuple(o.shape) for o in outs] == [
                (1, c, *s) for c, s in zip(CHANNELS[variant], sizes)], (h, w)
            assert all(torch.isfinite(o).all() and o.is_contiguous() for o in outs)


def test_out_indices_subset_and_batch():
    model = EfficientViT('m0', out_indices=(2, 0)).eval()
    assert model.out_indices == (0, 2) and model.out_channels == [64, 192]
    outs = model(torch.randn(2, 3, 96, 128))
    assert [tuple(o.shape) for o in outs] == [(2, 64, 6, 8), (2, 192, 2, 2)]
    assert SHViT('s1', out_indices=-1).out_channels == [320]


def test_arch_aliases_and_custom_dict():
    assert EfficientViT('EfficientViT_M4').arch_settings == EfficientViT('m4').arch_settings
    custom = SHViT(dict(embed_dims=[32, 48, 64], depths=[1, 1, 1], partial_dims=[8, 12, 16]))
    assert custom.arch_name == 'custom' and custom.out_channels == [32, 48, 64]
    assert custom.arch_settings['types'] == ['i', 's', 's']


@pytest.mark.parametrize('cls,arch,choices', [
    (EfficientViT, 'm9', "['m0', 'm1', 'm2', 'm3', 'm4', 'm5']"),
    (SHViT, 'm4', "['s1', 's2', 's3', 's4']"),
])
def test_unknown_arch_lists_choices(cls, arch, choices):
    with pytest.raises(KeyError, match=f"Unknown {cls.__name__} arch '{arch}'.*" + re.escape(choices)):
        cls(arch)


def test_custom_arch_missing_keys():
    with pytest.raises(KeyError, match=r"missing keys \['depths'\]"):
        EfficientViT(dict(embed_dims=[64, 128, 192], num_heads=[4, 4, 4]))
    with pytest.raises(ValueError, match='must list 3 stages'):
        SHViT(dict(embed_dims=[32, 48], depths=[1, 1, 1], partial_dims=[8, 12, 16]))


@pytest.mark.parametrize('bad', [(3,), (0, 0), (), ('1',), (-4,)])
def test_bad_out_indices(bad):
    with pytest.raises(ValueError, match=r'out_indices=.*\[0, 1, 2\]'):
        EfficientViT('m0', out_indices=bad)


@pytest.mark.parametrize('bad', [-2, 4])
def test_bad_frozen_stages(bad):
    with pytest.raises(ValueError, match=r'frozen_stages=.*-1 \(none\), 0 \(stem\) or 1\.\.3'):
        SHViT('s1', frozen_stages=bad)


@pytest.mark.parametrize('frozen', [-1, 0, 1, 2, 3])
def test_frozen_stages(frozen):
    model = EfficientViT('m0', frozen_stages=frozen, norm_eval=False)
    assert model.train() is model
    parts = [model.patch_embed, model.blocks1, model.blocks2, model.blocks3]
    for i, part in enumerate(parts):
        frozen_part = i <= frozen
        assert all(p.requires_grad != frozen_part for p in part.parameters())
        assert all(m.training != frozen_part for m in part.modules())
    model.train()  # stays frozen after another train()
    assert all(not p.requires_grad for p in model.patch_embed.parameters()) == (frozen >= 0)
    outs = model(torch.randn(2, 3, 64, 64))
    if frozen == 3:
        assert not any(o.requires_grad for o in outs)
        return
    sum(o.sum() for o in outs).backward()
    for i, part in enumerate(parts):
        grads = [p.grad for p in part.parameters()]
        assert all(g is None for g in grads) == (i <= frozen)


def test_norm_eval():
    bns = lambda m: [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]  # noqa: E731
    model = SHViT('s1', norm_eval=True).train()
    assert model.training and not any(bn.training for bn in bns(model))
    model = SHViT('s1', norm_eval=False).train()
    assert all(bn.training for bn in bns(model))
    model.eval()
    assert not any(bn.training for bn in bns(model))


@pytest.mark.parametrize('cls,arch', [(EfficientViT, 'm0'), (SHViT, 's1')])
def test_with_cp_same_outputs_and_grads(cls, arch):
    torch.manual_seed(0)
    plain = cls(arch, norm_eval=False)
    ckpt = cls(arch, norm_eval=False, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 80, 112)
    results = []
    for model in (plain, ckpt):
        model.train()
        outs = model(x)
        loss = sum((o * o).mean() for o in outs)
        loss.backward()
        results.append((outs, {n: p.grad.clone() for n, p in model.named_parameters()}))
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert results[0][1].keys() == results[1][1].keys()
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], rtol=1e-4, atol=1e-5, msg=name)
