#!/usr/bin/env bash
# Create (or complete) .venv-ref: the reference environment for the MTCNN golden outputs and the
# side-by-side benchmark. facenet-pytorch 2.6.0 pins torch 2.2 / numpy < 2 / Pillow 10.2, which
# are not installable beside Python 3.11 wheels of today, so it goes in with --no-deps on top of
# the torch/torchvision pair below, plus what it imports at module level (requests, Pillow).
# facewatch itself is installed editable into the same venv, so one interpreter runs both sides.
#
# pip reports "facenet-pytorch 2.6.0 requires torch<2.3.0 ..." conflicts: expected, harmless.
#
# Idempotent: rerun it any time. Usage: bash bench/setup_reference.sh [VENV_DIR]
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$REPO/.venv-ref}"
PY="${PYTHON:-python3}"

TORCH="torch==2.14.1"
TORCHVISION="torchvision==0.29.1"
FACENET="facenet-pytorch==2.6.0"

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/pip" install --quiet --disable-pip-version-check)

"${PIP[@]}" "$TORCH" "$TORCHVISION"
"${PIP[@]}" --no-deps "$FACENET"
"${PIP[@]}" pillow opencv-python-headless numpy onnxruntime openvino tqdm requests pyyaml
# The project itself (its dependencies are all above); editable, so engines/ is the work tree's.
"${PIP[@]}" --no-deps -e "$REPO"

"$VENV/bin/python" - <<'EOF'
import torch, torchvision
from torchvision.ops import batched_nms
from facenet_pytorch import MTCNN
from engines import load_engine  # noqa: F401  (facewatch importable)

mtcnn = MTCNN(device="cpu")  # loads the bundled pnet/rnet/onet state dicts
n = [sum(p.numel() for p in net.parameters()) for net in (mtcnn.pnet, mtcnn.rnet, mtcnn.onet)]
assert n == [6632, 100178, 389040], n
keep = batched_nms(torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10]]), torch.tensor([0.9, 0.8]),
                   torch.tensor([0, 0]), 0.5)
assert keep.tolist() == [0], keep
print(f"reference venv ok: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"MTCNN weights {n}")
EOF
