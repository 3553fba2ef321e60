#!/usr/bin/env bash
# The GPU check of the engines (issue 6), as ONE prepared run on a CUDA machine:
# pytest tests/gpu, then bench/bench_gpu.py (facewatch's GPU backends side by side with
# facenet-pytorch on the same GPU), then bench/bench_streams.py (the daemon's scheduler fed
# by 16 cameras of decoded 1080p at 25 fps on the torch backend, fp16 + CUDA graphs: drops,
# p99 latency, stage times and a profile of the scheduler thread), everything written to $OUT.
#
# The device machine reaches nothing outside it and gets only this repository's working
# tree (../shared/data does not travel), so there are two phases:
#
#   bash bench/gpu_check.sh prepare   # here: copy the data the check reads (images, MTCNN
#                                     # weights, two clips), the facenet-pytorch wheel and
#                                     # pydantic's (for bench_streams) into .gpu_data/check/
#                                     # (~10 MB; .gpu_data/ is ignored)
#   bash bench/gpu_check.sh device    # there, the one device command:
#       run(command="bash bench/gpu_check.sh device", carry=[".gpu_data/check"], timeout_s=600)
#
# timeout_s=600: the three parts' 560 s, and ~20 s of installs and probes before them. Read
# `status` first: with less than 645 s of device time left (budget_left_s), lower the parts'
# limits or leave one out (PARTS) so that their sum is under budget_left_s - 85.
# Then read $OUT's files (files_at): env.txt, pytest_gpu.log, and bench.tar (tar -xf), which
# holds bench_gpu.md / .json, profile_mtcnn.txt, bench.log, streams.json, profile_streams.txt
# and streams.log: the device tool returns 8 files at most. A part the call's timeout cut
# short leaves its log beside them.
#
# The device image's PyTorch is 2.11.0: training/device_precheck.sh runs the torch backend's
# unit tests with it here (P-Net's program needed CeilMaxPool2x2 for it, training/mtcnn_nets.py).
# The device image has torch, torchvision, cuda-python (cuda-bindings), onnx and
# onnxruntime; facenet-pytorch travels as a wheel (installed --no-deps: its pins on torch
# 2.2 / numpy < 2 are stale, its code runs on today's torch). TensorRT is not installable
# there (its libraries download only from NVIDIA's index): the TensorRT tests skip with
# that reason, and the benchmark leaves the TensorRT rows out.
#
# Settings: DATA (default ../shared/data), PYTEST_S / BENCH_S / STREAMS_S (time limits of the
# three parts, default 200 / 250 / 110 s: 560 s in all, 40 s under one call's 600), BENCH_ARGS /
# STREAMS_ARGS (extra options, e.g. "--frames 32" / "--seconds 15"), PARTS (default
# "tests bench streams": run some of them, e.g. a second call with PARTS=streams), BENCH_DIR
# (where the benchmarks write before bench.tar, default /tmp/facewatch-bench-files).
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data}
STAGE=.gpu_data/check
FACENET_WHEEL=facenet-pytorch==2.6.0
DAEMON_WHEELS="pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 paho-mqtt==2.2.0"

prepare() {
  grep -qx "/.gpu_data/" .git/info/exclude 2>/dev/null || echo "/.gpu_data/" >> .git/info/exclude
  rm -rf "$STAGE"
  mkdir -p "$STAGE/data/images" "$STAGE/data/videos" "$STAGE/data/weights" "$STAGE/whl" \
    "$STAGE/whl-daemon"
  cp "$DATA/README.md" "$STAGE/data/"
  cp "$DATA"/images/*.jpg "$DATA"/images/*.png "$STAGE/data/images/"
  cp -r "$DATA/weights/mtcnn" "$STAGE/data/weights/"
  cp "$DATA/videos/crowd_1080p.mp4" "$DATA/videos/hamilton_360p.mp4" "$STAGE/data/videos/"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$STAGE/whl" "$FACENET_WHEEL"
  # bench_streams runs the daemon's scheduler, whose config needs pydantic and whose service
  # imports paho-mqtt: the device image (Python 3.12) has prometheus-client, PyYAML and
  # typing-extensions, not these
  # shellcheck disable=SC2086
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$STAGE/whl-daemon" $DAEMON_WHEELS
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
  if ! "$PY" -c "import pydantic, paho.mqtt" 2>/dev/null; then  # for bench_streams (the daemon)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$STAGE"/whl-daemon/*.whl ||
      echo "pydantic's wheels (Python 3.12) do not install here: bench_streams will fail" >&2
  fi
  export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    "$PY" -c "import torch, torchvision, onnxruntime; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'torchvision', torchvision.__version__, 'onnxruntime', onnxruntime.__version__)" || true
    "$PY" -c "import cuda.bindings, facenet_pytorch; print('cuda-python', cuda.bindings.__version__, 'facenet-pytorch ok')" || true
    "$PY" -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>&1 | tail -1 || true
  } > "$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"
  parts=${PARTS:-tests bench streams}
  # the benchmarks' files, bundled into $OUT/bench.tar after each part (8 files come back)
  files=${BENCH_DIR:-/tmp/facewatch-bench-files}
  if [[ " $parts " == *" bench "* ]] || [[ " $parts " == *" streams "* ]]; then
    rm -rf "${files:?}" && mkdir -p "$files"
  fi
  tests=skipped bench=skipped streams=skipped
  set +e
  if [[ " $parts " == *" tests "* ]]; then
    timeout "${PYTEST_S:-200}" "$PY" -m pytest -q -rs -p no:cacheprovider --durations=10 tests/gpu 2>&1 | tee "$OUT/pytest_gpu.log"
    tests=${PIPESTATUS[0]}
  fi
  if [[ " $parts " == *" bench "* ]]; then
    # shellcheck disable=SC2086
    timeout "${BENCH_S:-250}" "$PY" bench/bench_gpu.py --out "$files" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
    bench=${PIPESTATUS[0]}
    bundle bench.log
  fi
  if [[ " $parts " == *" streams "* ]]; then
    # shellcheck disable=SC2086
    timeout "${STREAMS_S:-110}" "$PY" bench/bench_streams.py --backend torch --fp16 --graphs \
      --streams 16 --fps 25 --clip crowd_1080p --seconds 20 --warmup 10 \
      --json "$files/streams.json" --profile "$files/profile_streams.txt" ${STREAMS_ARGS:-} 2>&1 |
      tee "$OUT/streams.log"
    streams=${PIPESTATUS[0]}
    bundle streams.log
  fi
  set -e
  echo "pytest tests/gpu exit $tests, bench exit $bench, streams exit $streams" | tee -a "$OUT/env.txt"
  for status in "$tests" "$bench" "$streams"; do
    [ "$status" = 0 ] || [ "$status" = skipped ] || return 1
  done
}

bundle() {
  # a part's log (in $OUT while it runs, so that a call cut short still returns it) joins its
  # files, and bench.tar is written again with all of them
  mv "$OUT/$1" "$files/"
  tar -cf "$OUT/bench.tar.new" -C "$files" . && mv "$OUT/bench.tar.new" "$OUT/bench.tar"
}

case "${1:-}" in
  prepare) prepare ;;
  device) device ;;
  *) echo "usage: $0 prepare|device (read the header of this script)" >&2; exit 2 ;;
esac
