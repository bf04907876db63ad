#!/usr/bin/env bash
# A second environment, as many mmdet 3.3 / mmseg 1.2 users have it: torch 2.1 + mmcv 2.1.0 (ops)
# + mmdet 3.3.0 + mmsegmentation 1.2.2, in its own venv; runs the plug-in, backbone, loading and
# config tests there. Not part of the README test command (the mmcv build takes ~18 min on 2 cores
# unless pip has it cached).
#
#   bash tools/check_envs.sh [VENV_DIR]     (default: /tmp/evit_mm_torch21)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-/tmp/evit_mm_torch21}
PY=${PYTHON:-python3}

"$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" "torch==2.1.2" "numpy<2" "setuptools>=77,<81" wheel ninja
printf 'torch==2.1.2\nnumpy<2\n' > "$VENV/constraints.txt"  # torch 2.1 is built against numpy 1.x
pip+=(-c "$VENV/constraints.txt")
"${pip[@]}" "mmengine==0.10.7" ftfy regex pytest pytest-xdist
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "${pip[@]}" --no-build-isolation "mmcv==2.1.0"
"${pip[@]}" "mmdet==3.3.0" "mmsegmentation==1.2.2"
"${pip[@]}" --no-build-isolation -e "$ROOT"
cd "$ROOT"
"$VENV/bin/python" -c "import torch, mmcv, mmcv.ops, mmdet, mmseg; \
print('[check_envs] torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmdet', mmdet.__version__, \
'mmseg', mmseg.__version__)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_backbones.py tests/test_neck.py \
  tests/test_parity_and_loading.py tests/test_configs.py \
  tests/test_plugin.py::test_import_build_and_load_change_nothing_outside \
  tests/test_plugin.py::test_compat_is_an_explicit_opt_in
