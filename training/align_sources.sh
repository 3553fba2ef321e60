#!/usr/bin/env bash
# Align folder-per-identity photo collections for training (used by gpu_job.sh and
# cpu_job.sh): each SOURCE into .gpu_data/aligned/<source name> (resumable: done crops are
# skipped), then each identity linked into LINKS as <source name>_<identity>, so the same
# name in two sources stays two identities. LFW is refused: it is the validation set.
#
#   training/align_sources.sh LINKS SIZE MARGIN JPEG_QUALITY SOURCE...
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 5 ] || { echo "usage: $0 LINKS SIZE MARGIN JPEG_QUALITY SOURCE..." >&2; exit 2; }
links=$1 size=$2 margin=$3 quality=$4
shift 4
PY=${PY:-.venv/bin/python}
mkdir -p "$links"
grep -qx "/.gpu_data/" .git/info/exclude 2>/dev/null || echo "/.gpu_data/" >> .git/info/exclude
for src in "$@"; do
  case "$src" in *lfw*) echo "refusing to train on LFW ($src): it is the validation set" >&2; exit 2 ;; esac
  name=$(basename "$src")
  "$PY" -m training.cli_facenet align "$src" ".gpu_data/aligned/$name" \
    --image-size "$size" --margin "$margin" --format jpg --jpeg-quality "$quality"
  for person in ".gpu_data/aligned/$name"/*/; do
    ln -sfn "$(realpath "$person")" "$links/${name}_$(basename "$person")"
  done
done
