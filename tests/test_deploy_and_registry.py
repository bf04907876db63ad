"""switch_to_deploy, the attention-bias cache, and building from the framework registries."""
import pytest
import torch

from evit_mm import EfficientViT, SHViT
from evit_mm.checkpoint import CheckpointError, load_state_dict_strict
from evit_mm.models import build_backbone
from evit_mm.models.pretrained import load_backbone_state_dict


def _randomise_bn(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = 1 + 0.2 * torch.randn(m.weight.shape, generator=gen)
            m.bias.data = 0.1 * torch.randn(m.bias.shape, generator=gen)
            m.running_mean = 0.1 * torch.randn(m.running_mean.shape, generator=gen)
            m.running_var = 0.5 + torch.rand(m.running_var.shape, generator=gen)


@pytest.mark.parametrize('variant', ['efficientvit_m0', 'efficientvit_m4', 'shvit_s1', 'shvit_s4'])
@pytest.mark.parametrize('shape', [(1, 3, 224, 224), (2, 3, 200, 296)])
def test_deploy_matches_unfused(variant, shape):
    torch.manual_seed(0)
    model = build_backbone(variant)
    _randomise_bn(model)
    model.eval()
    x = torch.randn(shape)
    with torch.no_grad():
        expected = model(x)
        model.switch_to_deploy()
        fused = model(x)
    assert model.deploy
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for a, b in zip(expected, fused):
        assert (a - b).abs().max().item() < 1e-4


def test_deploy_build_loads_fused_weights_and_refuses_training():
    torch.manual_seed(0)
    model = SHViT('s1')
    _randomise_bn(model)
    model.eval().switch_to_deploy()
    fresh = SHViT('s1', deploy=True)
    assert fresh.state_dict().keys() == model.state_dict().keys()
    load_state_dict_strict(fresh, model.state_dict())
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        for a, b in zip(model(x), fresh.eval()(x)):
            torch.testing.assert_close(a, b)
    with pytest.raises(RuntimeError, match='deploy mode .* cannot be trained; build it with deploy=False'):
        fresh.train()
    assert fresh.eval() is fresh


def test_fused_checkpoint_into_unfused_model_says_deploy():
    fused = EfficientViT('m0', deploy=True).state_dict()
    with pytest.raises(CheckpointError, match=r"matches EfficientViT\(arch='m0', deploy=True\)"):
        load_backbone_state_dict(EfficientViT('m0'), fused)


def test_bias_cache_follows_dtype_device_and_weight_changes():
    model = EfficientViT('m0')
    _randomise_bn(model)  # the zero-initialised projection BN would hide the attention
    model.eval()
    attn = model.blocks1[0].mixer.m.attn
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        first = model(x)
        cached = attn.attention_bias()
        assert cached is attn.attention_bias()  # reused while nothing changes
        state = model.state_dict()
        state['blocks1.0.mixer.m.attn.attention_biases'] = torch.randn(4, 49)
        model.load_state_dict(state)
        refreshed = attn.attention_bias()
        assert refreshed is not cached
        torch.testing.assert_close(refreshed[0, 0, :7], state['blocks1.0.mixer.m.attn.attention_biases'][0, :7])
        assert not torch.allclose(model(x)[0], first[0])
        model.double()
        assert attn.attention_bias().dtype == torch.float64
        assert model(x.double())[0].dtype == torch.float64


def test_biases_get_gradients_in_eval_mode_with_grad():
    model = EfficientViT('m0').eval()
    out = model(torch.randn(1, 3, 112, 112))
    out[-1].sum().backward()
    assert model.blocks3[3].mixer.m.attn.attention_biases.grad is not None


_BUILD_FROM_REGISTRY = """
import importlib, sys, types, torch
if sys.argv[1] == 'mmpretrain':
    try:
        import torchvision  # noqa: F401
    except Exception:
        # mmpretrain 1.2.0 imports torchvision.ops.boxes at import time, and no torchvision
        # runs beside the CPU torch 2.13 wheel; a stand-in lets mmpretrain's registry import.
        for name in ['torchvision', 'torchvision.ops', 'torchvision.ops.boxes']:
            sys.modules[name] = types.ModuleType(name)
import evit_mm
models = importlib.import_module(sys.argv[1] + '.registry').MODELS
eff = models.build(dict(type='evit_mm.EfficientViT', arch='m0', out_indices=(1, 2)))
shv = models.build(dict(type='evit_mm.SHViT', arch='s1', frozen_stages=1))
assert isinstance(eff, evit_mm.EfficientViT) and eff.out_channels == [128, 192]
assert isinstance(shv, evit_mm.SHViT) and shv.frozen_stages == 1
print([o.shape[1] for o in shv.eval()(torch.randn(1, 3, 64, 64))])
"""


@pytest.mark.parametrize('registry', ['mmdet', 'mmseg', 'mmpretrain'])
def test_build_from_framework_registries(registry):
    import subprocess
    import sys
    result = subprocess.run([sys.executable, '-c', _BUILD_FROM_REGISTRY, registry],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith('[128, 224, 320]')


def test_model_code_does_not_import_frameworks():
    import subprocess
    import sys
    code = ('import sys, evit_mm; bad = [m for m in sys.modules if m.split(".")[0] in '
            '("mmdet", "mmseg", "mmpretrain")]; print(bad); sys.exit(1 if bad else 0)')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
