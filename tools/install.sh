#!/usr/bin/env bash
# Install the whole evit_mm stack on a CPU machine with Python 3.11.
#
#   bash tools/install.sh [WHEEL_DIR]
#
# WHEEL_DIR (or $EVIT_MM_WHEELS) is an optional folder of prebuilt wheels, e.g. an
# mmcv 2.1.0 wheel, used as a cache. Without it mmcv is compiled from source (~18 min
# on 2 cores; pip caches the result). Re-running is idempotent and takes about a minute.
set -euo pipefail

PY=${PYTHON:-python}
WHEELS=${1:-${EVIT_MM_WHEELS:-}}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIP=("$PY" -m pip install --disable-pip-version-check)
if [ -n "$WHEELS" ]; then
  [ -d "$WHEELS" ] || { echo "install.sh: wheel dir '$WHEELS' does not exist" >&2; exit 2; }
  PIP+=(--find-links "$(cd "$WHEELS" && pwd)")
fi

say() { printf '\n[evit_mm install] %s\n' "$*"; }
has() { "$PY" - "$@" <<'PYEOF' >/dev/null 2>&1
import sys
from importlib import metadata
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    have = metadata.version(name)
    if want and have.split("+")[0] != want:
        sys.exit(1)
PYEOF
}

# 1. torch: keep an existing compatible one (2.0 to 2.13: mmcv 2.1.0 needs C++17).
if "$PY" - <<'PYEOF' >/dev/null 2>&1
import torch, sys
major, minor = (int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 0) and (major, minor) < (2, 14) else 1)
PYEOF
then
  say "torch $("$PY" -c 'import torch; print(torch.__version__)') present, kept"
else
  say "installing torch 2.13.0"
  "${PIP[@]}" "torch==2.13.0"
fi
# every later step keeps this torch: mmcv's compiled ops are built against it, and a package
# that asked for another torch would break them (pip then stops instead of upgrading it)
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
"$PY" -c 'import torch; print("torch==" + torch.__version__)' > "$CONSTRAINTS"
PIP+=(-c "$CONSTRAINTS")

# 2. build tools mmcv's source build needs, and the pure-python stack.
"$PY" - <<'PYEOF' >/dev/null 2>&1 || { say "installing build tools"; "${PIP[@]}" "setuptools>=77,<81" wheel ninja; }
from importlib import metadata
import wheel, ninja  # noqa: F401
v = tuple(int(x) for x in metadata.version("setuptools").split(".")[:1])
assert 77 <= v[0] < 81
PYEOF
has "mmengine==0.10.7" "ftfy" "regex" || { say "installing mmengine, ftfy, regex"; "${PIP[@]}" "mmengine==0.10.7" ftfy regex; }

# 3. mmcv 2.1.0 with compiled ops (not mmcv-lite).
if ! "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" >/dev/null 2>&1; then
  say "installing mmcv 2.1.0 with ops (source build takes ~18 min on 2 cores unless a wheel is cached)"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} "${PIP[@]}" --no-build-isolation "mmcv==2.1.0"
fi

# 4. the OpenMMLab frameworks.
has "mmdet==3.3.0" "mmsegmentation==1.2.2" "mmpretrain==1.2.0" || {
  say "installing mmdet, mmsegmentation, mmpretrain"
  "${PIP[@]}" "mmdet==3.3.0" "mmsegmentation==1.2.2" "mmpretrain==1.2.0"
}

# 4b. the deployment stack (mmdeploy 1.3.1 pins protobuf <= 3.20.2, so onnx 1.17; NNCF for int8),
#     verified together; ml_dtypes for onnxruntime.quantization.
has "mmdeploy==1.3.1" "onnx==1.17.0" "protobuf==3.20.2" "onnxruntime==1.26.0" "openvino==2026.4.1" \
    "nncf==3.4.0" "ml_dtypes==0.6.0" || {
  say "installing mmdeploy, onnx, onnxruntime, openvino, nncf, ml_dtypes"
  "${PIP[@]}" "mmdeploy==1.3.1" "onnx==1.17.0" "protobuf==3.20.2" "onnxruntime==1.26.0" \
    "openvino==2026.4.1" "nncf==3.4.0" "ml_dtypes==0.6.0"
}

# 5. this package (editable, with all extras), from this checkout; always refreshed, so its
#    metadata follows setup.py (a few seconds when everything it needs is present).
say "installing evit_mm (editable) from $ROOT"
"${PIP[@]}" --no-build-isolation -e "$ROOT[all]"

# 6. check (outside the checkout, so the installed package is what gets imported).
(cd / && "$PY" -) <<'PYEOF'
import sys
problems = []
def check(what, fn, hint):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        problems.append(f"  - {what}: {type(exc).__name__}: {exc}\n    fix: {hint}")
import importlib
check("torch", lambda: importlib.import_module("torch"), "pip install torch==2.13.0")
check("mmcv.ops (compiled ops)", lambda: importlib.import_module("mmcv.ops"),
      "pip uninstall -y mmcv mmcv-lite && MMCV_WITH_OPS=1 pip install --no-build-isolation mmcv==2.1.0")
for mod, pkg in [("mmdet", "mmdet==3.3.0"), ("mmseg", "mmsegmentation==1.2.2"),
                 ("mmpretrain", "mmpretrain==1.2.0"), ("mmdeploy", "mmdeploy==1.3.1"),
                 ("onnxruntime", "onnxruntime==1.26.0"), ("openvino", "openvino==2026.4.1"),
                 ("nncf", "nncf==3.4.0"), ("onnxruntime.quantization", "ml_dtypes==0.6.0"),
                 ("evit_mm", "pip install -e .")]:
    check(mod, lambda m=mod: importlib.import_module(m), f"pip install {pkg}")
if problems:
    print("[evit_mm install] FAILED:\n" + "\n".join(problems), file=sys.stderr)
    sys.exit(1)
import torch, mmcv, mmdet, mmseg, mmpretrain, mmengine, mmdeploy, onnxruntime, openvino, nncf
print(f"[evit_mm install] OK: torch {torch.__version__}, mmengine {mmengine.__version__}, "
      f"mmcv {mmcv.__version__} (ops), mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, "
      f"mmpretrain {mmpretrain.__version__}, mmdeploy {mmdeploy.__version__}, "
      f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}, "
      f"nncf {nncf.__version__}")
PYEOF
