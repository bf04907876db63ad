#!/usr/bin/env bash
# Deploy a demo-trained Mask R-CNN-M4 with every instance-seg config and evaluate it (docs/deployment.md,
# "Mask R-CNN, checked"):
#   bash benchmarks/mask_rcnn_deploy_check.sh [SEED] [WORK_ROOT]
# 1. python tools/train.py configs/detection/mask_rcnn_evit_m4.py --demo --seed SEED (reused if done;
#    its demo data is data/evit_mm_demo/coco_160);
# 2. tools/deployment/deploy.py with each configs/deploy/instance-seg_*.py on two demo val images
#    (float32: parity; int8/bf16: the bbox and segm metric check; bf16 only on a CPU with bf16 units);
# 3. tools/deployment/test.py --checkpoint on the val split for every config, and --batch-size 2 for the
#    dynamic float32 ones.
# Each step's summary is printed; the records stay in WORK_ROOT/<config>/. CONFIGS="a.py b.py" runs
# only those deploy configs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seed=${1:-3}
root=${2:-work_dirs/mask_rcnn_deploy_check}
model=$root/train
cfg=$model/mask_rcnn_evit_m4.py
if [ ! -f "$model/last_checkpoint" ]; then
  python tools/train.py configs/detection/mask_rcnn_evit_m4.py --demo --seed "$seed" --work-dir "$model" | tail -n 3
fi
ckpt=$(cat "$model/last_checkpoint")
images=($(ls data/evit_mm_demo/coco_160/val2017/*.jpg | head -n 2))
bf16=$(grep -qw avx512_bf16 /proc/cpuinfo && echo yes || echo no)
for deploy in ${CONFIGS:-configs/deploy/instance-seg_*.py}; do
  name=$(basename "$deploy" .py)
  if [[ $name == *bf16* && $bf16 == no ]]; then
    echo "[check] $name: skipped, this CPU has no bf16 units"
    continue
  fi
  out=$root/$name
  # a failed check (non-zero exit, record kept) is reported and the next config runs
  python tools/deployment/deploy.py "$deploy" "$cfg" "$ckpt" "${images[0]}" --test-img "${images[@]:1}" \
    --work-dir "$out" --iters 3 || { echo "[check] $name: deploy.py exited non-zero"; continue; }
  files=$out/end2end.onnx
  [[ $name == *openvino* ]] && files=$out/end2end.xml
  [[ $name == *int8* ]] && files=$out/end2end_int8.xml
  python tools/deployment/test.py "$deploy" "$cfg" --model "$files" --checkpoint "$ckpt" \
    --work-dir "$out/test" | grep '^\[evit_mm test\]\|note' || true
  if [[ $name == *_dynamic && $name != *int8* && $name != *bf16* ]]; then
    python tools/deployment/test.py "$deploy" "$cfg" --model "$files" --batch-size 2 \
      --work-dir "$out/test_batch2" | grep '^\[evit_mm test\]' || true
  fi
done
