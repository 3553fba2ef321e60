#!/usr/bin/env bash
# Before a GPU lease, here on the CPU: the device phase of training/gpu_job.sh, the unit tests
# of the torch code (training/, the torch backend, the device pipeline) and bench/gpu_check.sh's
# two benchmarks (--quick, on the CPU), with the GPU machine's PyTorch and torchvision rather
# than this machine's. A lease is one try of about 15 minutes; a difference
# between PyTorch versions should show up here, not there. (Once it did: PyTorch 2.11's
# torch.export baked the example's parity into P-Net's program; see CeilMaxPool2x2.)
#
#   training/device_precheck.sh            # ~4.5 min once the venv exists (~1 min and 5.3 GB to make)
#                                          # on an idle machine; 16.5 min with others' load
#
# Settings: TORCH and TORCHVISION (default 2.11.0 and 0.26.0, as
# /work/.library/device/KINDS.md lists the device image; the device's Python is 3.12, this venv
# uses this machine's), VENV (default .venv-device), TRAIN_S (default 200, the dry run's
# training time: its two tiny epochs took 7 min under a load of 20 on 2 cores; give 900 then).
# Needs .gpu_data/parts (`training/gpu_job.sh prepare`) for the dry run; without them only the
# tests run. The dry run's processes find none of the packages that the device image lacks
# (DEVICE_LACKS), as there: what the device call carries (gpu_check.sh's wheels) must do.
# A fresh clone works too: the venv finds the `train` subcommand through this checkout's
# facewatch.egg-info, which the script makes if it is missing (nothing is installed in VENV).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH=${TORCH:-2.11.0}
TORCHVISION=${TORCHVISION:-0.26.0}
VENV=${VENV:-.venv-device}
TRAIN_S=${TRAIN_S:-200}
# not on the device image (/work/.library/device/KINDS.md's package list, 2026-11-17), though
# in VENV for the tests: openvino, pydantic, paho-mqtt, jsonschema, facenet-pytorch, TensorRT
DEVICE_LACKS=${DEVICE_LACKS:-"openvino pydantic pydantic_core paho jsonschema facenet_pytorch tensorrt"}
have=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null || true)
if [ "$have" != "$TORCH" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "torch==$TORCH" "torchvision==$TORCHVISION" onnx onnxruntime \
    onnxscript opencv-python-headless pyyaml tqdm tensorboard pytest pydantic jsonschema \
    "paho-mqtt>=2.1,<3" prometheus-client openvino requests
  "$VENV/bin/pip" install -q --no-deps facenet-pytorch==2.6.0
fi
"$VENV/bin/python" -c "import torch; print('torch', torch.__version__)"

# `facewatch train` joins the command through its entry point (pyproject.toml), which
# importlib.metadata finds in facewatch.egg-info beside the code; a fresh clone has none, and
# 5 tests would fail with "invalid choice: 'train'". pip's dry run of an editable install
# writes it here and installs nothing, so a VENV of another checkout stays as it is.
has_train() {
  "$VENV/bin/python" -c "import sys; from importlib.metadata import entry_points
sys.exit(not entry_points(group='facewatch.commands', name='train'))"
}
if ! has_train; then
  "$VENV/bin/python" -m pip install -q --dry-run --no-deps -e . > /dev/null
  has_train || { echo "no facewatch.egg-info here: pip install --dry-run --no-deps -e . made none" >&2; exit 1; }
  echo "made facewatch.egg-info (the train subcommand's entry point)"
fi

# (not test_systemd_unit.py: systemd's verify needs the `facewatch` command, not in this venv)
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/unit/test_torch_backend.py \
  tests/unit/test_export_mtcnn.py tests/unit/test_facenet.py tests/unit/test_training_*.py \
  tests/unit/test_torch_boxes.py tests/integration/test_training_e2e.py \
  tests/integration/test_distill_template.py tests/gpu --disable-warnings 2>&1 | grep -v DEBUG | tail -4

bench_out=$(mktemp -d)
"$VENV/bin/python" bench/bench_gpu.py --out "$bench_out" --quick --device cpu > "$bench_out/log" 2>&1 &&
  echo "bench_gpu.py --quick: ok" || { tail -20 "$bench_out/log"; echo "bench_gpu.py failed" >&2; exit 1; }
"$VENV/bin/python" bench/bench_streams.py --quick --backend torch > "$bench_out/log" 2>&1 &&
  echo "bench_streams.py --quick --backend torch: ok" ||
  { tail -20 "$bench_out/log"; echo "bench_streams.py failed" >&2; exit 1; }
rm -rf "$bench_out"

if [ -f .gpu_data/parts/parts.txt ]; then
  recipe=$(mktemp --suffix .yaml)
  out=$(mktemp -d)
  blocked=$(mktemp -d)
  trap 'rm -rf "$recipe" "$out" "$blocked" /tmp/facewatch-train /tmp/facewatch-train-bench' EXIT
  for module in $DEVICE_LACKS; do  # on PYTHONPATH, ahead of VENV's packages
    mkdir -p "$blocked/$module"
    echo "raise ModuleNotFoundError(\"No module named '$module' (not on the device image)\", name='$module')" \
      > "$blocked/$module/__init__.py"
  done
  # the GPU recipe on the CPU, tiny: 2 epochs of 3 batches of 30
  sed -e 's/^gpu: .*/gpu: cpu/' -e 's/^amp: .*/amp: false/' -e 's/^workers: .*/workers: 2/' \
    -e 's/^epoch_size: .*/epoch_size: 3/' -e 's/^batch_size: .*/batch_size: 30/' \
    -e 's/^max_nrof_epochs: .*/max_nrof_epochs: 2/' configs/training/facenet_default_gpu.yaml > "$recipe"
  rm -rf /tmp/facewatch-train
  PYTHONPATH=$blocked OUT=$out PY=$VENV/bin/python RECIPE=$recipe TRAIN_S=$TRAIN_S CALL_S=$(( TRAIN_S + 380 )) \
    BENCH_ARGS="--quick --device cpu" bash training/gpu_job.sh device > "$out/job.log" 2>&1 ||
    { tail -30 "$out/job.log"; echo "the device phase failed (above)" >&2; exit 1; }
  grep -E "unpacked|epoch [0-9]+:|parity|benchmark" "$out/job.log"
  tar -tf "$out/bench.tar" | grep -q bench_gpu.json || { echo "no benchmark in bench.tar" >&2; exit 1; }
  ls "$out"
  # a second lease continuing from the student the first returned (PRETRAINED), 1 epoch
  start=$(mktemp -d)
  trap 'rm -rf "$recipe" "$out" "$blocked" "$start" /tmp/facewatch-train /tmp/facewatch-train-bench' EXIT
  cat "$out"/facenet.onnx.part* > "$start/facenet.onnx" && cp "$out/facenet.json" "$start/"
  rm -rf /tmp/facewatch-train "${out:?}"/*
  sed -i 's/^max_nrof_epochs: .*/max_nrof_epochs: 1/' "$recipe"
  PYTHONPATH=$blocked OUT=$out PY=$VENV/bin/python RECIPE=$recipe TRAIN_S=$TRAIN_S CALL_S=$(( TRAIN_S + 380 )) SKIP_CHECK=1 \
    PRETRAINED=$start/facenet.onnx bash training/gpu_job.sh device > "$out/job.log" 2>&1 ||
    { tail -30 "$out/job.log"; echo "the device phase from PRETRAINED failed (above)" >&2; exit 1; }
  grep -q "started from $start/facenet.onnx" "$out/job.log" ||
    { tail -30 "$out/job.log"; echo "PRETRAINED was not used" >&2; exit 1; }
  grep -E "started from|epoch [0-9]+:|parity" "$out/job.log"
else
  echo "no .gpu_data/parts: the device phase was not tried (training/gpu_job.sh prepare)"
fi
