"""Measuring tools: benchmark, FLOPs, ONNX export parity and the model-zoo report."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evit_mm.analysis.benchmark import benchmark, benchmark_backend, main as benchmark_main
from evit_mm.analysis.complexity import complexity
from evit_mm.inference import RawNetwork, build_inference_model, fuse_model
from evit_mm.analysis.model_zoo import MARK_END, MARK_START, collect, main as model_zoo_main
from evit_mm.analysis.onnx_export import ExportParityError, export_onnx

REPO = Path(__file__).resolve().parents[1]
RETINA_M0 = str(REPO / 'configs/detection/retinanet_evit_m0.py')
FPN_S1 = str(REPO / 'configs/segmentation/fpn_shvit_s1_ade20k.py')


@pytest.mark.parametrize('backbone_only,channels_last', [(False, False), (True, True)])
def test_benchmark_record(backbone_only, channels_last):
    record = benchmark(RETINA_M0, shape=(128, 160), backbone_only=backbone_only, fuse=True,
                       channels_last=channels_last, iters=3, warmup=1, threads=2,
                       progress=False)
    assert record['part'] == ('backbone' if backbone_only else 'model')
    assert record['channels_last'] is channels_last
    assert record['shape'] == [128, 160] and record['fused'] is True
    assert record['device'] == 'cpu' and record['threads'] == 2
    assert record['torch'] == torch.__version__ and record['iters'] == 3
    for key in ('fps', 'ms_per_img', 'ms_p25', 'ms_p75', 'flops', 'achieved_gflops',
                'matmul_peak_gflops', 'fraction_of_peak'):
        assert record[key] > 0, key
    assert record['ms_min'] <= record['ms_per_img'] <= record['ms_max']
    assert record['fps'] == pytest.approx(1000 / record['ms_per_img'])


def test_backbone_throughput_in_a_backend(tmp_path):
    record = benchmark_backend(RETINA_M0, 'onnxruntime', shape=(128, 128), backbone_only=True,
                               batch_size=3, iters=2, warmup=1, threads=2,
                               work_dir=str(tmp_path / 'ort'))
    assert record['backend'] == 'onnxruntime' and record['batch_size'] == 3
    assert (tmp_path / 'ort' / 'backbone.onnx').is_file()
    # images per second: a call processes 3 images
    assert record['fps'] == pytest.approx(1000 / record['ms_per_img'])
    assert record['pytorch_fps'] > 0 and record['speedup_vs_pytorch'] == pytest.approx(
        record['fps'] / record['pytorch_fps'])


def test_end_to_end_model_in_openvino(tmp_path):
    record = benchmark_backend(FPN_S1, 'openvino', shape=(128, 128), iters=1, warmup=1,
                               threads=2, work_dir=str(tmp_path / 'ov'))
    assert record['part'] == 'model' and record['shape'] == [128, 128]
    assert (tmp_path / 'ov' / 'end2end.onnx').is_file() and record['fps'] > 0
    assert record['flops'] > 0 and record['pytorch_fps'] > 0


def test_batch_size_needs_backbone_only(capsys):
    with pytest.raises(SystemExit):
        benchmark_main([RETINA_M0, '--batch-size', '4'])
    assert '--batch-size > 1 times backbones' in capsys.readouterr().err


def test_benchmark_cli_writes_json(tmp_path):
    out = tmp_path / 'b.json'
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools/analysis/benchmark.py'), FPN_S1, '--shape', '96', '96',
         '--iters', '2', '--warmup', '1', '--threads', '1', '--out', str(out)],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record['config'] == FPN_S1 and record['fused'] is False and record['threads'] == 1
    assert 'FPS' in result.stdout and 'ms/img' in result.stdout


@pytest.mark.parametrize('config', [RETINA_M0, FPN_S1])
def test_fused_model_matches_unfused(config):
    torch.manual_seed(0)
    plain, _, _ = build_inference_model(config)
    fused, _, _ = build_inference_model(config)
    fused.load_state_dict(plain.state_dict())
    # random BN statistics, so that fusion has something to fold
    for m in list(plain.modules()):
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    fused.load_state_dict(plain.state_dict())
    fuse_model(fused)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.backbone.modules())
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        for a, b in zip(RawNetwork(plain)(x), RawNetwork(fused)(x)):
            assert a.shape == b.shape
            assert (a - b).abs().max().item() < 1e-4


def test_complexity_parts_add_up():
    model, _, _ = build_inference_model(RETINA_M0)
    parts = complexity(model, 256, 256)
    assert all(parts[p]['flops'] > 0 and parts[p]['params'] > 0 for p in parts)
    assert parts['total']['params'] == sum(p.numel() for p in model.parameters())
    assert sum(parts[p]['params'] for p in ('backbone', 'neck', 'head')) == parts['total']['params']
    assert sum(parts[p]['flops'] for p in ('backbone', 'neck', 'head')) == parts['total']['flops']
    # FLOPs are multiply-adds: the first (stride-2, 3->16, 3x3) stem conv alone is
    # 128*128 * 16 * 3*3*3 MACs at 256x256
    stem = torch.nn.Conv2d(3, 16, 3, 2, 1)
    from mmengine.analysis import FlopAnalyzer
    assert FlopAnalyzer(stem, (torch.zeros(1, 3, 256, 256),)).total() == 128 * 128 * 16 * 27


def test_get_flops_cli(tmp_path):
    out = tmp_path / 'c.json'
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools/analysis/get_flops.py'), RETINA_M0, '--shape', '128',
         '128', '--out', str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record['flops_unit'] == 'multiply-adds' and record['shape'] == [128, 128]
    assert record['total']['flops'] > record['backbone']['flops'] > 0
    assert 'multiply-adds' in result.stdout


@pytest.mark.parametrize('arch', ['evit_m0', 'shvit_s1'])
@pytest.mark.parametrize('shape', [(224, 224), (200, 328)])
def test_onnx_backbone_parity(tmp_path, arch, shape):
    config = str(REPO / f'configs/detection/retinanet_{arch}.py')
    record = export_onnx(config, str(tmp_path / 'b.onnx'), shape=shape, backbone_only=True,
                         iters=1, warmup=0)
    assert record['outputs'] == 3 and record['max_abs_diff'] <= 1e-4
    assert record['torch_fps'] > 0 and record['onnxruntime_fps'] > 0


@pytest.mark.parametrize('backbone_only', [True, False])
def test_onnx_dynamic_export(tmp_path, backbone_only):
    record = export_onnx(RETINA_M0, str(tmp_path / 'n.onnx'), shape=(128, 128), dynamic=True,
                         backbone_only=backbone_only, iters=1, warmup=0)
    # RetinaNet: classification and box maps of 5 levels
    assert record['outputs'] == (3 if backbone_only else 10)
    assert record['max_abs_diff'] <= 1e-4
    assert record['dynamic_check_shape'] == [160, 192]
    assert record['dynamic_max_abs_diff'] <= 1e-4


def test_onnx_dynamic_export_pads_windows_the_export_did_not(tmp_path):
    # at 112x112 the stride-16 map is one 7x7 window: nothing to pad while tracing, unlike at
    # the 144x176 the graph is checked at
    record = export_onnx(RETINA_M0, str(tmp_path / 'b.onnx'), shape=(112, 112), dynamic=True,
                         backbone_only=True, iters=1, warmup=0)
    assert record['dynamic_check_shape'] == [144, 176]
    assert record['dynamic_max_abs_diff'] <= 1e-4


def test_onnx_dynamic_export_refuses_frozen_sizes(tmp_path):
    # mmseg's decode head resizes to sizes computed in Python: the dynamic graph is wrong
    with pytest.raises(ExportParityError, match=r'wrong at \(160, 192\).*fixed --shape'):
        export_onnx(FPN_S1, str(tmp_path / 'n.onnx'), shape=(128, 128), dynamic=True,
                    iters=1, warmup=0)


def test_onnx_whole_segmentor(tmp_path):
    record = export_onnx(FPN_S1, str(tmp_path / 'n.onnx'), shape=(128, 160), iters=1, warmup=0)
    assert record['outputs'] == 1 and record['max_abs_diff'] <= 1e-4


def _fake_work_dir(root: Path, name: str, metrics=None, fps=None, flops=None, demo=False,
                   stem=None, backend_fps=None, test_fps=None):
    work = root / name
    work.mkdir()
    stem = stem or name.removesuffix('_demo')  # a --demo run's work dir
    config = f'configs/{"segmentation" if name.startswith("fpn") else "detection"}/{stem}.py'
    if metrics is not None:
        speed = None if test_fps is None else dict(
            fps=test_fps, device='cpu', threads=2, batch_size=1, fused=True, images_timed=5000)
        (work / 'test_metrics.json').write_text(json.dumps(
            dict(config=config, demo=demo, metrics=metrics, speed=speed)))
    for backend, value in (backend_fps or {}).items():
        (work / f'benchmark_model_fused_{backend}_800x1344.json').write_text(json.dumps(dict(
            config=config, fps=value, fused=True, device='cpu', threads=2, shape=[800, 1344],
            backend=backend, pytorch_fps=1.0)))
    if fps is not None:
        (work / 'benchmark_model_fused_800x1344.json').write_text(json.dumps(dict(
            config=config, fps=fps, fused=True, device='cpu', threads=2, shape=[800, 1344])))
    if flops is not None:
        (work / 'complexity_800x1344.json').write_text(json.dumps(dict(
            config=config, shape=[800, 1344], total=dict(params=12_340_000, flops=flops))))
    return work


def test_model_zoo_report(tmp_path, capsys):
    _fake_work_dir(tmp_path, 'retinanet_evit_m4', {'coco/bbox_mAP': 0.327}, fps=2.5,
                   flops=56.7e9, backend_fps=dict(onnxruntime=5.0, openvino=7.25))
    _fake_work_dir(tmp_path, 'mask_rcnn_shvit_s4', None, fps=0.5)
    _fake_work_dir(tmp_path, 'fpn_shvit_s1_ade20k', {'mIoU': 38.5}, fps=9.5, test_fps=3.5)
    _fake_work_dir(tmp_path, 'fpn_evit_m0_ade20k', {'mIoU': 41.25, 'aAcc': 80.0}, fps=9.0,
                   demo=True)
    readme = tmp_path / 'README.md'
    readme.write_text(f'intro\n{MARK_START}\nold table\n{MARK_END}\noutro\n')
    table = model_zoo_main([str(tmp_path / '*_*'), '--out', str(tmp_path / 'zoo.md'),
                            '--readme', str(readme)])
    lines = {line.split(' | ')[0].lstrip('| '): line for line in table.splitlines()[2:]}
    retina = lines['EfficientViT-M4']
    assert (' RetinaNet | 1x | 12.3 | 56.7 | 2.50 (CPU x2, 800x1344, fused) | 7.25 (openvino f32, '
            'CPU x2, 800x1344, fused) | 32.7 | – |') in retina
    assert 'box AP 32.7' in retina  # paper column, labelled
    mask = lines['SHViT-S4']
    assert '| Mask R-CNN | 1x | – | – | 0.50 (CPU x2, 800x1344, fused) | – | – | – |' in mask
    assert 'box AP 39.0, mask AP 35.9' in mask
    seg = lines['EfficientViT-M0']
    assert '| Semantic FPN | 40k | – | – | 9.00 (CPU x2, 800x1344, fused) | – | – | – |' in seg
    # a real test run's FPS wins over a separate benchmark's
    assert '| 3.50 (CPU x2, test set, batch 1, fused) | – | – | 38.5 |' in lines['SHViT-S1']
    assert (tmp_path / 'zoo.md').read_text().strip() == table
    assert '4 rows written' in capsys.readouterr().out
    text = readme.read_text()
    assert 'old table' not in text and table in text and text.endswith('outro\n')


def test_model_zoo_row_without_anything(tmp_path):
    row = collect(str(_fake_work_dir(tmp_path, 'retinanet_evit_m1')))
    assert row['backbone'] == 'EfficientViT-M1' and 'fps' not in row and 'box_ap' not in row


def test_model_zoo_keeps_demo_metrics_out_of_accuracy_columns(tmp_path):
    _fake_work_dir(tmp_path, 'retinanet_evit_m4', None, fps=2.0, flops=1e9)
    _fake_work_dir(tmp_path, 'retinanet_evit_m4_demo', {'coco/bbox_mAP': 0.5}, demo=True)
    _fake_work_dir(tmp_path, 'retinanet_evit_m4_coco', {'coco/bbox_mAP': 0.331},
                   stem='retinanet_evit_m4')
    table = model_zoo_main([str(tmp_path / 'retinanet*'), '--out', str(tmp_path / 'z.md')])
    rows = table.splitlines()[2:]
    assert len(rows) == 1
    assert '| 2.00 (CPU x2, 800x1344, fused) | – | 33.1 | – |' in rows[0]
    assert '50.0' not in table


def test_speed_plot_from_benchmark_records(tmp_path, capsys):
    from evit_mm.analysis.speed_plot import main as speed_plot_main
    row = dict(params=8.8e6, flops_800x1344=6.2e9, flops_512x512=1.5e9,
               latency_ms=dict(pytorch=300.0, onnxruntime=120.0, openvino=90.0),
               throughput_img_per_s=dict(pytorch=8.0, onnxruntime=20.0, openvino=30.0))
    backbones = dict(env=dict(device_name='cpu', threads=2, torch='2.13'), batch_size=8,
                     backbones={'EfficientViT-M4': row, 'ResNet-50 (mmdet)': row})
    (tmp_path / 'b.json').write_text(json.dumps(backbones))
    deploy = dict(cases=dict(retinanet_m4=dict(
        config='configs/detection/retinanet_evit_m4.py',
        ms=dict(pytorch=4000.0, onnxruntime=1600.0, openvino=900.0))))
    (tmp_path / 'd.json').write_text(json.dumps(deploy))
    titles = speed_plot_main(['--backbones', str(tmp_path / 'b.json'), '--deploy',
                              str(tmp_path / 'd.json'), '--out', str(tmp_path / 's.png')])
    assert titles == ['Backbone latency at 800x1344', 'Backbone throughput at 512x512',
                      'RetinaNet: reported AP vs measured FPS']
    assert (tmp_path / 's.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # without the deploy figures: the two backbone panels only
    assert len(speed_plot_main(['--backbones', str(tmp_path / 'b.json'), '--deploy',
                                str(tmp_path / 'none.json'), '--out',
                                str(tmp_path / 't.png')])) == 2


def test_speed_plot_without_matplotlib_names_the_extra(tmp_path):
    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'matplotlib':\n"
               "            raise ImportError('blocked for the test')\n"
               "sys.meta_path.insert(0, Block())\n"
               "from evit_mm.analysis.speed_plot import main\n"
               "main(sys.argv[1:])\n")
    (tmp_path / 'b.json').write_text(json.dumps(dict(env={}, backbones={})))
    result = subprocess.run([sys.executable, '-c', blocker, '--backbones',
                             str(tmp_path / 'b.json'), '--out', str(tmp_path / 's.png')],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "[evit_mm speed_plot] The speed plot needs matplotlib, which is not installed: pip "
        "install 'evit_mm[tools]' (or see tools/install.sh).")
