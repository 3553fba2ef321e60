#!/usr/bin/env bash
# The GPU check of the engines (issue 6), as ONE prepared run on a CUDA machine:
# pytest tests/gpu, then bench/bench_gpu.py (facewatch's GPU backends side by side with
# facenet-pytorch on the same GPU), everything written to $OUT.
#
# The device machine reaches nothing outside it and gets only this repository's working
# tree (../shared/data does not travel), so there are two phases:
#
#   bash bench/gpu_check.sh prepare   # here: copy the data the check reads (images, MTCNN
#                                     # weights, two clips) and the facenet-pytorch wheel
#                                     # into .gpu_data/check/ (~8 MB; .gpu_data/ is ignored)
#   bash bench/gpu_check.sh device    # there, the one device command:
#       run(command="bash bench/gpu_check.sh device", carry=[".gpu_data/check"], timeout_s=560)
#
# then read $OUT's files (files_at): pytest_gpu.log, bench_gpu.md / .json, profile_mtcnn.txt,
# bench.log, env.txt.
#
# The device image has torch, torchvision, cuda-python (cuda-bindings), onnx and
# onnxruntime; facenet-pytorch travels as a wheel (installed --no-deps: its pins on torch
# 2.2 / numpy < 2 are stale, its code runs on today's torch). TensorRT is not installable
# there (its libraries download only from NVIDIA's index): the TensorRT tests skip with
# that reason, and the benchmark leaves the TensorRT rows out.
#
# Settings: DATA (default ../shared/data), PYTEST_S / BENCH_S (time limits of the two
# phases, default 240 / 270 s), BENCH_ARGS (extra bench_gpu.py options, e.g. "--frames 32").
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data}
STAGE=.gpu_data/check
FACENET_WHEEL=facenet-pytorch==2.6.0

prepare() {
  grep -qx "/.gpu_data/" .git/info/exclude 2>/dev/null || echo "/.gpu_data/" >> .git/info/exclude
  rm -rf "$STAGE"
  mkdir -p "$STAGE/data/images" "$STAGE/data/videos" "$STAGE/data/weights" "$STAGE/whl"
  cp "$DATA/README.md" "$STAGE/data/"
  cp "$DATA"/images/*.jpg "$DATA"/images/*.png "$STAGE/data/images/"
  cp -r "$DATA/weights/mtcnn" "$STAGE/data/weights/"
  cp "$DATA/videos/crowd_1080p.mp4" "$DATA/videos/hamilton_360p.mp4" "$STAGE/data/videos/"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$STAGE/whl" "$FACENET_WHEEL"
  du -sh "$STAGE"
}

device() {
  : "${OUT:?device phase: run it through the device tool, which sets OUT}"
  export PYTHONUNBUFFERED=1
  PY=${PY:-python3}
  # The tests and the benchmark read ../shared/data (tests/conftest.py SHARED_DATA).
  if [ ! -e ../shared/data ]; then
    mkdir -p ../shared
    ln -s "$PWD/$STAGE/data" ../shared/data
  fi
  site=${SITE:-/tmp/facewatch-site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$STAGE"/whl/*.whl
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$PY" -c "import torch, torchvision, onnxruntime; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__, 'onnxruntime', onnxruntime.__version__)" || true
    "$PY" -c "import cuda.bindings, facenet_pytorch; print('cuda-python', cuda.bindings.__version__, 'facenet-pytorch ok')" || true
    "$PY" -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>&1 | tail -1 || true
  } > "$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"
  set +e
  timeout "${PYTEST_S:-240}" "$PY" -m pytest -q -rs -p no:cacheprovider --durations=10 tests/gpu 2>&1 | tee "$OUT/pytest_gpu.log"
  tests=${PIPESTATUS[0]}
  # shellcheck disable=SC2086
  timeout "${BENCH_S:-270}" "$PY" bench/bench_gpu.py --out "$OUT" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
  bench=${PIPESTATUS[0]}
  set -e
  echo "pytest tests/gpu exit $tests, bench exit $bench" | tee -a "$OUT/env.txt"
  [ "$tests" = 0 ] && [ "$bench" = 0 ]
}

case "${1:-}" in
  prepare) prepare ;;
  device) device ;;
  *) echo "usage: $0 prepare|device (read the header of this script)" >&2; exit 2 ;;
esac
