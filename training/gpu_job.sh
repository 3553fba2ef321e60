#!/usr/bin/env bash
# Train the FaceNet model facewatch ships (models/facenet/) on one CUDA GPU.
#
# The device machine reaches nothing outside it: it gets this repository's working tree
# (at most 64 MiB, ignored paths only when carried), finds PyTorch, onnx, onnxruntime,
# OpenCV, tqdm, PyYAML and tensorboard installed, and gives back at most 8 files of
# 16 MiB each. So the job has three phases:
#
#   training/gpu_job.sh prepare   # here, on the CPU: align the training photos into small
#                                 # JPEG crops and pack them into .gpu_data/train.tar
#   training/gpu_job.sh device    # on the GPU machine, the one `run` command: unpack,
#                                 # train, export fp16 ONNX, split it into parts in $OUT
#   training/gpu_job.sh finish    # here: join the parts into models/facenet/, run the
#                                 # 10-fold LFW protocol, record it in sidecar and card
#
# The device call, from the repository root (carry the packed crops, not all of .gpu_data:
# it also holds the unpacked crops):
#   run(command="bash training/gpu_job.sh device", carry=[".gpu_data/train.tar"], timeout_s=590)
# then copy the returned files (files_at) into .gpu_data/returned/ and run `finish`.
#
# Settings (environment variables, all optional):
#   SOURCES    folder-per-identity photo collections to align, space-separated
#              (default: the shared CelebA subset). LFW must never be among them. The
#              other sources ../shared/data/README.md lists are extracted first with
#              `git --git-dir=... archive COMMIT PATH | tar -x -C DEST` (see there).
#   DATA       the shared data folder (default: ../shared/data)
#   CROP_SIZE, CROP_MARGIN, JPEG_QUALITY   the training crops (default 182, 44, 85)
#   RECIPE     training recipe (default configs/training/facenet_default_gpu.yaml)
#   TRAINING_DATA  what the sidecar and model card say the model was trained on
#   TRAIN_ARGS extra `facewatch train triplet` options for the device phase, e.g.
#              "--time-limit-min 6" or "--loss distill --teacher teacher.onnx"
#   PACK_LIMIT_MIB   refuse to pack more than this (default 56: the tree must stay < 64)
#   KEEP_CROPS=1     keep .gpu_data/crops after packing (to compute a teacher file from)
#
# Distillation from a teacher (`--loss distill`; the licence of the teacher must allow it,
# e.g. dlib's CC0 ResNet): run `prepare` with KEEP_CROPS=1, write .gpu_data/teacher.npz
# with `paths` (<identity>/<file> under .gpu_data/crops) and `embeddings` (N, D) -- with
# `facewatch train embed .gpu_data/crops --model T.onnx --out .gpu_data/teacher.npz` for an
# ONNX teacher, or with dlib's compute_face_descriptor for dlib -- then run the device phase
# with TRAIN_ARGS="--loss distill --teacher .gpu_data/teacher.npz", carrying that file too.
#
# Identity folders of different sources are prefixed with the source's name, so the same
# person in two sources counts as two identities (the shared CelebA subset and
# Nikhil4902/CelebA_Dataset share 6): leave such duplicates out or accept the noise.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data}
SOURCES=${SOURCES:-$DATA/celeba}
CROP_SIZE=${CROP_SIZE:-182}
CROP_MARGIN=${CROP_MARGIN:-44}
JPEG_QUALITY=${JPEG_QUALITY:-85}
RECIPE=${RECIPE:-configs/training/facenet_default_gpu.yaml}
TRAIN_ARGS=${TRAIN_ARGS:-}
TRAINING_DATA=${TRAINING_DATA:-"CelebA subset (100 identities, 2,208 photos; non-commercial research)"}
PACK_LIMIT_MIB=${PACK_LIMIT_MIB:-56}
STAGE=.gpu_data
PY=${PY:-python3}
[ -x .venv/bin/python ] && [ "${1:-}" != device ] && PY=.venv/bin/python

prepare() {
  mkdir -p "$STAGE/crops"
  grep -qx "/$STAGE/" .git/info/exclude 2>/dev/null || echo "/$STAGE/" >> .git/info/exclude
  for src in $SOURCES; do
    case "$src" in *lfw*) echo "refusing to train on LFW ($src): it is the validation set" >&2; exit 2 ;; esac
    name=$(basename "$src")
    "$PY" -m training.cli_facenet align "$src" "$STAGE/aligned/$name" \
      --image-size "$CROP_SIZE" --margin "$CROP_MARGIN" --format jpg --jpeg-quality "$JPEG_QUALITY"
    for person in "$STAGE/aligned/$name"/*/; do
      ln -sfn "$(realpath "$person")" "$STAGE/crops/${name}_$(basename "$person")"
    done
  done
  cp "$STAGE/aligned/$(basename "${SOURCES%% *}")/alignment.json" "$STAGE/crops/alignment.json"
  tar -chf "$STAGE/train.tar" -C "$STAGE" crops
  size=$(( $(stat -c %s "$STAGE/train.tar") / 1048576 ))
  echo "packed $(find -L "$STAGE/crops" -name '*.jpg' | wc -l) crops of $(ls -d "$STAGE"/crops/*/ | wc -l) identities: $size MiB"
  if [ "$size" -gt "$PACK_LIMIT_MIB" ]; then
    echo "$STAGE/train.tar is $size MiB > $PACK_LIMIT_MIB MiB: lower CROP_SIZE or JPEG_QUALITY, or use fewer sources" >&2
    exit 2
  fi
  [ "${KEEP_CROPS:-0}" = 1 ] || rm -rf "$STAGE/crops"  # only train.tar travels
}

device() {
  : "${OUT:?device phase: run it through the device tool, which sets OUT}"
  export PYTHONUNBUFFERED=1
  work=/tmp/facewatch-train
  mkdir -p "$work"
  tar -xf "$STAGE/train.tar" -C "$work"
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu.txt" || echo "no nvidia-smi" > "$OUT/gpu.txt"
  # shellcheck disable=SC2086
  if ! "$PY" -m training.cli_facenet triplet --config "$RECIPE" --data-dir "$work/crops" \
    --models-base-dir "$work/models" --logs-base-dir "$work/logs" --run-name default \
    $TRAIN_ARGS 2>&1 | tr '\r' '\n' | sed -e '/it\/s/d' -e '/s\/it/d' | tee "$OUT/train.log"; then
    echo "training stopped with an error; exporting the last complete epoch" | tee -a "$OUT/train.log"
  fi
  [ -f "$work/models/default/latest.pt" ] || { echo "no checkpoint to export" >&2; exit 1; }
  "$PY" -m training.cli_facenet export "$work/models/default/latest.pt" \
    --out "$work/export/facenet.onnx" --parity-images "$work/crops" --fp16 \
    --training-data "$TRAINING_DATA" | tee -a "$OUT/train.log"
  cp "$work/export/facenet.json" "$OUT/"
  split -b 15M -d "$work/export/facenet.onnx" "$OUT/facenet.onnx.part"
  ls -l "$OUT"
}

finish() {
  returned=${RETURNED:-$STAGE/returned}
  mkdir -p models/facenet
  cat "$returned"/facenet.onnx.part* > models/facenet/facenet.onnx
  cp "$returned/facenet.json" models/facenet/facenet.json
  "$PY" -m training.cli_facenet validate models/facenet/facenet.onnx \
    --lfw-dir "$DATA/lfw/images" --lfw-pairs "$DATA/lfw/pairs.txt" --lfw-nrof-folds 10 \
    --align --mtcnn-dir models/mtcnn --out-dir models/facenet/lfw --record
  ls -l models/facenet
}

case "${1:-}" in
  prepare) prepare ;;
  device) device ;;
  finish) finish ;;
  *) echo "usage: $0 prepare|device|finish (read the header of this script)" >&2; exit 2 ;;
esac
