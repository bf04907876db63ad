"""The speed picture: what can be compared across backbones, on this CPU.

Three panels from the benchmark scripts' JSON (benchmarks/results/):

1. backbone latency at 800x1344 (batch 1) against FLOPs, PyTorch and the best CPU backend,
   all ten variants plus mmdet's ResNet-18/50 (``backbone_speed.json``);
2. backbone throughput at 512x512 (images/s, the papers' convention) against parameters
   (``backbone_speed.json``);
3. RetinaNet box AP on COCO **as reported by the papers** against the whole-model FPS we
   measured at 800x1344 (``deploy_speed.json``), marked "reported".

Accuracy on the generated demo data is never plotted: it says nothing about COCO.
"""
import argparse
import json
import os.path as osp
from typing import List, Optional

from ..deployment.deploy_config import BACKENDS
from ..errors import MissingExtraError, exits_on_user_errors
from .model_zoo import describe_config, reported_box_ap
from .records import config_name


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or the extra that installs it."""
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingExtraError("The speed plot needs matplotlib, which is not installed: pip "
                                "install 'evit_mm[tools]' (or see tools/install.sh).") from exc
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _best_backend(values: dict, higher_is_better: bool) -> tuple:
    """The faster float32 backend: ``values`` keyed by backend, or (deploy_speed.json) by
    ``'<backend> f32'``."""
    f32 = {b: values[b] if b in values else values[f'{b} f32'] for b in BACKENDS}
    name = (max if higher_is_better else min)(BACKENDS, key=f32.get)
    return name, f32[name]


def plot(backbone_json: str, deploy_json: Optional[str], out_file: str) -> List[str]:
    """Draw the panels available from the given files; return their titles."""
    plt = _pyplot()
    with open(backbone_json) as f:
        speed = json.load(f)
    deploy = None
    if deploy_json and osp.exists(deploy_json):
        with open(deploy_json) as f:
            deploy = json.load(f)
    panels = 3 if deploy else 2
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 5))
    rows = speed['backbones']
    titles = []

    def scatter(ax, x_of, y_of, higher_is_better: bool) -> None:
        for name, row in rows.items():
            baseline = name.startswith('ResNet')
            x = x_of(row)
            torch_y = y_of(row)['pytorch']
            backend, best_y = _best_backend(y_of(row), higher_is_better)
            color = 'gray' if baseline else ('tab:blue' if 'EfficientViT' in name
                                             else 'tab:orange')
            ax.scatter([x], [torch_y], marker='o', color=color, alpha=0.8)
            ax.scatter([x], [best_y], marker='^', color=color)
            ax.plot([x, x], [torch_y, best_y], color=color, lw=0.6, alpha=0.5)
            ax.annotate(name.replace(' (mmdet)', '').replace('EfficientViT-', ''), (x, best_y),
                        fontsize=7, xytext=(3, 3), textcoords='offset points')
        ax.scatter([], [], marker='o', color='k', label='PyTorch (deploy structure)')
        ax.scatter([], [], marker='^', color='k', label='best CPU backend (ORT / OpenVINO)')
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)

    ax = axes[0]
    scatter(ax, lambda r: r['flops_800x1344'] / 1e9, lambda r: r['latency_ms'], False)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('backbone FLOPs at 800x1344 (G multiply-adds, log)')
    ax.set_ylabel('latency, batch 1 (ms, log; lower is better)')
    titles.append('Backbone latency at 800x1344')
    ax.set_title(titles[-1])

    ax = axes[1]
    scatter(ax, lambda r: r['params'] / 1e6, lambda r: r['throughput_img_per_s'], True)
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.set_xlabel('backbone parameters (M, log)')
    ax.set_ylabel(f"throughput at 512x512, batch {speed['batch_size']} (images/s, log)")
    titles.append('Backbone throughput at 512x512')
    ax.set_title(titles[-1])

    if deploy:
        ax = axes[2]
        for case in deploy['cases'].values():
            name = config_name(case['config'])
            ap = reported_box_ap(name)  # the model zoo's paper column
            if ap is None or not name.startswith('retinanet'):
                continue
            label = describe_config(name)['backbone']
            ms = case['ms']
            backend, best = _best_backend(ms, higher_is_better=False)
            ax.scatter([1000 / ms['pytorch']], [ap], marker='o', color='tab:green')
            ax.scatter([1000 / best], [ap], marker='^', color='tab:green')
            ax.annotate(f'{label} ({backend})', (1000 / best, ap), fontsize=7, xytext=(3, 3),
                        textcoords='offset points')
        ax.scatter([], [], marker='o', color='k', label='PyTorch fused')
        ax.scatter([], [], marker='^', color='k', label='best CPU backend, end to end')
        ax.legend(fontsize=8)
        ax.set_xlabel('RetinaNet FPS at 800x1344, measured here (post-processing included)')
        ax.set_ylabel('COCO box AP, REPORTED by the papers (not measured here)')
        titles.append('RetinaNet: reported AP vs measured FPS')
        ax.set_title(titles[-1])
        ax.grid(alpha=0.3)
    env = speed['env']
    fig.suptitle(f"{env['device_name']}, {env['threads']} threads, torch {env['torch']}, "
                 'float32', fontsize=9)
    fig.tight_layout()
    fig.savefig(out_file, dpi=110)
    plt.close(fig)
    return titles


@exits_on_user_errors('speed_plot')
def main(argv: Optional[List[str]] = None) -> List[str]:
    parser = argparse.ArgumentParser(description='Backbone speed plot from the benchmark JSON')
    parser.add_argument('--backbones', default='benchmarks/results/backbone_speed.json')
    parser.add_argument('--deploy', default='benchmarks/results/deploy_speed.json')
    parser.add_argument('--out', default='benchmarks/results/speed.png')
    args = parser.parse_args(argv)
    if not osp.exists(args.backbones):
        parser.error(f'{args.backbones} not found: run python benchmarks/backbone_speed.py')
    titles = plot(args.backbones, args.deploy, args.out)
    print(f"{len(titles)} panels ({'; '.join(titles)}) drawn to {args.out}")
    return titles
