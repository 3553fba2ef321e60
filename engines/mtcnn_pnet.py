"""MTCNN's stage 1: P-Net over each frame's image pyramid (in tiles spread over the lanes),
or only around the faces just seen in its camera (``engines.mtcnn.MTCNN`` is built on it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from engines import boxes as bx
from engines.base import CROPS_PER_CALL, batch_limit
from engines.images import AreaPyramid
from engines.mtcnn_base import Candidates, MTCNNBase, concat_candidates, no_candidates
from engines.mtcnn_calls import PNetTile, pnet_tiles

if TYPE_CHECKING:
    from typing_extensions import Self

PNET_SCALE_NMS = 0.5  # within one scale of one frame (IoU)
PNET_FRAME_NMS = 0.7  # across the scales of one frame (IoU)


class PNetSearch(MTCNNBase):
    """Stage 1 of ``engines.mtcnn.MTCNN``: the candidate boxes P-Net proposes."""

    def _propose(self, pyramids: list[AreaPyramid], indices: list[int]) -> Candidates:
        """P-Net over the whole pyramid of the frames ``indices``."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for i in indices:
            by_size.setdefault(pyramids[i].image_hw, []).append(i)
        parts = [self._propose_same_size(pyramids, idx) for idx in by_size.values()]
        cand = concat_candidates(parts)
        keep = self._nms(cand.boxes[:, :4], cand.score, PNET_FRAME_NMS, groups=cand.frame)
        return cand.take(keep)

    def _propose_same_size(self, pyramids: list[AreaPyramid], indices: list[int]) -> Candidates:
        """P-Net on frames of one size, in tiles (``mtcnn_calls.pnet_tiles``) spread over
        the lanes.

        Returns boxes (K, 9) in frame pixels with their score and P-Net's regression.
        """
        image_hw = pyramids[indices[0]].image_hw
        cfg = self.config
        scales = bx.pyramid_scales(image_hw, cfg.min_face_size, cfg.scale_factor)
        tiles = pnet_tiles(self.pnet, image_hw, scales, indices, len(self._lanes) + 1)

        def run(lane: Self, part: list[PNetTile]) -> list[Candidates]:
            found = []
            for tile in part:
                size_hw = bx.scaled_size_hw(image_hw, scales[tile.scale])
                rows = None
                if tile.map_rows is not None:
                    rows = bx.pnet_band(size_hw[0], *tile.map_rows)
                boxes, local = lane._pnet_candidates(
                    pyramids, tile.frames, size_hw, rows, scales[tile.scale]
                )
                cand = Candidates(boxes, boxes[:, 4].copy(), tile.frames[local])
                found.append(cand if rows else self._level_nms(cand))
            return found

        per_tile = self._spread(tiles, PNetTile.cost, run)
        # The bands of a level are put together before their NMS (whole levels had theirs).
        banded = {tile.scale for tile in tiles if tile.map_rows}
        parts = [cand for tile, cand in zip(tiles, per_tile, strict=True) if not tile.map_rows]
        for k in sorted(banded):
            mine = [cand for tile, cand in zip(tiles, per_tile, strict=True) if tile.scale == k]
            parts.append(self._level_nms(concat_candidates(mine)))
        return concat_candidates(parts) if parts else no_candidates()

    def _pnet_candidates(
        self,
        pyramids: list[AreaPyramid],
        frames: np.ndarray,
        size_hw: tuple[int, int],
        rows: tuple[int, int] | None,
        scale: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """P-Net on the pyramid level ``size_hw`` of ``frames`` (its level rows ``rows``
        only, when given): ``bx.pnet_candidates``' boxes and their index into ``frames``."""
        levels = [pyramids[i].level_sums(size_hw, rows) for i in frames]
        blob = np.empty((len(levels), 3, *levels[0][1].shape), np.float32)
        for image, (sums, area) in zip(blob, levels, strict=True):
            self._normalise(sums, area, out=image)
        out = self.pnet.infer({"image": blob})
        first_row = rows[0] // bx.PNET_STRIDE if rows else 0
        return bx.pnet_candidates(
            out["reg"], out["prob"][:, 1], scale, self.config.thresholds[0], first_row
        )

    def _propose_around(
        self, pyramids: list[AreaPyramid], priors: dict[int, np.ndarray]
    ) -> Candidates:
        """P-Net on a square region ``bx.ROI_SIDE`` face sizes wide around each prior face,
        at each ``bx.ROI_CANVAS`` size: the regions of all frames in as few calls as the
        engine takes."""
        frame = np.concatenate([np.full(len(b), i, np.int64) for i, b in priors.items()])
        square = bx.square(np.concatenate([b[:, :4] for b in priors.values()]).astype(np.float32))
        half = (square[:, 2] - square[:, 0]) * bx.ROI_SIDE / 2
        cx, cy = (square[:, 0] + square[:, 2]) / 2, (square[:, 1] + square[:, 3]) / 2
        windows = np.round(np.stack([cx - half, cy - half, cx + half, cy + half], 1))
        windows = windows.astype(np.int64)
        side = np.maximum(windows[:, 2] - windows[:, 0], 1).astype(np.float32)
        found: list[np.ndarray] = []
        whose: list[np.ndarray] = []
        step = batch_limit(self.pnet, CROPS_PER_CALL)  # regions per P-Net call
        for canvas in bx.ROI_CANVAS:
            parts = []
            for start in range(0, len(windows), step):
                part = slice(start, start + step)
                parts.append(
                    self._infer_windows(self.pnet, pyramids, windows[part], frame[part], canvas)
                )
            out = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
            boxes, region = bx.pnet_candidates(
                out["reg"], out["prob"][:, 1], 1.0, self.config.thresholds[0]
            )
            keep = self._nms(boxes[:, :4], boxes[:, 4], PNET_SCALE_NMS, groups=region)
            boxes, region = boxes[keep], region[keep]
            # canvas pixels -> frame pixels
            boxes[:, :4] = boxes[:, :4] * (side[region] / canvas)[:, None]
            boxes[:, :4] += windows[region][:, [0, 1, 0, 1]]
            found.append(boxes)
            whose.append(frame[region])
        boxes = np.concatenate(found)
        cand = Candidates(boxes, boxes[:, 4].copy(), np.concatenate(whose))
        keep = self._nms(cand.boxes[:, :4], cand.score, PNET_FRAME_NMS, groups=cand.frame)
        return cand.take(keep)

    def _level_nms(self, cand: Candidates) -> Candidates:
        """P-Net's NMS within one pyramid level of each frame."""
        return cand.take(self._nms(cand.boxes[:, :4], cand.score, PNET_SCALE_NMS, cand.frame))
