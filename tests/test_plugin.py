"""The package as a plugin: importing it changes nothing outside evit_mm, the resume fix is
opt-in, missing frameworks are named with their pip extra, and the imports run one way."""
import ast
import json
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_SNAPSHOT = """
import json, sys, torch, torch.serialization
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

def snapshot():
    return {
        'torch.load': id(torch.load),
        'torch.serialization.load': id(torch.serialization.load),
        'safe_globals': sorted(map(str, getattr(torch.serialization, 'get_safe_globals',
                                                list)())),  # torch >= 2.4
        'HistoryBuffer.__getstate__': id(HistoryBuffer.__dict__.get('__getstate__')),
        'HistoryBuffer.__setstate__': id(HistoryBuffer.__dict__.get('__setstate__')),
        'schemes': {prefix: f'{fn.__module__}.{fn.__qualname__}:{id(fn)}'
                    for prefix, fn in CheckpointLoader._schemes.items()},
    }
"""

_IMPORT_AND_BUILD = _SNAPSHOT + """
before = snapshot()
import importlib, pkgutil
import evit_mm
for info in pkgutil.walk_packages(evit_mm.__path__, 'evit_mm.'):
    if info.name != 'evit_mm.compat':  # the explicit opt-in, tested separately
        importlib.import_module(info.name)
from evit_mm.models import EfficientViT, SHViT
from evit_mm.models.pretrained import load_pretrained
arches = [('evit_mm.EfficientViT', a) for a in EfficientViT.arch_zoo]
arches += [('evit_mm.SHViT', a) for a in SHViT.arch_zoo]
for framework in ('mmdet', 'mmseg'):
    registry = importlib.import_module(framework + '.registry').MODELS
    for kind, arch in arches:
        backbone = registry.build(dict(type=kind, arch=arch))
        registry.build(dict(type='evit_mm.EfficientViTFPN', in_channels=backbone.out_channels,
                            out_channels=32, num_outs=5, num_extra_trans_convs=1))
model = EfficientViT('m0')
torch.save({'model': model.state_dict()}, sys.argv[1])
load_pretrained(EfficientViT('m0'), sys.argv[1])
print(json.dumps([before, snapshot()]))
"""


def _run(code: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True,
                          cwd=cwd)


def test_import_build_and_load_change_nothing_outside(tmp_path):
    result = _run(_IMPORT_AND_BUILD, str(tmp_path / 'm0.pth'))
    assert result.returncode == 0, result.stderr[-3000:]
    before, after = json.loads(result.stdout.strip().splitlines()[-1])
    assert after == before
    assert before['schemes']['']\
        .startswith('mmengine.runner.checkpoint.load_from_local')


@pytest.mark.parametrize('torch_version', ['2.13.0', '2.1.0'])
def test_compat_is_an_explicit_opt_in(torch_version):
    """Opt-in, and only where torch loads weights-only by default (>= 2.6: the version this
    process reports is set before the import; mmengine reads its own checkpoints below 2.6)."""
    code = _SNAPSHOT + f"""
torch.__version__ = '{torch_version}'
import evit_mm
plain = snapshot()
import evit_mm.compat
print(json.dumps([plain, snapshot()]))
"""
    result = _run(code)
    assert result.returncode == 0, result.stderr[-3000:]
    plain, enabled = json.loads(result.stdout.strip().splitlines()[-1])
    changed = {k for k in plain if plain[k] != enabled[k]}
    if torch_version == '2.1.0':  # saved without functions; mmengine's loaders kept
        assert changed == {'HistoryBuffer.__getstate__'}
        return
    assert changed == {'schemes', 'HistoryBuffer.__getstate__'}
    assert enabled['schemes'][''].startswith('evit_mm.compat.load_local_weights_only')
    for prefix in ('http://', 'https://'):
        assert enabled['schemes'][prefix].startswith('evit_mm.compat.load_http_weights_only')
    others = {k: v for k, v in plain['schemes'].items() if k not in ('', 'http://', 'https://')}
    assert others == {k: enabled['schemes'][k] for k in others}


def test_compat_downloads_on_rank_zero_first():
    code = """
import evit_mm.compat as compat
calls = []
compat.read_checkpoint = lambda *args: calls.append('read') or {'x': 1}
compat.dist.barrier = lambda: calls.append('barrier')
for rank in (0, 3):
    calls.clear()
    compat.get_dist_info = lambda: (rank, 8)
    assert compat.load_http_weights_only('https://example.org/w.pth') == {'x': 1}
    print(rank, calls)
"""
    result = _run(code)  # a process of its own: importing evit_mm.compat enables it
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split('\n')[:2] == ["0 ['read', 'barrier']", "3 ['barrier', 'read']"]


@pytest.mark.parametrize('framework,tool,config,extra', [
    ('mmdet', 'train.py', 'configs/detection/retinanet_evit_m4.py', 'det'),
    ('mmdet', 'test.py', 'configs/detection/mask_rcnn_shvit_s1.py', 'det'),
    ('mmseg', 'train.py', 'configs/segmentation/fpn_evit_m0_ade20k.py', 'seg'),
    ('mmseg', 'analysis/benchmark.py', 'configs/segmentation/fpn_evit_m0_ade20k.py', 'seg'),
])
@pytest.mark.parametrize('how', ['import_blocked', 'not_installed'])
def test_missing_framework_names_the_extra(tmp_path, framework, tool, config, extra, how):
    hide = {
        # the package cannot be imported
        'import_blocked': f'sys.modules[{framework!r}] = None',
        # mmengine finds no installed package for the config's "mmdet::" / "mmseg::" base
        'not_installed': ('import mmengine.config.config as c; '
                          'c.is_installed = lambda package: False'),
    }[how]
    args = [str(REPO / config)] + (['ckpt.pth'] if tool == 'test.py' else [])
    code = textwrap.dedent(f"""
        import runpy, sys
        {hide}
        sys.argv = ['{tool}'] + {args!r} + ['--demo'] * ('analysis' not in '{tool}')
        runpy.run_path({str(REPO / 'tools' / tool)!r}, run_name='__main__')
        """)
    result = _run(code, cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert f"needs {framework}, which is not installed: pip install 'evit_mm[{extra}]'" in last
    assert 'Traceback' not in result.stderr


def test_install_requires_only_the_core_stack():
    requires = metadata.requires('evit_mm') or []
    core = [r for r in requires if 'extra ==' not in r]
    names = sorted(r.split(';')[0].split('<')[0].split('>')[0].split('=')[0].strip()
                   for r in core)
    assert names == ['mmcv', 'mmengine', 'numpy', 'torch']
    assert not any('==' in r for r in core)
    for extra, package in [('det', 'mmdet'), ('seg', 'mmsegmentation'), ('pretrain', 'mmpretrain'),
                           ('deploy', 'mmdeploy'), ('deploy', 'openvino'),
                           ('deploy', 'onnxruntime'), ('deploy', 'protobuf'),
                           ('tests', 'pytest-xdist'), ('tests', 'matplotlib'), ('tests', 'mmdeploy'),
                           ('all', 'pytest-xdist'), ('all', 'matplotlib'), ('all', 'nncf')]:
        assert any(r.startswith(package) and f'extra == "{extra}"' in r for r in requires), extra
    extras = set(metadata.metadata('evit_mm').get_all('Provides-Extra'))
    assert {'det', 'seg', 'pretrain', 'tools', 'deploy', 'tests', 'all'} <= extras


def _imports(path: Path) -> list:
    """``(module, is_function_local)`` for every import of an evit_mm module in ``path``."""
    tree = ast.parse(path.read_text())
    package = '.'.join(path.relative_to(REPO).with_suffix('').parts[:-1])
    found = []
    top = set(id(n) for n in tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split('.')
            base = base[:len(base) - node.level + 1] if node.level else []
            name = '.'.join(base + ([node.module] if node.module else []))
            if name.startswith('evit_mm'):
                found.append((name, id(node) not in top))
    return found


def _import_graph() -> dict:
    """``{module: {evit_mm modules it imports}}``; fails on a function-local import."""
    modules = {'.'.join(p.relative_to(REPO).with_suffix('').parts).removesuffix('.__init__'): p
               for p in (REPO / 'evit_mm').rglob('*.py')}
    graph = {}
    for name, path in modules.items():
        edges = _imports(path)
        assert not [m for m, local in edges if local], f'function-local import in {name}'
        graph[name] = {m for m, _ in edges if m in modules and m != name}
    return graph


GROUND = ('evit_mm.errors', 'evit_mm.registry', 'evit_mm.checkpoint', 'evit_mm.config',
          'evit_mm.inference', 'evit_mm.timing')
ABOVE_MODELS = ('evit_mm.engine', 'evit_mm.cli', 'evit_mm.deployment', 'evit_mm.analysis')


def test_layers_point_one_way():
    graph = _import_graph()
    for name, imported in graph.items():
        if name in GROUND:
            assert not {m for m in imported if m.startswith(ABOVE_MODELS)}, name
        if name == 'evit_mm.engine':
            assert not {m for m in imported if m.startswith(ABOVE_MODELS[1:])}, name
        if name.startswith('evit_mm.deployment'):
            assert not {m for m in imported if m.startswith(('evit_mm.analysis', 'evit_mm.cli'))
                        }, name
    assert 'evit_mm.deployment.deploy' in graph['evit_mm.analysis.benchmark']  # analysis uses it
    assert 'evit_mm.errors' in graph['evit_mm.deployment.deploy']


def test_package_imports_have_no_cycle_and_none_is_hidden_in_a_function():
    graph = _import_graph()

    assert 'evit_mm.models.pretrained' in graph['evit_mm.models.base']  # the graph is real

    def visit(node, stack):
        assert node not in stack, f'import cycle: {" -> ".join(stack + [node])}'
        for child in graph[node]:
            visit(child, stack + [node])

    for name in graph:
        visit(name, [])
