"""FaceNet with the face crops cut on the torch backend's device.

``FaceNet`` cuts each face on the host (``engines.align``, OpenCV) and sends the crops to the
engine. Here the frames are already on the device (``engines.torch_frames``: the device
MTCNN's upload of the same batch, else one upload per frame), and everything between the
boxes and the embeddings happens there: one sampling grid per face (the margin crop or the
5-landmark warp, as the host code cuts it: bilinear, edge pixels repeated inside the margin
window, zeros outside the warp), rounding to whole pixel values as the host's uint8 crops
have, the channel order and normalisation of the model's sidecar, flip averaging, and the
network. What crosses to the device per batch is the boxes or the warps (a few numbers per
face); what comes back is the embeddings. No transfer is made per face.

``engines.detectors.load_facenet(..., backend="torch")`` (or ``DeviceFaceNet.load``) gives
this class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engines.align import margin_box, reference_landmarks, similarity_matrix
from engines.base import Engine, EngineError, Floats, ModelMetadata
from engines.facenet import FaceNet, FacePick
from engines.torch_backend import import_torch
from engines.torch_frames import DEVICE_FRAMES


def sampling_maps(
    picks: Sequence[FacePick], alignment: str, margin: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Where each crop pixel comes from in its frame, as a few numbers per face: ``maps``
    (K, 2, 3), the affine map from a crop pixel (column, row, 1) to frame coordinates (x, y;
    pixel centres at integers), and ``bounds`` (K, 4) (x_lo, y_lo, x_hi, y_hi) to clamp
    them to.

    ``margin``: the window of ``engines.align.margin_box`` resized as OpenCV's INTER_LINEAR
    does (half-pixel centres, no antialiasing), clamped to the window (its edge pixels
    repeated). ``similarity``: the inverse of the warp that puts the landmarks on the
    template, as ``cv2.warpAffine`` maps each output pixel; not clamped (zeros outside).
    """
    maps = np.zeros((len(picks), 2, 3), np.float64)
    bounds = np.tile(np.array([-np.inf, -np.inf, np.inf, np.inf]), (len(picks), 1))
    for k, (image, faces, index) in enumerate(picks):
        if alignment == "similarity":
            forward = similarity_matrix(
                np.asarray(faces.landmarks[index]).reshape(5, 2), reference_landmarks(size)
            )
            maps[k] = np.linalg.inv(np.vstack([forward, [0.0, 0.0, 1.0]]))[:2]
            continue
        x0, y0, x1, y1 = margin_box(faces.bbox_xyxy[index], image.shape[:2], margin).tolist()
        if x1 <= x0 or y1 <= y0:
            raise ValueError(
                f"face box {list(faces.bbox_xyxy[index])} lies outside the "
                f"{image.shape[1]}x{image.shape[0]} image"
            )
        sx, sy = (x1 - x0) / size, (y1 - y0) / size
        maps[k] = [[sx, 0.0, x0 + 0.5 * sx - 0.5], [0.0, sy, y0 + 0.5 * sy - 0.5]]
        bounds[k] = [x0, y0, x1 - 1, y1 - 1]
    return maps, bounds


class DeviceFaceNet(FaceNet):
    """``FaceNet`` whose crops are cut, normalised and embedded on its torch engine's device."""

    def __init__(self, engine: Engine, meta: ModelMetadata, **kwargs: Any) -> None:
        if not hasattr(engine, "infer_tensors"):
            raise EngineError(
                f"{type(engine).__name__}: the device FaceNet needs the torch backend's engine "
                "(infer_tensors)"
            )
        super().__init__(engine, meta, **kwargs)
        self.device = engine.device  # type: ignore[attr-defined]
        torch = import_torch()
        # (1 or 3, 1, 1): a value per channel, in the model's channel order, or one for all
        self._mean = torch.tensor(np.asarray(meta.mean, np.float32), device=self.device)
        self._mean = self._mean.reshape(-1, 1, 1)
        self._std = torch.tensor(np.asarray(meta.std, np.float32), device=self.device)
        self._std = self._std.reshape(-1, 1, 1)

    def embed_picks(self, picks: Sequence[FacePick]) -> Floats:
        if not picks:
            return np.zeros((0, self.embedding_size), np.float32)
        torch = import_torch()
        with torch.inference_mode():
            x = self._normalise(self.crops(picks))
            if self.flip:
                both = self._infer(torch.cat([x, x.flip(3)]))
                embeddings = both[: len(x)] + both[len(x) :]
            else:
                embeddings = self._infer(x)
            unit: Floats = torch.nn.functional.normalize(embeddings, dim=1).cpu().numpy()
            return unit  # float32: the engine's outputs are (TorchEngine.infer_tensors)

    def crops(self, picks: Sequence[FacePick]) -> Any:
        """The picked faces cut from their frames on the device: (K, 3, S, S) float32 RGB
        pixel values, whole numbers as the host's uint8 crops are."""
        torch = import_torch()
        height, width = self.image_size_hw
        if height != width:
            raise EngineError(
                f"{self.meta.name}: alignment needs a square input, got {height}x{width}"
            )
        maps, bounds = sampling_maps(picks, self.alignment, self.margin, height)
        with torch.inference_mode():
            steps = torch.arange(height, device=self.device, dtype=torch.float32)
            maps_d = torch.from_numpy(maps.astype(np.float32)).to(self.device)
            bounds_d = torch.from_numpy(bounds.astype(np.float32)).to(self.device)
            rows = steps[None, :, None, None]  # (1, S, 1, 1)
            columns = steps[None, None, :, None]  # (1, 1, S, 1)
            m = maps_d[:, None, None]  # (K, 1, 1, 2, 3); broadcast, no matmul (TF32-proof)
            points = m[..., 0] * columns + m[..., 1] * rows + m[..., 2]  # (K, S, S, 2): x, y
            points = torch.maximum(points, bounds_d[:, None, None, :2])
            points = torch.minimum(points, bounds_d[:, None, None, 2:])
            out = torch.empty((len(picks), 3, height, width), device=self.device)
            by_frame: dict[int, list[int]] = {}
            for k, (image, _, _) in enumerate(picks):
                by_frame.setdefault(id(image), []).append(k)
            for members in by_frame.values():
                frame = DEVICE_FRAMES.get(picks[members[0]][0], self.device, rgb=True)
                out[members] = self._sample(frame.image, points[members], frame.image_hw)
            return out

    @staticmethod
    def _sample(image: Any, points: Any, image_hw: tuple[int, int]) -> Any:
        """Bilinear samples (K, 3, S, S) of ``image`` (1, 3, H, W) at pixel ``points``
        (K, S, S, 2), zero outside the frame, rounded to whole values as uint8 crops are."""
        torch = import_torch()
        count, size = points.shape[0], points.shape[1]
        height, width = image_hw
        scale = torch.tensor([2.0 / width, 2.0 / height], device=points.device)
        normalised = (points + 0.5) * scale - 1.0  # align_corners=False coordinates
        samples = torch.nn.functional.grid_sample(
            image,
            normalised.reshape(1, count * size, size, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        crops = samples.reshape(3, count, size, size).transpose(0, 1)
        return crops.round().clamp(0, 255)

    def _normalise(self, rgb: Any) -> Any:
        """RGB pixel values (K, 3, S, S) -> the model's input, as ``FaceNet.preprocess``."""
        x = rgb if self.meta.channel_order.upper() == "RGB" else rgb.flip(1)
        if self.prewhiten:
            flat = x.reshape(len(x), -1)
            mean = flat.mean(1)
            std = flat.std(1, correction=0).clamp(min=1.0 / float(flat.shape[1]) ** 0.5)
            return (x - mean[:, None, None, None]) / std[:, None, None, None]
        return (x - self._mean) / self._std

    def _infer(self, x: Any) -> Any:
        """The engine over ``x`` in chunks of at most ``max_batch`` (zero-padded to a fixed
        batch), device tensors in and out."""
        torch = import_torch()
        output = [o.name for o in self.engine.outputs].index(self.output_name)
        out = []
        for start in range(0, len(x), self.max_batch):
            chunk = x[start : start + self.max_batch]
            real = len(chunk)
            if self.fixed_batch is not None and real < self.fixed_batch:
                pad = chunk.new_zeros((self.fixed_batch - real, *chunk.shape[1:]))
                chunk = torch.cat([chunk, pad])
            result = self.engine.infer_tensors([chunk.contiguous()])  # type: ignore[attr-defined]
            out.append(result[output][:real].reshape(real, -1))
        return torch.cat(out)
