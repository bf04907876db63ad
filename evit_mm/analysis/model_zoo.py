"""Collect metrics, complexity and benchmark records from work dirs into a model-zoo table.

Reads, in each work dir, ``test_metrics.json`` (``tools/test.py``) or else
``val_metrics.json`` (``tools/train.py``), ``complexity_*.json``
(``tools/analysis/get_flops.py``) and ``benchmark_model*.json``
(``tools/analysis/benchmark.py``, PyTorch and ``--backend`` runs). Nothing is filled
in from elsewhere: a value that was not measured is "–". The accuracy columns hold
only results on the real benchmark (COCO / ADE20K); metrics of ``--demo`` runs
(generated data) are left out of them. The PyTorch FPS comes from the test run on
that benchmark when there is one (``tools/test.py`` times it), else from
``benchmark.py``. Paper results appear only in their own, labelled column.
"""
import argparse
import glob
import json
import os.path as osp
import re
from typing import Dict, List, Optional

MISSING = '–'
MARK_START, MARK_END = '<!-- model-zoo:start -->', '<!-- model-zoo:end -->'
# Reported in the papers / official repos (COCO val2017), for the labelled column only.
PAPER_RESULTS = {
    'retinanet_evit_m4': 'box AP 32.7',
    'mask_rcnn_evit_m4': 'mask AP 31.0',
    'retinanet_shvit_s4': 'box AP 38.8',
    'mask_rcnn_shvit_s4': 'box AP 39.0, mask AP 35.9',
}


def reported_box_ap(name: str) -> Optional[float]:
    """The papers' COCO box AP for a config name such as ``retinanet_evit_m4``, if any."""
    match = re.search(r'box AP ([\d.]+)', PAPER_RESULTS.get(name, ''))
    return float(match.group(1)) if match else None


METHODS = {'retinanet': 'RetinaNet', 'mask_rcnn': 'Mask R-CNN', 'fpn': 'Semantic FPN'}


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def describe_config(name: str) -> dict:
    """Backbone, method and schedule from a config name such as ``retinanet_evit_m4``."""
    match = re.match(r'(retinanet|mask_rcnn|fpn)_(evit|shvit)_([ms]\d)', name)
    if not match:
        return dict(backbone=name, method=MISSING, schedule=MISSING)
    method, family, arch = match.groups()
    backbone = ('EfficientViT-' if family == 'evit' else 'SHViT-') + arch.upper()
    return dict(backbone=backbone, method=METHODS[method],
                schedule='40k' if method == 'fpn' else '1x')


def collect(work_dir: str) -> dict:
    """One table row from one work dir (values absent when not measured)."""
    row: Dict[str, object] = dict(work_dir=work_dir)
    tested = _read_json(osp.join(work_dir, 'test_metrics.json'))
    metrics = tested or _read_json(osp.join(work_dir, 'val_metrics.json'))
    benchmarks = [r for r in map(_read_json, sorted(glob.glob(osp.join(
        work_dir, 'benchmark_model*.json')))) if r]
    flops = [r for r in map(_read_json, sorted(glob.glob(osp.join(
        work_dir, 'complexity_*.json')))) if r]
    config = next((r.get('config') for r in [metrics, *benchmarks, *flops] if r and
                   r.get('config')), None)
    row['config'] = config or osp.basename(osp.normpath(work_dir))
    row.update(describe_config(osp.splitext(osp.basename(row['config']))[0]))
    backend_runs = [r for r in benchmarks if r.get('backend', 'pytorch') != 'pytorch']
    benchmarks = [r for r in benchmarks if r.get('backend', 'pytorch') == 'pytorch']
    if metrics and not metrics.get('demo'):
        speed = (tested or {}).get('speed') or {}  # a training run's validation is not fused
        if speed.get('fps'):
            row['fps'] = speed['fps']
            row['fps_note'] = '{} x{}, test set, batch {}{}'.format(
                'CPU' if speed['device'] == 'cpu' else speed['device'], speed['threads'],
                speed['batch_size'], ', fused' if speed.get('fused') else '')
        values = metrics.get('metrics', {})
        for key, name in (('coco/bbox_mAP', 'box_ap'), ('coco/segm_mAP', 'mask_ap')):
            if key in values:
                row[name] = 100.0 * values[key]
        if 'mIoU' in values:
            row['miou'] = float(values['mIoU'])
    if flops:
        record = flops[0]
        row['params'] = record['total']['params']
        row['flops'] = record['total']['flops']
        row['flops_shape'] = record.get('shape')
    if benchmarks and 'fps' not in row:
        best = sorted(benchmarks, key=lambda r: (not r.get('fused'), -r['fps']))[0]
        row['fps'] = best['fps']
        row['fps_note'] = _speed_note(best)
    if backend_runs:
        best = max(backend_runs, key=lambda r: r['fps'])
        row['backend_fps'] = best['fps']
        row['backend_note'] = f"{best['backend']} {best.get('precision', 'f32')}, {_speed_note(best)}"
    return row


def _speed_note(record: dict) -> str:
    return '{}{}, {}x{}{}'.format(
        'CPU' if record['device'] == 'cpu' else record.get('device_name', record['device']),
        f" x{record['threads']}" if record['device'] == 'cpu' else '', *record['shape'],
        ', fused' if record.get('fused') else '')


def merge_rows(rows: List[dict]) -> List[dict]:
    """One row per config, from all of its work dirs (e.g. a test run's and a benchmark's)."""
    merged: Dict[str, dict] = {}
    for row in rows:
        key = osp.splitext(osp.basename(str(row['config'])))[0]
        target = merged.setdefault(key, {})
        for field, value in row.items():
            target.setdefault(field, value)
    return list(merged.values())


def _fmt(value, pattern: str) -> str:
    return MISSING if value is None else pattern.format(value)


def markdown_table(rows: List[dict]) -> str:
    lines = ['| Backbone | Detector/Method | Lr schd | Params (M) | FLOPs (G MACs) '
             '| FPS PyTorch (device) | FPS best CPU backend (end to end) '
             '| box AP | mask AP or mIoU | Config | Paper (reported) |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for row in rows:
        second = row.get('mask_ap') if row.get('method') != 'Semantic FPN' else row.get('miou')
        fps = (f"{row['fps']:.2f} ({row['fps_note']})" if row.get('fps') is not None
               else MISSING)
        backend = (f"{row['backend_fps']:.2f} ({row['backend_note']})"
                   if row.get('backend_fps') is not None else MISSING)
        lines.append('| {} | {} | {} | {} | {} | {} | {} | {} | {} | [config]({}) | {} |'.format(
            row['backbone'], row['method'], row['schedule'],
            _fmt(row.get('params') and row['params'] / 1e6, '{:.1f}'),
            _fmt(row.get('flops') and row['flops'] / 1e9, '{:.1f}'), fps, backend,
            _fmt(row.get('box_ap'), '{:.1f}'), _fmt(second, '{:.1f}'),
            row['config'], PAPER_RESULTS.get(
                osp.splitext(osp.basename(row['config']))[0], MISSING)))
    return '\n'.join(lines)


def update_readme(readme: str, table: str, start: str = MARK_START, end: str = MARK_END) -> None:
    """Replace the text between the ``start`` and ``end`` markers (the model zoo's by default)
    of ``readme`` by ``table``."""
    with open(readme) as f:
        text = f.read()
    if start not in text or end not in text:
        raise ValueError(f'{readme} has no {start} ... {end} section to replace.')
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(readme, 'w') as f:
        f.write(f'{head}{start}\n{table}\n{end}{tail}')


def main(argv: Optional[List[str]] = None) -> str:
    parser = argparse.ArgumentParser(description='Model-zoo table from work dirs')
    parser.add_argument('work_dirs', nargs='+', help='work dirs (globs allowed)')
    parser.add_argument('--out', default='model_zoo.md', help='Markdown table file')
    parser.add_argument('--readme', help='also replace the model-zoo section of this README')
    args = parser.parse_args(argv)
    dirs = sorted({d for pattern in args.work_dirs for d in (glob.glob(pattern) or [pattern])
                   if osp.isdir(d)})
    if not dirs:
        parser.error(f'no work dir found among {args.work_dirs}')
    rows = merge_rows([collect(d) for d in dirs])
    rows.sort(key=lambda r: (r['method'], r['backbone']))
    table = markdown_table(rows)
    with open(args.out, 'w') as f:
        f.write(table + '\n')
    if args.readme:
        update_readme(args.readme, table)
    print(table)
    print(f'\n{len(rows)} rows written to {args.out}')
    return table
