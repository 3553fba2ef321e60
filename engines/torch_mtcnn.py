"""MTCNN with the frames kept on the torch backend's device: the GPU pipeline.

Each frame of a batch goes to the device once, as uint8. There, and only there: the pyramid
levels (PyTorch's area interpolation, the resampling of the reference MTCNN), P-Net and the
choice of its candidate cells, each frame's integral image and the R-Net / O-Net crops cut
from it, and the three networks. What comes back to the host after each network is the
candidates' numbers (boxes, scores, regressions: a few kB): NMS, regression and squaring run
there in ``engines.boxes``, the very code of the CPU path, so both paths give the same faces.
No transfer is made per face. The uploads stay for the batch in ``engines.torch_frames``,
where ``engines.torch_facenet.DeviceFaceNet`` cuts the FaceNet crops from them.

``engines.detectors.load_detector(..., backend="torch")`` (or ``DeviceMTCNN.load``) gives
this detector; the device is the engines' (see ``engines.torch_backend``: CUDA when
available, else the CPU, where the tests run it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engines import boxes as bx
from engines.base import Engine, EngineError
from engines.mtcnn import MTCNN
from engines.torch_backend import import_torch
from engines.torch_frames import DEVICE_FRAMES, DeviceFrame


def area_crops(sums: Any, windows_xyxy: Any, size: int) -> Any:
    """``engines.images.area_crops`` on the device: windows (K, 4) int64 (x0, y0, x1, y1, end
    exclusive, may leave the image) of a frame's integral image ``sums``, each resized to
    size x size by area averaging, zeros outside the image. Returns (K, C, size, size)."""
    torch = import_torch()
    height, width, channels = sums.shape[0] - 1, sums.shape[1] - 1, sums.shape[2]
    steps = torch.arange(size + 1, device=sums.device)

    def bins(start: Any, length: Any, limit: int) -> tuple[Any, Any, Any]:
        lo = start[:, None] + torch.div(
            steps[None, :-1] * length[:, None], size, rounding_mode="floor"
        )
        hi = start[:, None] + torch.div(
            steps[None, 1:] * length[:, None] + size - 1, size, rounding_mode="floor"
        )
        return lo.clamp(0, limit), hi.clamp(0, limit), hi - lo

    x0, y0, x1, y1 = windows_xyxy.unbind(1)
    ylo, yhi, ycount = bins(y0, (y1 - y0).clamp(min=1), height)
    xlo, xhi, xcount = bins(x0, (x1 - x0).clamp(min=1), width)
    flat = sums.reshape(-1, channels)

    def corner(rows: Any, columns: Any) -> Any:
        return flat[(rows[:, :, None] * (width + 1) + columns[:, None, :]).reshape(-1)]

    total = corner(yhi, xhi) - corner(ylo, xhi) - corner(yhi, xlo) + corner(ylo, xlo)
    count = (ycount[:, :, None] * xcount[:, None, :]).unsqueeze(-1)
    pixels = total.reshape(len(windows_xyxy), size, size, channels).float() / count
    return pixels.permute(0, 3, 1, 2)


def _normalise(pixels: Any) -> Any:
    return (pixels - 127.5) * (1 / 128.0)


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
        return [DEVICE_FRAMES.get(f, self.device, self._swap_rb) for f in frames]

    @staticmethod
    def _stack(pyramids: list[DeviceFrame], frames: np.ndarray) -> Any:
        """The frames of one P-Net call as one (N, 3, H, W) tensor, made once per call of
        ``detect`` (kept by the first frame's upload, which is this call's)."""
        key = tuple(int(i) for i in frames)
        stacks = pyramids[key[0]].stacks
        if key not in stacks:
            images = [pyramids[i].image for i in key]
            stacks[key] = images[0] if len(images) == 1 else import_torch().cat(images)
        return stacks[key]

    def _pnet_candidates(  # type: ignore[override]
        self,
        pyramids: list[DeviceFrame],
        frames: np.ndarray,
        size_hw: tuple[int, int],
        rows: tuple[int, int] | None,
        scale: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        torch = import_torch()
        with torch.inference_mode():
            level = torch.nn.functional.interpolate(
                self._stack(pyramids, frames), size=size_hw, mode="area"
            )
            if rows is not None:
                level = level[:, :, rows[0] : rows[1]]
            out = self._run(self.pnet, _normalise(level))
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

    def _infer_windows(  # type: ignore[override]
        self,
        engine: Engine,
        pyramids: list[DeviceFrame],
        windows: np.ndarray,
        frame: np.ndarray,
        size: int,
    ) -> dict[str, np.ndarray]:
        torch = import_torch()
        with torch.inference_mode():
            on_device = torch.from_numpy(np.ascontiguousarray(windows, np.int64)).to(self.device)
            blob = torch.empty((len(windows), 3, size, size), device=self.device)
            for f in np.unique(frame):
                mine = torch.from_numpy(np.flatnonzero(frame == f)).to(self.device)
                blob[mine] = _normalise(area_crops(pyramids[f].sums, on_device[mine], size))
            out = self._run(engine, blob)
            return {name: value.cpu().numpy() for name, value in out.items()}

    @staticmethod
    def _run(engine: Engine, blob: Any) -> dict[str, Any]:
        outputs = engine.infer_tensors([blob])  # type: ignore[attr-defined]
        return {spec.name: t for spec, t in zip(engine.outputs, outputs, strict=True)}
