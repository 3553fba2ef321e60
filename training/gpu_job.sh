#!/usr/bin/env bash
# Train facewatch's own FaceNet on one CUDA GPU: Inception-ResNet-v1 at 160 px, distilled from
# the recognition model facewatch ships (models/facenet/facenet.onnx: dlib's ResNet face
# descriptor, CC0, converted by `facewatch train import-dlib`). The route since 2026-11-30:
# photos warped onto that model's own landmark template (`align --template`, 170 px crops
# whose central 160 px are its framing), the teacher rebuilt in PyTorch and run on the GPU
# beside the student on every batch, after random crop, flip, rotation, scale and colour
# (training/teacher.py TorchTeacher, --random-rotate/--random-scale/--random-color), so each
# target is the teacher's descriptor of the very pixels the student sees. No teacher file
# travels: the teacher is in the tree. The result goes to .gpu_data/student/ with its LFW
# figures; it replaces models/facenet/ only by hand, if it is good enough (issue 3's bar: 95 %).
#
# Before a lease, run training/device_precheck.sh here: the device phase (on the CPU, tiny) and
# the torch code's tests, with the device's PyTorch (2.11.0; this machine's .venv has 2.13.0).
#
# The device machine reaches nothing outside it. Each call gets this repository's working
# tree plus the carried files (at most 64 MiB together), the machine keeps the files of
# earlier calls while it stays warm (30 s after a call), and gives back at most 8 files of
# 16 MiB each. It has PyTorch, onnx, onnxruntime, OpenCV, tqdm, PyYAML and tensorboard. So:
#
#   training/gpu_job.sh prepare   # here, on the CPU: align the training photos onto the
#                                 # teacher's template (resumable),
#                                 # leave out the held-out people (training/held_out.sh),
#                                 # re-encode the crops and pack them into parts of at most
#                                 # PART_MIB, .gpu_data/parts/train.NN.tar (training/pack.py),
#                                 # and print the device calls to make
#   training/gpu_job.sh receive   # on the GPU machine, one call per part but the last: it
#                                 # only lists the parts that have arrived
#   training/gpu_job.sh device    # on the GPU machine, with the last part and parts.txt:
#                                 # unpack every part, train, export fp16
#                                 # ONNX, split it into pieces in $OUT, then issue 6's
#                                 # benchmark in the time left (bench.tar)
#   training/gpu_job.sh finish    # here: join the pieces into .gpu_data/student/, run the
#                                 # 10-fold LFW protocol, record it in sidecar and card
#
# The calls, back to back (a pause of over 30 s gives the machine back, and the parts with it:
# `device` then stops at once, naming the missing parts), from the repository root:
#   run(command="bash training/gpu_job.sh receive", carry=[".gpu_data/parts/train.01.tar"], timeout_s=120)
#   ... the same for each part but the last, then, sized to the device time left:
#   run(command="CALL_S=580 TRAIN_S=430 bash training/gpu_job.sh device",
#       carry=[".gpu_data/parts/train.NN.tar", ".gpu_data/parts/parts.txt",
#       ".gpu_data/parts/alignment.json", ".gpu_data/check"], timeout_s=600)
# then copy the returned files (files_at) into .gpu_data/returned/, give_back at once, and run
# `finish`. The device call's time: a call still running when the session's device time runs
# out returns nothing (no model, no logs), and the receive calls and a slow start may have
# used more than planned. So just before it, read `status` (it costs nothing): with B its
# budget_left_s, timeout_s = min(600, B - 45), CALL_S = timeout_s - 20, TRAIN_S = CALL_S - 150,
# and below B = 480 leave .gpu_data/check out of carry and set SKIP_CHECK=1 (the call goes to
# training and export); below B = 275 (under a minute of training) make no device call:
# give_back. The line above is B >= 645;
# `BUDGET_LEFT_S=B bash training/gpu_job.sh calls` prints it for B. A TRAIN_S shorter than the
# recipe's time limit (6 min) gets a time limit that ends within it, so the rate still anneals
# to 0 (`device` says so in train.log).
# With .gpu_data/check carried (`bash bench/gpu_check.sh prepare` makes it, ~14 MB), the GPU
# tests of issue 6 (tests/gpu) run beside the training and come back as pytest_gpu.log and
# env.txt, and after the export issue 6's benchmark (1080p only) fills the call's time left,
# up to CALL_S, and comes back as bench.tar; leave the check out when the call would carry
# more than 64 MiB (`prepare` checks).
#
# Settings (environment variables, all optional):
#   SOURCES    folder-per-identity photo collections to align, space-separated (default: the
#              shared CelebA subset, and, from step 2 below, 200 more CelebA identities and all
#              23,707 UTKFace faces, without identities, which distillation does not need).
#              LFW must never be among them.
#   DATA       the shared data folder (default: ../shared/data)
#   TEACHER    the ONNX teacher, whose landmark template the crops are warped onto (default
#              models/facenet/facenet.onnx)
#   CROP_SIZE, CROP_MARGIN   the aligned crops (default 170, 10: the teacher's framing at
#              160 px in the middle, room for random 160 px crops around it)
#   JPEG_QUALITY   of the packed crops (default 60: ~4.5 KB a crop)
#   PART_MIB   largest part (default 44: a part and the tree, 16 MB with the shipped models,
#              fit in a call)
#   RECIPE     training recipe (default configs/training/facenet_default_gpu.yaml)
#   TRAINING_DATA  what the sidecar and model card say the model was trained on
#   BASE_TRAIN_ARGS  the device phase's `facewatch train triplet` options (default:
#              "--loss distill --teacher $TEACHER --random-rotate 10 --random-scale 0.08
#              --random-color 0.2"); setting it replaces all of them
#   TRAIN_ARGS more options, added after BASE_TRAIN_ARGS: an option given in both takes
#              TRAIN_ARGS's value, the others stay (e.g. "--time-limit-min 4" still distils)
#   ALLOW_MISSING_PARTS=1   let `device` train on the parts that arrived
#   SKIP_CHECK=1   `device` leaves out the GPU tests and the benchmark even with .gpu_data/check
#   PRETRAINED a student that came back from an earlier lease, to continue from (its fp16
#              ONNX with its sidecar, e.g. .gpu_data/student/facenet.onnx, ~46 MB: `calls`
#              then prints one more receive call, carrying it; give the same setting to
#              `calls` and to `device`). The weights inside it start the run (the optimiser
#              and the rate schedule start afresh): one 7-minute lease at a time, a run can go
#              on past what one lease allows.
#   CALL_S     the benchmark stops by this many seconds into the call (default 580: the
#              call's timeout_s less 20 s; the GPU tests stop by CALL_S - 130)
#   TRAIN_S    stop training after this many seconds whatever the recipe says (default
#              CALL_S - 150, 430: the 150 s are for unpacking, the export and the benchmark;
#              the recipe's time limit is 6 min, and its rate anneals over those)
#   BUDGET_LEFT_S  `calls` sizes the device call to this much device time left (default: a
#              full call's, 645 s or more)
#   BENCH_ARGS bench/bench_gpu.py options (default "--clips crowd_1080p --frames 32 --iters 5")
#
# The teacher's licence must allow distillation (dlib's ResNet is CC0). BASE_TRAIN_ARGS may
# name a .npz teacher instead (precomputed descriptors, `facewatch train embed` or `embed-dlib`:
# the route of the first run below, and of training/cpu_job.sh until 2026-11-30, 72.6 %);
# the warps need an ONNX teacher. training/cpu_job.sh now runs this script's route at 96 px
# on the CPU: its figures, in its header, are the floor to beat.
#
# The first run on an H200 (2026-11-29, this script as it stands; its log and LFW report are
# bench/results/gpu_h200/train_default_model.log and lfw_default_model.json) did NOT beat
# that floor: 19 epochs of 36,000 crops in the 6 minutes (~2,000 images/s: slower than
# planned, cause not profiled; the epoch lines now give the share spent waiting for the
# loader), the loss down from 0.97 to 0.74 and flat from epoch 13 as the rate annealed to 0,
# then LFW 71.5 % ± 1.8 (VAL 3.3 % @ FAR 1e-3), against cpu_job.sh's 72.6 % at 96 px with a
# third of the images seen. The CPU run had also stopped at a loss of 0.74: the limit is the
# route, not compute. On 300 of these crops the same student fits the teacher easily
# without augmentation (loss 0.32 after 12 short epochs) but hardly with the recipe's random
# crop, flip and dropout (0.84): each crop's target is the teacher's descriptor of the
# un-augmented crop, so with 31,000 faces the student learns little beyond them. That model
# was not shipped. What should move it: a teacher that sees the very crops the student sees,
# which is the route above (not yet run on a GPU). The teacher needs its own framing: on
# plain margin crops it scores 85-89 % on LFW, on crops warped onto its template 98.7 %; on
# the 170 px template crops (central 160 resized to its 150) its descriptors are within
# cosine 0.9996 of the daemon's own warp (tests/integration/test_distill_template.py).
# The sources now also take the 8,040 grayscale crops of 268 more CelebA people that the
# later commits of Nikhil4902/CelebA_Dataset hold (celeba270).
# On 2 CPU cores the route was at first no better: the CPU recipe (96 px, 8 epochs
# of 27,000 crops, same 19,187 photos) on 102 px copies of the template crops, with this
# teacher and the warps, gave LFW 61.0, 64.5, 68.8, 69.3, 70.6, 71.9, 71.9, 72.0 % after
# each epoch (on LFW crops warped at 96 px), against the .npz route's 65.7 ... 72.6 %; without
# the warps 61.0 and 66.4 % after two. The teacher on those 96 px crops scores 98.67 %, so
# its targets are sound; two cores are far from the regime (13+ GPU epochs) where the fixed
# targets stalled, which only the GPU run can test. What the CPU did show: the recipe's
# regularisation slows the fit. The same run without dropout and weight decay
# (--keep-probability 1.0 --weight-decay 0) led after every epoch and ended at 74.6 % (loss
# 0.63) against 72.0 % (0.70): bench/results/train_cpu_distill_regularisation.log. So the
# GPU recipe now has neither (it had 0.8 and 0.0005, stronger than the CPU's 0.0001).
# Blending each crop with another of the batch (faces of no one, which the teacher describes)
# did not help on top of that: 74.2 % (same log); tried and not kept.
# Going on from a returned student (PRETRAINED) works: on the CPU, 8 more epochs from run A's
# fp16 export (72.4 % as exported) gave 74.6 % after the first and 78.8 % after the eighth,
# still rising (bench/results/train_cpu_distill_continue.log): neither the fp16 round trip
# nor the fresh optimiser set it back.
#
# Step by step (1-2 here on the CPU, 3 the device calls, 4 here). Steps 1-2 are one command,
# resumable, about 5 minutes on 2 cores from nothing (a new checkout has no .gpu_data),
# after the search tool's fetch of the two repositories of step 1:
#   training/gpu_job.sh stage
# It makes .gpu_data/crops-template (39,373 crops in 570 identity folders, 2 of them
# UTKFace's), the parts and .gpu_data/check (bench/gpu_check.sh prepare), and prints the calls.
#  1. the extra sources: the search tool's fetch (github:Nikhil4902/CelebA_Dataset,
#     github:mattans/AgeProgression) gives /work/.mirror/OWNER+NAME/repo; `sources` unpacks
#     them into .gpu_data/sources:
#     celeba200: 6,000 photos (178x218), 200 people x 30, 53 MB (commit 22ed0908; its train
#     and test folders hold the same people and are merged); celeba270: the later commits'
#     datasets (dba7a956, 2859a558, 96c1b3aa), 150 px grayscale crops, 8,040 of 268 other
#     people once the photos of celeba200 and the people of the shared subset are left out,
#     named by CelebA identity (the repository's identity_CelebA.txt; MTCNN finds 96 % of
#     them; their tight crops leave black edges in the warped ones); utkface: 23,707 faces (200x200),
#     179 MB (commit 2d937c61; git prints "invalid object ... for 'doc/losses.gif'", a blob
#     the mirror lacks outside the path: harmless), in two halves, utk12k (the 12,000 faces
#     cpu_job.sh trains on) and utkrest. Each UTKFace half is one pseudo-identity folder
#     among the crops: distillation ignores labels, but do not use them with --loss triplet
#     or center. (Extended Yale B, Uranium2/recognition @ 55008b5f CroppedYale/: MTCNN finds
#     a face in only ~20 % of those tight grayscale crops; left out.)
#  2. prepare: aligning the 39,955 photos takes 5 minutes, ~150 a second (done crops are
#     skipped; crops aligned before at other settings are refused: remove
#     .gpu_data/aligned-template/<source> to redo one); packing
#     the 38,521 crops that are not held out at quality 60 takes 20 s and gives 4 parts
#     (44, 44, 44 and 30.5 MiB):
#       training/gpu_job.sh prepare
#     It prints the device calls with the parts' names, and checks that each call's load
#     (tree + part, + parts.txt and alignment.json for the last) is under 64 MiB.
#  3. the device calls (step 2's), back to back, the last with TRAINING_DATA if the sources
#     differ from the default's.
#  4. copy the returned files (files_at) into .gpu_data/returned/, then
#       training/gpu_job.sh finish
# The teacher's own LFW figures (10 folds, L2-normalised descriptors): the student's ceiling.
# The converted model on MTCNN's landmarks warped onto its template (what the student's crops
# are): 98.72 % ± 0.28, VAL 94.17 % @ FAR 1e-3 (models/facenet/facenet.json). dlib itself,
# on raw LFW (dlib's detector on the 250x250 photo): accuracy 98.87 % ± 0.45, VAL 95.67 %
# ± 1.61 @ FAR 1e-3; on the MTCNN 182/44 margin crops of the first run (add the bracket):
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
STAGE=.gpu_data
SOURCES=${SOURCES:-"$DATA/celeba $STAGE/sources/celeba200 $STAGE/sources/celeba270 $STAGE/sources/utk12k $STAGE/sources/utkrest"}
TEACHER=${TEACHER:-models/facenet/facenet.onnx}
CROP_SIZE=${CROP_SIZE:-170}
CROP_MARGIN=${CROP_MARGIN:-10}
CROPS=$STAGE/crops-template
JPEG_QUALITY=${JPEG_QUALITY:-60}
PART_MIB=${PART_MIB:-44}
RECIPE=${RECIPE:-configs/training/facenet_default_gpu.yaml}
BASE_TRAIN_ARGS=${BASE_TRAIN_ARGS:-"--loss distill --teacher $TEACHER --random-rotate 10 --random-scale 0.08 --random-color 0.2"}
TRAIN_ARGS=${TRAIN_ARGS:-}  # added after BASE_TRAIN_ARGS
TRAINING_DATA=${TRAINING_DATA:-"CelebA (527 identities; the last 40 of the shared subset held out) and 23,707 UTKFace faces, warped onto the teacher's landmark template and distilled from facewatch's converted dlib ResNet face descriptor (CC0) on each augmented batch; recipe training/gpu_job.sh"}
PARTS=$STAGE/parts
PRETRAINED=${PRETRAINED:-}
CALL_S=${CALL_S:-580}    # the device call's end (its timeout_s 20 s later): the benchmark fills the rest
TRAIN_S=${TRAIN_S:-$(( CALL_S - 150 ))}  # the device call's training at most, in seconds
BUDGET_LEFT_S=${BUDGET_LEFT_S:-645}  # device time left when `calls` sizes the device call
DEVICE_MIN_S=275  # ... below which it is not worth making (TRAIN_S = B - 215 under 60 s)
CALL_LIMIT=67108864  # bytes a device call may carry, the working tree included
PY=${PY:-python3}
[ -x .venv/bin/python ] && [ "${1:-}" != device ] && [ "${1:-}" != receive ] && PY=.venv/bin/python
# shellcheck source=training/held_out.sh
. training/held_out.sh

prepare() {
  # aligned onto the teacher's template at quality 90 (re-encoded smaller when packed)
  # shellcheck disable=SC2086
  PY="$PY" ALIGNED=$STAGE/aligned-template ALIGN_ARGS="--template $TEACHER" \
    training/align_sources.sh "$CROPS" "$CROP_SIZE" "$CROP_MARGIN" 90 $SOURCES
  cp "$STAGE/aligned-template/$(basename "${SOURCES%% *}")/alignment.json" "$CROPS/alignment.json"
  # shellcheck disable=SC2046
  "$PY" -m training.pack "$CROPS" "$PARTS" --quality "$JPEG_QUALITY" \
    --part-mib "$PART_MIB" --exclude $(held_out_identities "$DATA")
  cp "$CROPS/alignment.json" "$PARTS/alignment.json"
}

sources() {
  # step 2, from the repositories the search tool's fetch brought
  mirror=${MIRROR:-/work/.mirror} src=$STAGE/sources
  for repo in Nikhil4902+CelebA_Dataset mattans+AgeProgression; do
    [ -d "$mirror/$repo/repo" ] || { echo "fetch github:${repo/+//} first (the search tool's fetch)" >&2; exit 2; }
  done
  mkdir -p "$src"
  if [ ! -d "$src/celeba200" ]; then
    rm -rf "$src/tmp" && mkdir -p "$src/tmp"
    git --git-dir="$mirror/Nikhil4902+CelebA_Dataset/repo" archive 22ed0908 Datasets | tar -x -C "$src/tmp"
    for d in "$src"/tmp/Datasets/*_dataset/*/; do  # train and test hold the same 200 people
      mkdir -p "$src/celeba200.part/$(basename "$d")" && mv "$d"*.jpg "$src/celeba200.part/$(basename "$d")/"
    done
    mv "$src/celeba200.part" "$src/celeba200" && rm -rf "$src/tmp"
  fi
  if [ ! -d "$src/utkrest" ]; then
    rm -rf "$src/tmp" "$src/utkface" "$src/utk12k" && mkdir -p "$src/tmp" "$src/utkface"
    git --git-dir="$mirror/mattans+AgeProgression/repo" archive 2d937c61 data/UTKFace/unlabeled \
      | tar -x -C "$src/tmp" || true  # a blob outside the path is missing: harmless
    mv "$src/tmp/data/UTKFace/unlabeled" "$src/utkface/" && rm -rf "$src/tmp"
    mkdir -p "$src/utk12k/unlabeled" "$src/utkrest.part/unlabeled"
    ls "$src/utkface/unlabeled" | shuf -n 12000 --random-source=<(yes) | while read -r f; do
      ln -s "$PWD/$src/utkface/unlabeled/$f" "$src/utk12k/unlabeled/"; done
    comm -23 <(ls "$src/utkface/unlabeled" | sort) <(ls "$src/utk12k/unlabeled" | sort) |
      while read -r f; do ln -s "$PWD/$src/utkface/unlabeled/$f" "$src/utkrest.part/unlabeled/"; done
    mv "$src/utkrest.part" "$src/utkrest"
  fi
  if [ ! -d "$src/celeba270" ]; then
    # the repository's later datasets: 150 px grayscale crops of other CelebA people, named
    # here by their CelebA identity (its identity_CelebA.txt), without the photos above and
    # without the people of the shared subset (whose last 40 are held out)
    rm -rf "$src/celeba270.part"
    "$PY" - "$mirror/Nikhil4902+CelebA_Dataset/repo" "$src/celeba270.part" "$DATA/celeba" <<'PY'
import subprocess
import sys
from pathlib import Path

repo, out, shared = sys.argv[1], Path(sys.argv[2]), {p.name for p in Path(sys.argv[3]).iterdir()}


def git(*args: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={repo}", *args], check=True, capture_output=True).stdout


identity = dict(line.split() for line in git("show", "a2b156ca:identity_CelebA.txt").decode().splitlines())
used = {Path(p).name for p in git("ls-tree", "-r", "--name-only", "22ed0908").decode().split()}
taken: set[str] = set()
for commit in ("dba7a956", "2859a558", "96c1b3aa"):
    for line in git("ls-tree", "-r", commit, "Datasets").decode().splitlines():
        meta, path = line.split("\t")
        name = Path(path).name
        if not name.endswith(".jpg") or name in used or name in taken or identity[name] in shared:
            continue
        taken.add(name)
        folder = out / identity[name]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(git("cat-file", "blob", meta.split()[2]))
print(f"celeba270: {len(taken)} crops of {len({identity[n] for n in taken})} people")
PY
    mv "$src/celeba270.part" "$src/celeba270"
  fi
  echo "sources: $(find "$src/celeba200" "$src/celeba270" -name '*.jpg' | wc -l) CelebA photos," \
    "$(ls "$src/utkface/unlabeled" | wc -l) UTKFace faces"
}

stage() {
  # the steps on this machine, each resumable: everything the device calls carry
  sources
  prepare
  [ -d "$STAGE/check" ] || bash bench/gpu_check.sh prepare
  calls
}

calls() {
  # the device calls for the parts in parts.txt, each checked against the 64 MiB a call carries
  [[ $BUDGET_LEFT_S =~ ^[0-9]+$ ]] ||
    { echo "BUDGET_LEFT_S=$BUDGET_LEFT_S: give status's budget_left_s, in seconds" >&2; exit 2; }
  tree=$(git ls-files -co --exclude-standard -z | du --files0-from=- -bc | tail -1 | cut -f1)
  mapfile -t parts < <(cut -d' ' -f1 "$PARTS/parts.txt")
  echo "the device calls, back to back:"
  if [ -n "$PRETRAINED" ]; then
    sidecar=${PRETRAINED%.onnx}.json
    [ -f "$PRETRAINED" ] && [ -f "$sidecar" ] ||
      { echo "PRETRAINED=$PRETRAINED: no such model with its sidecar $sidecar" >&2; exit 2; }
    load=$(( tree + $(stat -c %s "$PRETRAINED" "$sidecar" | awk '{ s += $1 } END { print s }') ))
    [ "$load" -le "$CALL_LIMIT" ] ||
      { echo "carrying $PRETRAINED would take $load bytes > $CALL_LIMIT" >&2; exit 2; }
    echo "  run(command=\"bash training/gpu_job.sh receive\", carry=[\"$PRETRAINED\", \"$sidecar\"], timeout_s=120)"
  fi
  for i in "${!parts[@]}"; do
    part=$PARTS/${parts[$i]}
    if [ "$i" -lt $(( ${#parts[@]} - 1 )) ]; then
      load=$(( tree + $(stat -c %s "$part") ))
      echo "  run(command=\"bash training/gpu_job.sh receive\", carry=[\"$part\"], timeout_s=120)"
    else
      check=
      [ "$BUDGET_LEFT_S" -lt 480 ] || [ ! -d "$STAGE/check" ] || check=$(du -sb "$STAGE/check" | cut -f1)
      load=$(( tree + ${check:-0} + $(stat -c %s "$part" "$PARTS/parts.txt" "$PARTS/alignment.json" \
        2>/dev/null | awk '{ s += $1 } END { print s }') ))
      carry="\"$part\", \"$PARTS/parts.txt\", \"$PARTS/alignment.json\""
      [ -z "$check" ] || carry="$carry, \"$STAGE/check\""
      device_call "$carry"
    fi
    if [ "$load" -gt "$CALL_LIMIT" ]; then
      echo "that call would carry $load bytes > $CALL_LIMIT: lower PART_MIB or JPEG_QUALITY" >&2
      exit 2
    fi
  done
  echo "then copy the returned files (files_at) into $STAGE/returned/, give_back at once, and run" \
    "training/gpu_job.sh finish"
}

device_call() {
  # the device call's run(...) line for carry $1, sized to BUDGET_LEFT_S, with the rule
  if [ "$BUDGET_LEFT_S" -lt "$DEVICE_MIN_S" ]; then  # (TRAIN_S would be under a minute)
    echo "  B = $BUDGET_LEFT_S s of device time left: under $DEVICE_MIN_S, the device call" \
      "cannot train (under a minute): give_back now and leave it to a later lease"
    return
  fi
  timeout=$(( BUDGET_LEFT_S - 45 < 600 ? BUDGET_LEFT_S - 45 : 600 ))
  call=$(( timeout - 20 ))
  command="CALL_S=$call TRAIN_S=$(( call - 150 )) bash training/gpu_job.sh device"
  [ -z "$PRETRAINED" ] || command="PRETRAINED=$PRETRAINED $command"
  [ "$BUDGET_LEFT_S" -ge 480 ] || command="SKIP_CHECK=1 $command"
  echo "  just before the next call, read status (it costs nothing) and size the call to its"
  echo "  budget_left_s B: timeout_s = min(600, B - 45), CALL_S = timeout_s - 20,"
  echo "  TRAIN_S = CALL_S - 150, and below B = 480 SKIP_CHECK=1 and no $STAGE/check in carry"
  if [ "$BUDGET_LEFT_S" -ge 645 ]; then for="B >= 645"; else for="B = $BUDGET_LEFT_S"; fi
  echo "  (BUDGET_LEFT_S=B bash training/gpu_job.sh calls prints the line for B); for $for:"
  echo "  run(command=\"$command\", carry=[$1], timeout_s=$timeout)"
  if [ "$BUDGET_LEFT_S" -ge 480 ] && [ ! -d "$STAGE/check" ]; then
    echo "  (no $STAGE/check: this call runs no GPU tests and no benchmark; bash bench/gpu_check.sh" \
      "prepare makes it, ~14 MB)"
  fi
  if [ $(( call - 150 )) -lt 120 ]; then
    echo "  (under 2 minutes of training: a later lease, from PRETRAINED, may serve better)"
  fi
}

receive() {
  echo "parts on this machine:"
  ls -l "$PARTS"/train.*.tar 2>/dev/null || echo "  none yet"
  [ ! -d "$STAGE/student" ] || ls -l "$STAGE/student"
}

unpack() {
  # every part that parts.txt names into $1; a missing part stops here unless allowed
  missing=0
  while read -r name count _; do
    if [ -f "$PARTS/$name" ]; then
      tar -xf "$PARTS/$name" -C "$1" && echo "unpacked $name ($count crops)"
    else
      echo "missing $name ($count crops): the machine went back between the calls?"
      missing=1
    fi
  done < "$PARTS/parts.txt"
  if [ "$missing" = 1 ] && [ "${ALLOW_MISSING_PARTS:-0}" != 1 ]; then
    echo "parts are missing: send them again, or set ALLOW_MISSING_PARTS=1" >&2
    exit 3
  fi
  cp "$PARTS/alignment.json" "$1/crops/alignment.json"
}

train() {
  # train for at most $1 seconds; the rest are extra `facewatch train triplet` options
  limit=$1
  shift
  # shellcheck disable=SC2086,SC2046
  timeout "$limit" "$PY" -m training.cli_facenet triplet --config "$RECIPE" \
    --data-dir "$work/crops" --models-base-dir "$work/models" --logs-base-dir "$work/logs" \
    --run-name default $BASE_TRAIN_ARGS $(time_limit "$limit") $TRAIN_ARGS "$@" 2>&1 |
    tr '\r' '\n' | sed -e '/it\/s/d' -e '/s\/it/d' | tee -a "$OUT/train.log"
  local status=("${PIPESTATUS[@]}")
  return "${status[0]}"  # timeout's: 124 when the time ran out
}

time_limit() {
  # --time-limit-min for $1 seconds of training when the recipe's is longer: its rate anneals
  # to 0 over the time limit, and a run cut off before then would export a model caught at a
  # high rate; 60 s are for the start and the epoch that ends past the limit
  recipe_min=$(sed -n 's/^time_limit_min: *\([0-9.]*\).*/\1/p' "$RECIPE")
  awk -v recipe="${recipe_min:-0}" -v s="$1" 'BEGIN {
    m = (s - 60) / 60; if (m < 0.5) m = 0.5
    if (recipe > 0 && m < recipe) printf "--time-limit-min %.1f", m }'
}

device() {
  : "${OUT:?device phase: run it through the device tool, which sets OUT}"
  export PYTHONUNBUFFERED=1
  work=${WORK:-/tmp/facewatch-train}
  mkdir -p "$work"
  { nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi"; } > "$OUT/train.log"
  start=()
  if [ -n "$PRETRAINED" ]; then
    [ -f "$PRETRAINED" ] ||
      { echo "PRETRAINED=$PRETRAINED did not arrive (its receive call first)" | tee -a "$OUT/train.log" >&2; exit 3; }
    start=(--pretrained-model "$PRETRAINED")
  fi
  unpack "$work" 2>&1 | tee -a "$OUT/train.log"
  check=
  if [ -d .gpu_data/check ] && [ "${SKIP_CHECK:-0}" != 1 ]; then
    # carried too: issue 6's GPU tests run beside the training (bench/gpu_check.sh; its
    # benchmarks need the GPU to themselves, so they wait for a call of their own); they stop
    # by CALL_S - 130, which leaves the benchmark after the export its time
    PARTS=tests PYTEST_S=${PYTEST_S:-$(( CALL_S - 130 ))} bash bench/gpu_check.sh device \
      > "$OUT/gpu_check.log" 2>&1 &
    check=$!
  fi
  limit=$(time_limit "$TRAIN_S")
  [ -z "$limit" ] || echo "TRAIN_S=$TRAIN_S s: training with $limit, to anneal within it" |
    tee -a "$OUT/train.log"
  # The recipe's --time-limit-min ends training after the epoch that passes it; TRAIN_S stops
  # it regardless (epochs slower than planned), so that the export still fits in the call.
  { echo "cores: $(nproc)"; df -h /dev/shm | tail -1; } >> "$OUT/train.log" 2>&1 || true
  started=$SECONDS
  rc=0
  train "$TRAIN_S" "${start[@]}" || rc=$?
  if [ "$rc" != 0 ]; then
    why="an error, exit $rc, above"
    [ "$rc" != 124 ] || why="past TRAIN_S=$TRAIN_S s: its epochs were slower than planned"
    echo "training stopped ($why); exporting the last complete epoch" | tee -a "$OUT/train.log"
    left=$(( TRAIN_S - (SECONDS - started) ))
    if [ ! -f "$work/models/default/latest.pt" ] && [ "$left" -gt 120 ]; then
      # no epoch finished: perhaps the loader's workers (shared memory); once more without them
      echo "no checkpoint: training again with --workers 0 for the $left s left" | tee -a "$OUT/train.log"
      train "$left" --workers 0 "${start[@]}" || true
    fi
  fi
  [ -f "$work/models/default/latest.pt" ] || { echo "no checkpoint to export" >&2; exit 1; }
  "$PY" -m training.cli_facenet export "$work/models/default/latest.pt" \
    --out "$work/export/facenet.onnx" --force --parity-images "$work/crops" --fp16 \
    --training-data "$TRAINING_DATA" | tee -a "$OUT/train.log"
  cp "$work/export/facenet.json" "$OUT/"
  # pieces under the 16 MiB a returned file may have: 3 for the fp16 model
  split -b 16000000 -d "$work/export/facenet.onnx" "$OUT/facenet.onnx.part"
  if [ -n "$check" ]; then
    wait "$check" || echo "the GPU tests failed: see pytest_gpu.log" | tee -a "$OUT/train.log"
    if [ -f "$OUT/pytest_gpu.log" ]; then
      rm -f "$OUT/gpu_check.log"  # the same as pytest_gpu.log and env.txt (8 files come back)
    else
      echo "bench/gpu_check.sh stopped before the tests: see gpu_check.log" | tee -a "$OUT/train.log"
    fi
    bench
  fi
  ls -l "$OUT"
}

bench() {
  # issue 6's benchmark (bench/gpu_check.sh, 1080p only) in the call's time that is left,
  # with the GPU to itself now; its files come back as one, bench.tar (8 files come back)
  left=$(( CALL_S - SECONDS ))
  if [ "$left" -lt 60 ]; then
    echo "no time left for the benchmark ($left s)" | tee -a "$OUT/train.log"
    return
  fi
  files=${work}-bench
  rm -rf "$files" && mkdir -p "$files/out"
  OUT=$files/out BENCH_DIR=$files/files PARTS=bench BENCH_S=$(( left - 10 )) \
    BENCH_ARGS=${BENCH_ARGS:-"--clips crowd_1080p --frames 32 --iters 5"} \
    bash bench/gpu_check.sh device > "$files/out/gpu_check.log" 2>&1 ||
    echo "the benchmark failed or ran out of time: see bench.tar" | tee -a "$OUT/train.log"
  # one file: gpu_check's bench.tar opened, beside its env.txt and logs
  if [ -f "$files/out/bench.tar" ]; then
    tar -xf "$files/out/bench.tar" -C "$files/out" && rm "$files/out/bench.tar"
  fi
  tar -cf "$OUT/bench.tar" -C "$files/out" .
}

finish() {
  # the student beside the shipped model, never over it: copy it into models/facenet/ by hand
  # if its LFW figures earn that
  returned=${RETURNED:-$STAGE/returned} student=$STAGE/student
  if [ -d "$student" ]; then  # the one before, kept once
    rm -rf "$student.previous" && mv "$student" "$student.previous"
  fi
  mkdir -p "$student"
  cat "$returned"/facenet.onnx.part* > "$student/facenet.onnx"
  cp "$returned/facenet.json" "$student/facenet.json"
  "$PY" -m training.cli_facenet validate "$student/facenet.onnx" \
    --lfw-dir "$DATA/lfw/images" --lfw-pairs "$DATA/lfw/pairs.txt" --lfw-nrof-folds 10 \
    --align --mtcnn-dir models/mtcnn --out-dir "$student/lfw" --record
  ls -l "$student"
}

case "${1:-}" in
  stage) stage ;;
  sources) sources ;;
  prepare) prepare && calls ;;
  calls) calls ;;
  receive) receive ;;
  device) device ;;
  finish) finish ;;
  *) echo "usage: $0 stage|sources|prepare|calls|receive|device|finish (read the header of this script)" >&2; exit 2 ;;
esac
