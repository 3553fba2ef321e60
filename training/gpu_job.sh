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
# The trainer centres a .npz teacher's embeddings (training/teacher.py: dlib's fill a narrow
# cone, and uncentred they taught a CPU run nothing). training/cpu_job.sh runs this whole
# route on 2 CPU cores at 96 px: its figures, in its header, are the floor to beat here.
#
# The dlib distillation route, step by step (1-5 here on the CPU, 6 the device call, 7 here):
#  1. dlib in its own venv (not a project dependency; training/teacher_dlib.py), once:
#       .venv/bin/python -m venv .venv-dlib
#       echo "$PWD/.venv/lib/python3.11/site-packages" \
#         > .venv-dlib/lib/python3.11/site-packages/facewatch-dev-venv.pth
#       .venv-dlib/bin/python -m pip install dlib-bin face-recognition-models
#  2. the extra sources: the search tool's fetch (github:Nikhil4902/CelebA_Dataset,
#     github:mattans/AgeProgression) gives /work/.mirror/OWNER+NAME/repo; then
#       M=/work/.mirror S=.gpu_data/sources; mkdir -p $S/tmp
#       git --git-dir=$M/Nikhil4902+CelebA_Dataset/repo archive 22ed0908 Datasets | tar -x -C $S/tmp
#       for d in $S/tmp/Datasets/*_dataset/*/; do   # train/test hold the same 200 people: merge
#         mkdir -p "$S/celeba200/$(basename "$d")" && mv "$d"*.jpg "$S/celeba200/$(basename "$d")/"; done
#       git --git-dir=$M/mattans+AgeProgression/repo archive 2d937c61 data/UTKFace/unlabeled | tar -x -C $S/tmp
#       mkdir -p $S/utkface && mv $S/tmp/data/UTKFace/unlabeled $S/utkface/ && rm -rf $S/tmp
#       (that archive prints "invalid object ... for 'doc/losses.gif'", a blob the mirror lacks
#       outside the path: harmless, all 23,707 faces come out)
#       mkdir -p $S/utk3k/unlabeled && ls $S/utkface/unlabeled | shuf -n 3000 --random-source=<(yes) |
#         while read -r f; do ln -s "$PWD/$S/utkface/unlabeled/$f" $S/utk3k/unlabeled/; done
#     celeba200: 6,000 photos (178x218), 200 people x 30, 53 MB; utkface: 23,707 faces (200x200),
#     no identities, 179 MB. UTKFace is one pseudo-identity folder (utk3k_unlabeled among the
#     crops): distillation ignores labels, but do not use such a folder with --loss triplet or
#     center. (Extended Yale B, Uranium2/recognition @ 55008b5f CroppedYale/: MTCNN finds a
#     face in only ~20 % of those tight grayscale crops; left out.)
#  3. prepare (about 11,200 crops; 182 px / margin 44 at JPEG quality 60 is ~4.5 KB a crop
#     plus ~0.8 KB of tar overhead; quality 85 would not fit). Crops aligned before at other
#     settings are kept as they are (align skips done files, and refuses another size or
#     margin): remove .gpu_data/aligned/<source> first to re-encode one.
#       rm -rf .gpu_data/aligned/celeba
#       KEEP_CROPS=1 JPEG_QUALITY=60 \
#         SOURCES="../shared/data/celeba .gpu_data/sources/celeba200 .gpu_data/sources/utk3k" \
#         training/gpu_job.sh prepare
#  4. the teacher file, from the very crops packed (5-10 crops/s with 2 workers on 2 busy
#     cores, so 20-35 min for 11,200; rerun the same command to resume after a stop):
#       .venv-dlib/bin/python -m training.cli_facenet embed-dlib .gpu_data/crops \
#         --out .gpu_data/teacher.npz --workers 2 --pad 0.2 --float16
#     (--float16 halves the file, ~0.27 KB a crop; the trainer L2-normalises in float32.
#     --pad 0.2 mirrors the crop's edges where dlib's chip reaches past them, instead of
#     black: +0.1 point on LFW crops. The summary names crops where dlib's detector found
#     no face, often MTCNN false positives; the .npz's `detected` array marks them.)
#  5. the size check: tree + train.tar + teacher.npz must stay under 64 MiB (67108864 B):
#       { git ls-files -co --exclude-standard -z; printf '%s\0' .gpu_data/train.tar \
#         .gpu_data/teacher.npz; } | du --files0-from=- -bc | tail -1
#     over it: fewer UTKFace faces (step 2), or a lower JPEG_QUALITY, then 3-5 again.
#  6. the device call:
#       run(command="TRAIN_ARGS='--loss distill --teacher .gpu_data/teacher.npz'
#                    TRAINING_DATA='CelebA (294 identities, 8,200 photos) + 3,000 UTKFace
#                    faces, distilled from dlib ResNet (CC0); non-commercial research data'
#                    bash training/gpu_job.sh device",   # (one line)
#           carry=[".gpu_data/train.tar", ".gpu_data/teacher.npz"], timeout_s=590)
#  7. copy the returned files (files_at) into .gpu_data/returned/, then
#       training/gpu_job.sh finish
# The teacher's own LFW figures (10 folds, L2-normalised descriptors): the student's ceiling.
# On raw LFW (dlib's detector on the 250x250 photo): accuracy 98.87 % ± 0.45, VAL 95.67 %
# ± 1.61 @ FAR 1e-3; on the MTCNN 182/44 crops the training data has (add the bracket):
# 98.40 % ± 0.44, VAL 87.47 % ± 2.40 (98.28 % ± 0.47 without --pad):
#   .venv-dlib/bin/python -m training.cli_facenet validate-dlib --lfw-dir ../shared/data/lfw/images \
#     --lfw-pairs ../shared/data/lfw/pairs.txt --workers 2 \
#     [--align --upsample 0 --box 0.13,0.2,0.82,0.88 --pad 0.2]
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
  # shellcheck disable=SC2086
  PY="$PY" training/align_sources.sh "$STAGE/crops" "$CROP_SIZE" "$CROP_MARGIN" "$JPEG_QUALITY" $SOURCES
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
