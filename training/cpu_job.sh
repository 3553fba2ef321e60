#!/usr/bin/env bash
# facewatch's FaceNet route on the CPU: Inception-ResNet-v1 at 96 px, distilled from the
# shipped recognition model (models/facenet/facenet.onnx: dlib's ResNet face descriptor, CC0,
# converted), which two cores can afford. The same route as the GPU job (training/gpu_job.sh:
# 160 px there): photos warped onto the teacher's landmark template, the teacher rebuilt in
# PyTorch and run beside the student on every batch, after the same random crop, flip,
# rotation, scale and colour, so each target is the teacher's descriptor of the very pixels
# the student sees. No dlib install is needed: the teacher is in the tree.
#
#   training/cpu_job.sh prepare   # align the photos onto the teacher's template: 170 px
#                                 # crops, margin 10, in .gpu_data/aligned-template (the GPU
#                                 # job's, shared: done crops are skipped)
#   training/cpu_job.sh student   # 102 px copies (0.6x: the central 160 px become 96), the
#                                 # held-out people left out (training/held_out.sh)
#   training/cpu_job.sh lfw       # LFW warped onto the template at 96 px, for the
#                                 # validation after each epoch
#   training/cpu_job.sh train     # configs/training/facenet_default_cpu.yaml (more options
#                                 # after `train` are passed on, e.g. --resume)
#   training/cpu_job.sh finish    # export fp16 ONNX to .gpu_data/cpu-template/student/, 10-fold
#                                 # LFW on the raw photos (MTCNN + the model's alignment),
#                                 # recorded in its sidecar and model card
#
# Measured on the 2-core machine (2026-11-30, bench/results/train_cpu_distill_regularisation.log):
# 19,187 crops, 5.7 minutes per training epoch (~80 crops a second, the teacher included)
# plus half a minute for LFW, 50 minutes for the 8 epochs. LFW after each: 62.4, 69.6, 70.8,
# 72.5, 73.8, 74.3, 74.8, 74.6 % (the rate decays after epochs 3 and 6), the training loss
# at 0.63. The route's earlier version (fixed .npz targets of the un-augmented crops, dropout
# 0.8) had reached 72.6 %. Two cores cannot get near the 95 % the shipped model needs: this
# proves the route and sets the floor the GPU run must beat; nothing here replaces
# models/facenet/.
#
# Before: the extra sources fetched and unpacked (`training/gpu_job.sh sources`, after the
# search tool's fetch of the repositories its header names). SOURCES defaults to the shared
# CelebA subset, the 200 CelebA identities of github:Nikhil4902/CelebA_Dataset and utk12k,
# 12,000 UTKFace faces chosen at random (github:mattans/AgeProgression; no identities, which
# distillation does not need; the GPU job takes the other 11,707 and 268 more CelebA people).
# Every phase is resumable: done crops are kept, and `train --resume` goes on from the last
# epoch.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${DATA:-../shared/data}
STAGE=.gpu_data
SOURCES=${SOURCES:-"$DATA/celeba $STAGE/sources/celeba200 $STAGE/sources/utk12k"}
TEACHER=${TEACHER:-models/facenet/facenet.onnx}
RECIPE=${RECIPE:-configs/training/facenet_default_cpu.yaml}
TRAINING_DATA=${TRAINING_DATA:-"19,187 face crops: CelebA (259 identities; the last 40 of the shared subset held out) and 12,000 UTKFace faces, warped onto the teacher's landmark template and distilled from facewatch's converted dlib ResNet face descriptor (CC0) on each augmented batch; recipe training/cpu_job.sh"}
LICENSE=${LICENSE:-"MIT, as facewatch. Trained on CelebA and UTKFace, which their owners release for non-commercial research only: check their terms before commercial use"}
WORK=${WORK:-$STAGE/cpu-template}
PY=.venv/bin/python
export PYTHONUNBUFFERED=1
# shellcheck source=training/held_out.sh
. training/held_out.sh

prepare() {
  # shellcheck disable=SC2086
  PY="$PY" ALIGNED=$STAGE/aligned-template ALIGN_ARGS="--template $TEACHER" \
    training/align_sources.sh "$WORK/crops170" 170 10 90 $SOURCES
  cp "$STAGE/aligned-template/$(basename "${SOURCES%% *}")/alignment.json" "$WORK/crops170/"
}

student() {
  # shellcheck disable=SC2046
  "$PY" - "$WORK/crops170" "$WORK/crops102" 102 $(held_out_identities "$DATA") <<'PY'
import json
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

src, dst, size, held_out = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), set(sys.argv[4:])
settings = json.loads((src / "alignment.json").read_text())
scale = size / settings["image_size"]
print(f"held out of training: {len(held_out)} identities")
todo = [
    p
    for p in sorted(src.glob("*/*.jpg"))
    if p.parent.name not in held_out and not (dst / p.relative_to(src)).exists()
]
for path in tqdm(todo, desc=f"{size} px copies"):
    out = dst / path.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    small = cv2.resize(cv2.imread(str(path)), (size, size), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(out), small, [cv2.IMWRITE_JPEG_QUALITY, 95])
# the copies' own settings: the template's landmarks resized with the pixels (pixel centres)
settings.update(
    image_size=size,
    margin=round(settings["margin"] * scale),
    landmarks=[[round((v + 0.5) * scale - 0.5, 2) for v in xy] for xy in settings["landmarks"]],
)
(dst / "alignment.json").write_text(json.dumps(settings))
PY
}

lfw() {
  "$PY" -m training.cli_facenet align "$DATA/lfw/images" "$WORK/lfw96" --image-size 96 \
    --margin 0 --template "$TEACHER"
  # photos where MTCNN finds no face (1 of the 7,701 the pairs name): a centre crop, the
  # fallback of `facewatch train validate --align`
  "$PY" - "$DATA/lfw/images" "$WORK/lfw96" <<'PY'
import sys
from pathlib import Path

import cv2

from training.validate import centre_crop

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for path in sorted(src.glob("*/*.jpg")):
    out = (dst / path.relative_to(src)).with_suffix(".png")
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), centre_crop(cv2.imread(str(path)), 96, 0))
        print(f"{path}: no face found, centre crop written")
PY
}

train() {
  "$PY" -m training.cli_facenet triplet --config "$RECIPE" --data-dir "$WORK/crops102" \
    --teacher "$TEACHER" --lfw-dir "$WORK/lfw96" --lfw-pairs "$DATA/lfw/pairs.txt" \
    --models-base-dir "$WORK/models" --logs-base-dir "$WORK/logs" --run-name default "$@"
}

finish() {
  out=$WORK/student
  mkdir -p "$out"
  "$PY" -m training.cli_facenet export "$WORK/models/default/latest.pt" \
    --out "$out/facenet.onnx" --force --parity-images "$WORK/crops102" --fp16 \
    --training-data "$TRAINING_DATA" --license "$LICENSE"
  "$PY" -m training.cli_facenet validate "$out/facenet.onnx" \
    --lfw-dir "$DATA/lfw/images" --lfw-pairs "$DATA/lfw/pairs.txt" --lfw-nrof-folds 10 \
    --align --mtcnn-dir models/mtcnn --out-dir "$out/lfw" --record
  ls -l "$out"
}

case "${1:-}" in
  prepare | student | lfw | finish) "$1" ;;
  train) shift; train "$@" ;;
  *) echo "usage: $0 prepare|student|lfw|train|finish (read the header of this script)" >&2; exit 2 ;;
esac
