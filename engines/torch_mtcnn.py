"""MTCNN with the frames kept on the torch backend's device: the GPU pipeline.

Each frame of a batch goes to the device once, as uint8. There, and only there: the frames'
integral images, the pyramid levels read from them (PyTorch's area interpolation, the
resampling of the reference MTCNN, exactly as the CPU path computes it), P-Net, the choice
of its candidate cells, their boxes and P-Net's NMS within each level, the R-Net / O-Net
crops, the three networks and every NMS (``engines.torch_boxes``: the arithmetic of
``engines.boxes``, so both paths give the same faces). P-Net runs once per level for all
the frames of a size (on a GPU), and its candidates of all levels are chosen at once: the
host waits for the device a few times per batch, not once per level and frame. What comes
back to the host is the candidates' numbers (a few kB per stage), for the box regression
and squaring in ``engines.boxes`` between the stages. No transfer is made per face. The
uploads stay for the batch in ``engines.torch_frames``, where
``engines.torch_facenet.DeviceFaceNet`` cuts the FaceNet crops from them.

``engines.detectors.load_detector(..., backend="torch")`` (or ``DeviceMTCNN.load``) gives
this detector; the device is the engines' (see ``engines.torch_backend``: CUDA when
available, else the CPU, where the tests run it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engines import boxes as bx
from engines import torch_boxes as tb
from engines.base import Engine, EngineError, Indices, batch_limit
from engines.mtcnn import MTCNN
from engines.mtcnn_base import Candidates, no_candidates

# "as" marks it this module's own: bench/device_ops.py sets it here to test the GPU limit on a CPU
from engines.mtcnn_calls import PNET_MAX_PIXELS as PNET_MAX_PIXELS
from engines.mtcnn_pnet import PNET_SCALE_NMS
from engines.torch_backend import import_torch
from engines.torch_frames import DEVICE_FRAMES, DeviceFrame, integrate

# On a GPU, pyramid-level pixels per P-Net call: one call per level for a batch of sixteen
# 1080p frames (the CPU keeps PNET_MAX_PIXELS, beyond which its caches thrash).
GPU_PNET_PIXELS = 16 * 1_200_000


class DeviceMTCNN(MTCNN):
    """``MTCNN`` whose image side runs on the device of its torch engines."""

    def __init__(self, pnet: Engine, rnet: Engine, onet: Engine, **kwargs: Any) -> None:
        for engine in (pnet, rnet, onet):
            if not hasattr(engine, "infer_tensors"):
                raise EngineError(
                    f"{type(engine).__name__}: the device pipeline needs the torch backend's "
                    "engines (infer_tensors)"
                )
        super().__init__(pnet, rnet, onet, **kwargs)
        self.device = pnet.device  # type: ignore[attr-defined]

    def _pyramids(self, frames: Sequence[np.ndarray]) -> list[DeviceFrame]:  # type: ignore[override]
        DEVICE_FRAMES.start_batch()  # the frames of earlier calls may have changed since
        pyramids = [DEVICE_FRAMES.get(f, self.device, self._swap_rb) for f in frames]
        by_size: dict[tuple[int, int], dict[int, int]] = {}
        for i, frame in enumerate(pyramids):  # (a frame given twice is integrated once)
            by_size.setdefault(frame.image_hw, {}).setdefault(id(frame), i)
        with import_torch().inference_mode():
            for group in by_size.values():
                members = [pyramids[i] for i in group.values()]
                members[0].stacks[tuple(map(id, members))] = integrate(members)
        return pyramids

    @staticmethod
    def _stacked_sums(pyramids: list[DeviceFrame], frames: Sequence[int] | np.ndarray) -> Any:
        """The integral images of ``frames`` as one (N, H+1, W+1, 3) tensor: the one they
        were made in, or a copy made once per call of ``detect``. (Kept by the uploads
        themselves, which two detectors given the same array share: hence keyed by them.)"""
        mine = [pyramids[int(i)] for i in frames]
        key = tuple(map(id, mine))
        stacks = mine[0].stacks
        if len(key) == 1 and key not in stacks:
            return mine[0].sums.unsqueeze(0)
        if key not in stacks:
            stacks[key] = import_torch().stack([frame.sums for frame in mine])
        return stacks[key]

    def _propose_same_size(  # type: ignore[override]
        self, pyramids: list[DeviceFrame], indices: list[int]
    ) -> Candidates:
        """P-Net over the pyramid of frames of one size, all on the device: each level of
        all the frames in as few calls as the pixel limit allows, the candidate cells of all
        levels chosen at once, their boxes and each level's NMS; one transfer back. With
        lanes (bands of levels, on the CPU), the host path's tiles instead."""
        if self._lanes:
            return super()._propose_same_size(pyramids, indices)  # type: ignore[arg-type]
        torch = import_torch()
        image_hw = pyramids[indices[0]].image_hw
        cfg = self.config
        scales = bx.pyramid_scales(image_hw, cfg.min_face_size, cfg.scale_factor)
        if not scales:  # frames smaller than the smallest face
            return no_candidates()
        limit = GPU_PNET_PIXELS if self.device.type == "cuda" else PNET_MAX_PIXELS
        with torch.inference_mode():
            sums = self._stacked_sums(pyramids, indices)
            probs, regs, calls = [], [], []  # calls: (level, first frame, map h, map w)
            for k, scale in enumerate(scales):
                size_hw = bx.scaled_size_hw(image_hw, scale)
                step = batch_limit(self.pnet, max(1, limit // (size_hw[0] * size_hw[1])))
                for first in range(0, len(indices), step):
                    out = self._run(
                        self.pnet, tb.normalise(*tb.level_sums(sums[first : first + step], size_hw))
                    )
                    prob = out["prob"][:, 1]
                    probs.append(prob.reshape(-1))
                    regs.append(out["reg"].permute(0, 2, 3, 1).reshape(-1, 4))
                    calls.append((k, first, prob.shape[1], prob.shape[2]))
            score = torch.cat(probs)
            cells = (score >= cfg.thresholds[0]).nonzero().squeeze(1)
            # which call, frame, row and column each cell is
            table = torch.tensor(calls, device=self.device)
            lengths = torch.tensor([len(p) for p in probs], device=self.device)
            ends = torch.cumsum(lengths, 0)
            call = torch.searchsorted(ends, cells, right=True)
            local = cells - (ends - lengths)[call]
            level, first, map_h, map_w = table[call].unbind(1)
            frame = first + torch.div(local, map_h * map_w, rounding_mode="floor")
            pixel = local % (map_h * map_w)
            ys, xs = torch.div(pixel, map_w, rounding_mode="floor"), pixel % map_w
            scale_of = torch.tensor(scales, dtype=torch.float32, device=self.device)[level]
            boxes = tb.pnet_boxes(xs, ys, score[cells], torch.cat(regs)[cells], scale_of)
            keep = tb.nms(boxes[:, :4], boxes[:, 4], PNET_SCALE_NMS, frame * len(scales) + level)
            boxes, frame = boxes[keep].cpu().numpy(), frame[keep].cpu().numpy()
        whose = np.asarray(indices, dtype=np.int64)[frame]
        return Candidates(boxes, boxes[:, 4].copy(), whose)

    def _pnet_candidates(  # type: ignore[override]
        self,
        pyramids: list[DeviceFrame],
        frames: np.ndarray,
        size_hw: tuple[int, int],
        rows: tuple[int, int] | None,
        scale: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """P-Net on one tile (with lanes): the host path's ``_pnet_candidates``."""
        torch = import_torch()
        with torch.inference_mode():
            level = tb.level_sums(self._stacked_sums(pyramids, frames), size_hw, rows)
            out = self._run(self.pnet, tb.normalise(*level))
            prob = out["prob"][:, 1]
            cells = (prob >= self.config.thresholds[0]).nonzero()  # (K, 3): frame, row, column
            index, ys, xs = cells.unbind(1)
            offsets = out["reg"].permute(0, 2, 3, 1)[index, ys, xs]
            # one transfer: cell numbers (exact in float32 below 2**24), score, regression
            score = prob[index, ys, xs].unsqueeze(1)
            found = torch.cat([cells.float(), score, offsets], 1).cpu().numpy()
        index, ys, xs = found[:, :3].astype(np.int64).T
        first_row = rows[0] // bx.PNET_STRIDE if rows else 0
        boxes = bx.pnet_boxes(xs, ys + first_row, found[:, 3], found[:, 4:], scale)
        return boxes, index

    def _nms(
        self,
        boxes_xyxy: np.ndarray,
        scores: np.ndarray,
        threshold: float,
        groups: np.ndarray | None = None,
        mode: str = "union",
        inclusive: bool = False,
    ) -> Indices:
        """``engines.torch_boxes.nms`` on the boxes' numbers, uploaded (a few kB)."""
        torch = import_torch()

        def up(values: np.ndarray) -> Any:
            return torch.from_numpy(np.ascontiguousarray(values)).to(self.device)

        with torch.inference_mode():
            keep = tb.nms(
                up(boxes_xyxy.astype(np.float64)),
                up(scores.astype(np.float32)),
                threshold,
                None if groups is None else up(groups.astype(np.int64)),
                mode,
                inclusive,
            )
            kept: Indices = keep.cpu().numpy()  # int64, as engines.boxes.nms gives
            return kept

    def _infer_crops(  # type: ignore[override]
        self,
        engine: Engine,
        pyramids: list[DeviceFrame],
        cand: Candidates,
        size: int,
        pad: bool = True,
    ) -> dict[str, Any]:
        """R-Net or O-Net on the candidates' crops, cut from the uploads: the outputs stay
        on the device until ``_joined`` brings those of all calls back in one copy."""
        windows = self._crop_windows(pyramids, cand)  # type: ignore[arg-type]
        with import_torch().inference_mode():
            return self._device_outputs(engine, pyramids, windows, cand.frame, size)

    def _joined(self, outputs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        torch = import_torch()
        with torch.inference_mode():
            return _to_host({name: torch.cat([o[name] for o in outputs]) for name in outputs[0]})

    def _infer_windows(  # type: ignore[override]
        self,
        engine: Engine,
        pyramids: list[DeviceFrame],
        windows: np.ndarray,
        frame: np.ndarray,
        size: int,
        pad: bool = True,
    ) -> dict[str, np.ndarray]:
        """(``pad`` is for CPU runtimes, which keep memory per input shape.)"""
        with import_torch().inference_mode():
            return _to_host(self._device_outputs(engine, pyramids, windows, frame, size))

    def _device_outputs(
        self,
        engine: Engine,
        pyramids: list[DeviceFrame],
        windows: np.ndarray,
        frame: np.ndarray,
        size: int,
    ) -> dict[str, Any]:
        """``engine`` on the windows of the frames, cut from their uploads: device tensors."""
        torch = import_torch()
        on_device = torch.from_numpy(np.ascontiguousarray(windows, np.int64)).to(self.device)
        # one gather per set of frames integrated together (one per size, as a rule)
        present, whose = np.unique(frame, return_inverse=True)
        held = [pyramids[f].in_stack for f in present]
        stacks = list({id(stack): stack for stack, _ in held}.values())
        stack_of = np.array([[s is stack for s in stacks].index(True) for stack, _ in held])
        position = torch.from_numpy(np.array([p for _, p in held])[whose]).to(self.device)
        if len(stacks) == 1:
            blob = tb.normalise(*tb.area_crops(stacks[0], position, on_device, size))
        else:
            blob = torch.empty((len(windows), 3, size, size), device=self.device)
            for k, stack in enumerate(stacks):
                mine = torch.from_numpy(np.flatnonzero(stack_of[whose] == k)).to(self.device)
                crops = tb.area_crops(stack, position[mine], on_device[mine], size)
                blob[mine] = tb.normalise(*crops)
        return self._run(engine, blob)

    @staticmethod
    def _run(engine: Engine, blob: Any) -> dict[str, Any]:
        outputs = engine.infer_tensors([blob])  # type: ignore[attr-defined]
        return {spec.name: t for spec, t in zip(engine.outputs, outputs, strict=True)}


def _to_host(outputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """A network's outputs (device tensors of one batch) as numpy arrays, in one copy: the
    host waits for the device once, not once per output."""
    torch = import_torch()
    rows = len(next(iter(outputs.values())))
    widths = [int(np.prod(t.shape[1:])) for t in outputs.values()]
    parts = [t.reshape(rows, width) for t, width in zip(outputs.values(), widths, strict=True)]
    flat = torch.cat(parts, 1).cpu().numpy()
    ends = np.cumsum(widths)
    return {
        name: flat[:, end - width : end].reshape(t.shape)
        for (name, t), width, end in zip(outputs.items(), widths, ends, strict=True)
    }
