"""EfficientViTFPN: official keys and outputs, level layout, and invalid settings."""
import pytest
import torch

from evit_mm import EfficientViTFPN


def test_official_keys_shapes_and_outputs(official_neck):
    neck = EfficientViTFPN(**official_neck['cfg']).eval()
    ours = [('neck.' + k, tuple(v.shape)) for k, v in neck.state_dict().items()]
    assert ours == [(k, tuple(shape)) for k, shape in official_neck['keys']]
    state = {k[len('neck.'):]: v for k, v in official_neck['state_dict'].items()}
    neck.load_state_dict(state)
    io = official_neck['io']
    with torch.no_grad():
        outs = neck([torch.from_numpy(io[f'in{i}']) for i in range(3)])
    assert len(outs) == 5
    for i, out in enumerate(outs):
        expected = torch.from_numpy(io[f'out{i}'])
        assert out.shape == expected.shape
        assert (out - expected).abs().max().item() < 1e-4, i


def test_official_mask_rcnn_neck_keys(meta):
    record = meta['neck_mask_rcnn']
    ours = [('neck.' + k, list(v.shape))
            for k, v in EfficientViTFPN(**record['cfg']).state_dict().items()]
    assert ours == [(k, shape) for k, shape in record['keys']]


@pytest.mark.parametrize('kwargs,strides', [
    (dict(num_outs=5, num_extra_trans_convs=1, add_extra_convs='on_input'), [8, 16, 32, 64, 128]),
    (dict(num_outs=5, num_extra_trans_convs=2), [4, 8, 16, 32, 64]),
    (dict(num_outs=3, num_extra_trans_convs=0), [16, 32, 64]),  # official code crashes here
    (dict(num_outs=5, num_extra_trans_convs=0), [16, 32, 64, 128, 256]),
    (dict(num_outs=6, num_extra_trans_convs=1, add_extra_convs='on_output',
          relu_before_extra_convs=True), [8, 16, 32, 64, 128, 256]),
])
def test_output_strides(kwargs, strides):
    neck = EfficientViTFPN([32, 48, 64], 16, **kwargs)
    feats = [torch.randn(1, c, 256 // s, 512 // s) for c, s in zip([32, 48, 64], [16, 32, 64])]
    outs = neck(feats)
    assert [o.shape[2] for o in outs] == [max(1, -(-256 // s)) for s in strides]
    assert all(o.shape[1] == 16 for o in outs)


@pytest.mark.parametrize('kwargs,message', [
    (dict(num_outs=4, num_extra_trans_convs=2), r'num_outs=4 is too small.*num_outs >= 5'),
    (dict(num_outs=5, num_extra_trans_convs=-1), 'must be an int >= 0'),
    (dict(num_outs=5, add_extra_convs='on_top'), "add_extra_convs='on_top'"),
    (dict(num_outs=5, end_level=2), 'no coarser extra level is possible'),
])
def test_invalid_settings_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EfficientViTFPN([32, 48, 64], 16, **kwargs)


def test_wrong_number_of_inputs():
    neck = EfficientViTFPN([32, 48, 64], 16, num_outs=3)
    with pytest.raises(ValueError, match=r'expects 3 inputs .* got 2'):
        neck([torch.randn(1, 32, 8, 8), torch.randn(1, 48, 4, 4)])
