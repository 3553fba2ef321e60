"""Differences between groups of people: how often the shipped MTCNN misses a face, and how
often the shipped FaceNet model takes two different people for one, per group of UTKFace's
labels (race x gender, and age bands).

UTKFace (non-commercial research use: never commit its images) is 23,707 aligned 200x200
colour faces named ``AGE_GENDER_RACE_DATE.jpg.chip.jpg`` (gender 0 male, 1 female; race 0
White, 1 Black, 2 Asian, 3 Indian, 4 Others); the few names that do not follow it are
skipped and counted. Each face is pasted, unscaled, in the middle of a 480x480 mid-grey
frame (MTCNN's box about 170 px, a third of the frame, as a camera near a door sees a face)
and once more shrunk to ``--small-chip`` pixels (a box of about 40 px, the smallest face
enroll takes), and the frames go through the daemon's pipeline: MTCNN at its defaults
(20 px, 0.6/0.7/0.7, 0.709), then the face found on the chip is aligned and embedded by
FaceNet (from the large frame), as the scheduler does.

1. Detection: a face is missed when MTCNN finds no face whose centre lies on the chip.
2. False matches: UTKFace has no identities, so every pair of different images counts as
   two people (an impostor pair). Pairs nearer than ``--near-duplicate`` (squared L2) are the
   same photo twice (re-encoded, re-cropped) and are dropped and counted; different photos of
   one person cannot be told apart and stay in, so the rates are upper bounds. Per group:
   the pairs within it, the false match rate at the threshold a new gallery starts at (the
   sidecar's: 0.154 for the shipped model, squared L2 as the gallery computes it) and the
   threshold that keeps it to 1e-3; race x gender also for ages 20-59 alone (children are
   matched far more often); then pairs across groups (each pair of races). No genuine
   pairs: false non-match rates are not measured.

    .venv/bin/python bench/bench_fairness.py [--data DIR] [--per-group N] [--seed 0]
        [--threads 2] [--embeddings CACHE.npz] [--out OUT.json]

It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from script_support import CACHE, out_argument  # noqa: E402  (bench/, the script's folder)

DEFAULT_DATA = REPO / ".gpu_data" / "sources" / "utkface" / "unlabeled"
DEFAULT_OUT = CACHE / "fairness.json"  # not bench/results/: keeps the committed one
RACES = ("White", "Black", "Asian", "Indian", "Others")
GENDERS = ("male", "female")
AGE_BANDS = ((0, 12), (13, 19), (20, 39), (40, 59), (60, 200))
ADULT_BANDS = (2, 3)  # 20-59
NAME = re.compile(r"(\d+)_([01])_([0-4])_\d+\.jpg\.chip\.jpg")
FRAME = 480
GREY = 128
BIN = 0.001  # squared L2 histogram step, over all distances there are (0 to 4)
BINS = 4001
TARGET_FMR = 1e-3


@dataclass(frozen=True)
class Face:
    path: Path
    age: int
    gender: int
    race: int

    @property
    def band(self) -> int:
        return next(k for k, (lo, hi) in enumerate(AGE_BANDS) if lo <= self.age <= hi)

    @property
    def cell(self) -> int:
        """race x gender x age band, the smallest group: 0..49."""
        return (self.race * len(GENDERS) + self.gender) * len(AGE_BANDS) + self.band


def band_name(k: int) -> str:
    lo, hi = AGE_BANDS[k]
    return f"{lo}+" if hi >= 200 else f"{lo}-{hi}"


def read_faces(folder: Path, per_group: int, seed: int) -> tuple[list[Face], list[str]]:
    """The faces (at most ``per_group`` of each race x gender, drawn with ``seed``) and the
    file names that do not follow UTKFace's naming."""
    faces, odd = [], []
    for path in sorted(folder.glob("*.jpg")):
        m = NAME.fullmatch(path.name)
        if m is None:
            odd.append(path.name)
            continue
        faces.append(Face(path, int(m[1]), int(m[2]), int(m[3])))
    if per_group:
        rng = np.random.default_rng(seed)
        kept: list[Face] = []
        for race in range(len(RACES)):
            for gender in range(len(GENDERS)):
                group = [f for f in faces if (f.race, f.gender) == (race, gender)]
                take = sorted(rng.permutation(len(group))[:per_group])
                kept += [group[k] for k in take]
        faces = kept
    return faces, odd


def framed(chip: np.ndarray, side: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The chip at ``side`` pixels in the middle of a grey frame, and where it lies (xyxy)."""
    if chip.shape[:2] != (side, side):
        chip = cv2.resize(chip, (side, side), interpolation=cv2.INTER_AREA)
    frame = np.full((FRAME, FRAME, 3), GREY, np.uint8)
    top = (FRAME - side) // 2
    frame[top : top + side, top : top + side] = chip
    return frame, (top, top, top + side, top + side)


def on_chip(found: Any, where: tuple[int, int, int, int]) -> int | None:
    """The best-scoring face whose box centre lies on the chip, or None."""
    centres = (found.bbox_xyxy[:, :2] + found.bbox_xyxy[:, 2:]) / 2
    x0, y0, x1, y1 = where
    inside = (centres[:, 0] >= x0) & (centres[:, 0] < x1) & (centres[:, 1] >= y0)
    inside &= centres[:, 1] < y1
    if not inside.any():
        return None
    return int(np.argmax(np.where(inside, found.score, -1.0)))


def run_models(faces: list[Face], args: argparse.Namespace) -> dict[str, Any]:
    """Per face: found large, found small, the embedding (NaN where missed large)."""
    from engines.facenet import FaceNet
    from engines.mtcnn import MTCNN

    detector = MTCNN.load(REPO / "models" / "mtcnn", threads=args.threads)
    facenet = FaceNet.load(args.model, threads=args.threads, precision="fp32")
    large, small = np.zeros(len(faces), bool), np.zeros(len(faces), bool)
    vectors = np.full((len(faces), facenet.embedding_size), np.nan, np.float32)
    batch = 4  # faces: 8 frames a detect call, the lanes' batch
    progress = tqdm(total=len(faces), desc="faces", unit="face")
    for start in range(0, len(faces), batch):
        frames, places = [], []
        for face in faces[start : start + batch]:
            chip = cv2.imread(str(face.path))
            if chip is None:
                raise SystemExit(f"{face.path}: cannot read the image")
            for side in (chip.shape[0], args.small_chip):
                frame, where = framed(chip, side)
                frames.append(frame)
                places.append(where)
        found = detector.detect(frames)
        picks = []
        for k in range(len(frames) // 2):
            big = on_chip(found[2 * k], places[2 * k])
            small[start + k] = on_chip(found[2 * k + 1], places[2 * k + 1]) is not None
            if big is not None:
                large[start + k] = True
                picks.append((frames[2 * k], found[2 * k], big))
        if picks:
            rows = start + np.flatnonzero(large[start : start + batch])
            vectors[rows] = facenet.embed_picks(picks)
        progress.update(len(frames) // 2)
    progress.close()
    return {"large": large, "small": small, "vectors": vectors, "runs_as": facenet.runs_as}


def pair_histograms(vectors: np.ndarray, cells: np.ndarray) -> dict[str, Any]:
    """Histograms of the squared L2 distances of all pairs, per unordered pair of cells
    (``hist[index[a, b]]``)."""
    n_cells = len(RACES) * len(GENDERS) * len(AGE_BANDS)
    index = np.zeros((n_cells, n_cells), np.int64)
    a, b = np.triu_indices(n_cells)
    index[a, b] = index[b, a] = np.arange(len(a))
    hist = np.zeros(len(a) * BINS, np.int64)
    for start in tqdm(range(0, len(vectors), 512), desc="pairs"):
        rows = vectors[start : start + 512]
        dist = np.maximum(2.0 - 2.0 * rows @ vectors[start:].T, 0.0)
        later = (
            np.arange(start, len(vectors))[None, :] > np.arange(start, start + len(rows))[:, None]
        )
        bins = np.minimum((dist / BIN).astype(np.int64), BINS - 1)
        which = index[cells[start : start + len(rows)][:, None], cells[None, start:]]
        hist += np.bincount((which * BINS + bins)[later], minlength=len(hist))
    return {"hist": hist.reshape(len(a), BINS), "index": index}


def rates(hist: np.ndarray, near: float, threshold: float) -> dict[str, Any]:
    """False match figures of one histogram of impostor distances."""
    drop = round(near / BIN)
    counts = hist[drop:]
    pairs = int(counts.sum())
    below = np.concatenate([[0], np.cumsum(counts)])  # below[k]: pairs under (drop + k) * BIN
    false = int(below[round(threshold / BIN) - drop]) if pairs else 0
    allowed = np.flatnonzero(below <= TARGET_FMR * pairs)
    return {
        "pairs": pairs,
        "near_duplicates_dropped": int(hist[:drop].sum()),
        "false_matches": false,
        "fmr_at_threshold": false / pairs if pairs else None,
        "threshold_for_fmr_1e-3": round((allowed[-1] + drop) * BIN, 3) if pairs else None,
    }


def group_figures(
    faces: list[Face], found: dict[str, Any], pairs: dict[str, Any], near: float, threshold: float
) -> dict[str, Any]:
    """Detection and false match figures per race x gender and per age band, and all."""
    groups: dict[str, np.ndarray] = {}
    race = np.array([f.race for f in faces])
    gender = np.array([f.gender for f in faces])
    band = np.array([f.band for f in faces])
    for r, rname in enumerate(RACES):
        for g, gname in enumerate(GENDERS):
            groups[f"{rname} {gname}"] = (race == r) & (gender == g)
    for k in range(len(AGE_BANDS)):
        groups[f"age {band_name(k)}"] = band == k
    groups["all"] = np.ones(len(faces), bool)
    embedded = found["large"]
    cells = np.array([f.cell for f in faces])[embedded]
    out: dict[str, Any] = {}
    for name, members in groups.items():
        inside = np.unique(cells[members[embedded]])
        out[name] = {
            "images": int(members.sum()),
            "missed_large": int((members & ~found["large"]).sum()),
            "missed_small": int((members & ~found["small"]).sum()),
            "embedded": int((members & embedded).sum()),
            **rates(between(pairs, inside, inside), near, threshold),
        }
        if not name.startswith(("age", "all")):  # children are matched far more: without them
            adults = inside[np.isin(inside % len(AGE_BANDS), ADULT_BANDS)]
            out[name]["ages_20_59"] = rates(between(pairs, adults, adults), near, threshold)
    return out


def between(pairs: dict[str, Any], one: np.ndarray, two: np.ndarray) -> np.ndarray:
    """The distance histogram of the pairs of an image of cells ``one`` and one of ``two``."""
    hist: np.ndarray = pairs["hist"][np.unique(pairs["index"][np.ix_(one, two)])].sum(axis=0)
    return hist


def across_races(
    faces: list[Face], embedded: np.ndarray, pairs: dict[str, Any], near: float, threshold: float
) -> dict[str, Any]:
    """False match figures of the pairs of two different races (either gender, any age)."""
    cells = np.unique([f.cell for f, e in zip(faces, embedded, strict=True) if e])
    per_race = len(GENDERS) * len(AGE_BANDS)
    out: dict[str, Any] = {}
    for r1 in range(len(RACES)):
        for r2 in range(r1 + 1, len(RACES)):
            one = cells[cells // per_race == r1]
            two = cells[cells // per_race == r2]
            out[f"{RACES[r1]} / {RACES[r2]}"] = rates(between(pairs, one, two), near, threshold)
    return out


def shown(figures: dict[str, Any] | None) -> str:
    """False match rate and the threshold for 1e-3, as the table shows them."""
    if not figures or not figures["pairs"]:
        return f"{'-':>9} {'-':>6}"
    return f"{figures['fmr_at_threshold']:>9.2e} {figures['threshold_for_fmr_1e-3']:>6.3f}"


def share(part: int, whole: int) -> str:
    """``part`` of ``whole`` in per cent; '-' for a group without images (a race and gender
    that a small or filtered set does not have)."""
    return f"{part / whole:.1%}" if whole else "-"


def shown_path(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (the results are committed)."""
    full = path.resolve()
    return str(full.relative_to(REPO)) if full.is_relative_to(REPO) else str(path)


def table(result: dict[str, Any]) -> str:
    at = f"FMR@{result['config']['threshold']:.3f} thr@1e-3"
    rows = [
        f"{'group':<14} {'images':>6} {'missed':>6} {'at 40px':>7} {'pairs':>9} {'dup':>4} "
        f"{at:>16} {'ages 20-59 only':>16}"
    ]
    for name, g in result["groups"].items():
        rows.append(
            f"{name:<14} {g['images']:>6} {share(g['missed_large'], g['images']):>6} "
            f"{share(g['missed_small'], g['images']):>7} {g['pairs']:>9} "
            f"{g['near_duplicates_dropped']:>4} {shown(g)} "
            f"{shown(g.get('ages_20_59')) if 'ages_20_59' in g else ''}"
        )
    rows += ["", f"{'across races':<14} {'pairs':>9} {at:>16}"]
    for name, a in result["across_races"].items():
        rows.append(f"{name:<14} {a['pairs']:>9} {shown(a)}")
    return "\n".join(rows)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="UTKFace's folder of chips (default: where the training data is prepared; "
        "../shared/data/README.md says where to get it)",
    )
    p.add_argument("--model", type=Path, default=REPO / "models" / "facenet" / "facenet.onnx")
    p.add_argument("--per-group", type=int, default=0, help="at most N per race x gender (0: all)")
    p.add_argument("--seed", type=int, default=0, help="the draw of --per-group")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--small-chip", type=int, default=48, help="chip side of the small face, px")
    p.add_argument(
        "--near-duplicate",
        type=float,
        default=0.02,
        help="pairs nearer than this (squared L2) are one photo twice: dropped (default 0.02)",
    )
    p.add_argument("--embeddings", type=Path, help="keep the detections and embeddings here")
    out_argument(p, DEFAULT_OUT.name)
    return p


def embeddings(faces: list[Face], args: argparse.Namespace) -> dict[str, Any]:
    """The detections and embeddings of ``faces``: read from --embeddings when it is there,
    else computed (and kept there when it is given)."""
    if args.embeddings and args.embeddings.is_file():
        found = dict(np.load(args.embeddings))
        found["runs_as"] = str(found["runs_as"])
    else:
        found = run_models(faces, args)
        if args.embeddings:
            np.savez(args.embeddings, **found)
    return found


def fairness(
    args: argparse.Namespace, faces: list[Face], odd: list[str], found: dict[str, Any]
) -> dict[str, Any]:
    """The results: how the run was set up, each group's figures and those across races."""
    from engines.facenet import DEFAULT_THRESHOLD, checked_metadata, starting_threshold

    threshold = starting_threshold(checked_metadata(args.model).extra) or DEFAULT_THRESHOLD
    embedded = found["large"]
    cells = np.array([f.cell for f in faces])[embedded]
    pairs = pair_histograms(found["vectors"][embedded], cells)
    return {
        "config": {
            "data": str(args.data),
            "skipped_names": odd,
            "per_group": args.per_group,
            "seed": args.seed,
            "frame": f"{FRAME}x{FRAME}, grey {GREY}, the chip in the middle",
            "small_chip_px": args.small_chip,
            "model": shown_path(args.model),
            "facenet_runs_as": found["runs_as"],
            "threshold": threshold,
            "near_duplicate": args.near_duplicate,
            "age_bands": [band_name(k) for k in range(len(AGE_BANDS))],
        },
        "groups": group_figures(faces, found, pairs, args.near_duplicate, threshold),
        "across_races": across_races(faces, embedded, pairs, args.near_duplicate, threshold),
    }


def main() -> int:
    args = parser().parse_args()
    faces, odd = read_faces(args.data, args.per_group, args.seed)
    if not faces:
        raise SystemExit(f"{args.data}: no UTKFace images (AGE_GENDER_RACE_DATE.jpg.chip.jpg)")
    result = fairness(args, faces, odd, embeddings(faces, args))
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
