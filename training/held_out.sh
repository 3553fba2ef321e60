# The identities no training run may see, sourced by cpu_job.sh and gpu_job.sh: the last
# HOLD_OUT (default 40) of the shared CelebA subset, by name (the recognition tests,
# tests/unit/test_identify_cli.py, enroll and identify people the model never saw), and
# celeba200_celeb_181, the same person as one of them (7429) in github:Nikhil4902/CelebA_Dataset.
# Names as training/align_sources.sh links them: <source folder>_<identity>.
#   held_out_identities DATA   # one name a line
held_out_identities() {
  ls "$1/celeba" | sort | tail -n "${HOLD_OUT:-40}" | sed 's/^/celeba_/'
  echo celeba200_celeb_181
}
