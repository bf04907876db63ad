"""Run each ``--demo`` with several seeds and print the table the README quotes.

    python benchmarks/demo_seeds.py [--seeds 0 1 2] [--only retinanet] [--rerun]
        [--work-root work_dirs/demo_seeds]

Each run is ``python tools/train.py CONFIG --demo --seed S`` in its own work dir. A (config, seed)
pair already recorded in benchmarks/results/demo_seeds.json or in its work dir is not repeated
unless ``--rerun`` is given. Prints, per demo, every seed's metrics and wall time,
the mean and range, and whether every seed reached the floor; writes (merges into)
benchmarks/results/demo_seeds.json, with the CPU of each run (float results, hence a seed's
metric, differ between CPUs).
"""
import argparse
import json
import os.path as osp
import statistics
import subprocess
import sys
import time

from evit_mm.timing import cpu_flags, cpu_name

HERE = osp.dirname(osp.abspath(__file__))
REPO = osp.dirname(HERE)
DEMOS = [  # config, metrics, floor every seed must reach
    ('configs/detection/retinanet_evit_m4.py', ['coco/bbox_mAP'], 0.40),
    ('configs/detection/retinanet_shvit_s4.py', ['coco/bbox_mAP'], 0.40),
    ('configs/detection/mask_rcnn_evit_m4.py', ['coco/bbox_mAP', 'coco/segm_mAP'], 0.50),
    ('configs/segmentation/fpn_evit_m4_ade20k.py', ['mIoU'], 70.0),
]


OUT = osp.join(HERE, 'results', 'demo_seeds.json')


def recorded_runs() -> dict:
    """(config, seed) -> run record, rebuilt from the rows of the results file."""
    if not osp.exists(OUT):
        return {}
    with open(OUT) as f:
        rows = json.load(f)
    metrics = {config: names for config, names, _ in DEMOS}
    return {(row['config'], seed): dict(
        config=row['config'], seed=seed, minutes=row['minutes'][i],
        metrics={m: row[m]['values'][i] for m in metrics[row['config']]},
        cpu=row.get('cpu', ['not recorded'] * len(row['seeds']))[i])
        for row in rows for i, seed in enumerate(row['seeds'])}


def run(config: str, seed: int, work_root: str) -> dict:
    name = osp.splitext(osp.basename(config))[0]
    work_dir = osp.join(work_root, f'{name}_seed{seed}')
    record_file = osp.join(work_dir, 'demo_seed_run.json')
    if osp.exists(record_file):
        with open(record_file) as f:
            return json.load(f)
    start = time.time()
    subprocess.run([sys.executable, osp.join(REPO, 'tools/train.py'), osp.join(REPO, config),
                    '--demo', '--seed', str(seed), '--work-dir', work_dir], check=True,
                   stdout=subprocess.DEVNULL)
    with open(osp.join(work_dir, 'val_metrics.json')) as f:
        metrics = json.load(f)['metrics']
    record = dict(config=config, seed=seed, minutes=(time.time() - start) / 60, metrics=metrics,
                  cpu=f"{cpu_name()} ({', '.join(cpu_flags()) or 'no listed flags'})")
    with open(record_file, 'w') as f:
        json.dump(record, f, indent=2)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    parser.add_argument('--only', help='substring filter on config names')
    parser.add_argument('--work-root', default=osp.join('work_dirs', 'demo_seeds'))
    parser.add_argument('--rerun', action='store_true', help='ignore runs already recorded')
    args = parser.parse_args()
    known = {} if args.rerun else recorded_runs()
    summary = []
    for config, metrics, floor in DEMOS:
        if args.only and args.only not in config:
            continue
        runs = [known.get((config, seed)) or run(config, seed, args.work_root)
                for seed in args.seeds]
        for record in runs:
            shown = ', '.join(f'{m}={record["metrics"][m]:.3f}' for m in metrics)
            print(f'{config} seed {record["seed"]}: {shown} ({record["minutes"]:.1f} min)')
        # float results differ between CPUs' kernels: a seed reproduces on the same kind of CPU
        row = dict(config=config, seeds=args.seeds, floor=floor,
                   minutes=[r['minutes'] for r in runs],
                   cpu=[r.get('cpu', 'not recorded') for r in runs])
        for metric in metrics:
            values = [r['metrics'][metric] for r in runs]
            row[metric] = dict(mean=statistics.mean(values), min=min(values), max=max(values),
                               values=values)
        row['every_seed_reaches_floor'] = all(
            r['metrics'][m] >= floor for r in runs for m in metrics)
        summary.append(row)
        print('  ' + '; '.join(f'{m}: mean {row[m]["mean"]:.3f}, range {row[m]["min"]:.3f}-'
                               f'{row[m]["max"]:.3f}' for m in metrics)
              + f'; floor {floor}: {"MET" if row["every_seed_reaches_floor"] else "MISSED"}')
    previous = []
    if osp.exists(OUT):  # keep the rows of demos not run this time (--only)
        with open(OUT) as f:
            done = {row['config'] for row in summary}
            previous = [r for r in json.load(f) if r['config'] not in done]
    order = [config for config, _, _ in DEMOS]
    with open(OUT, 'w') as f:
        json.dump(sorted(previous + summary, key=lambda r: order.index(r['config'])), f, indent=2)


if __name__ == '__main__':
    main()
