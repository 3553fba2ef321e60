#!/usr/bin/env bash
# Align folder-per-identity photo collections for training (used by gpu_job.sh and
# cpu_job.sh): each SOURCE into $ALIGNED/<source name> (default .gpu_data/aligned;
# resumable: done crops are skipped), then each identity linked into LINKS as <source
# name>_<identity>, so the same name in two sources stays two identities. LFW is refused:
# it is the validation set. ALIGN_ARGS: more `facewatch train align` options (e.g.
# "--template models/facenet/facenet.onnx").
#
#   training/align_sources.sh LINKS SIZE MARGIN JPEG_QUALITY SOURCE...
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 5 ] || { echo "usage: $0 LINKS SIZE MARGIN JPEG_QUALITY SOURCE..." >&2; exit 2; }
links=$1 size=$2 margin=$3 quality=$4
shift 4
PY=${PY:-.venv/bin/python}
aligned=${ALIGNED:-.gpu_data/aligned}
mkdir -p "$links"
grep -qx "/.gpu_data/" .git/info/exclude 2>/dev/null || echo "/.gpu_data/" >> .git/info/exclude
for src in "$@"; do
  case "$src" in *lfw*) echo "refusing to train on LFW ($src): it is the validation set" >&2; exit 2 ;; esac
  name=$(basename "$src")
  # shellcheck disable=SC2086
  "$PY" -m training.cli_facenet align "$src" "$aligned/$name" \
    --image-size "$size" --margin "$margin" --format jpg --jpeg-quality "$quality" ${ALIGN_ARGS:-}
  for person in "$aligned/$name"/*/; do
    ln -sfn "$(realpath "$person")" "$links/${name}_$(basename "$person")"
  done
done
