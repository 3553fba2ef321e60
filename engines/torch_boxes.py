"""``engines.boxes`` and ``engines.images`` on the torch backend's device, for the device
pipeline (``engines.torch_mtcnn``): pyramid levels and crops from a frame's integral image,
P-Net's candidate boxes and non-maximum suppression.

Each gives what its host twin gives for the same input, to the bit where the arithmetic
allows (the same float32 operations in the same order; NMS compares overlaps in float64 as
``engines.boxes.nms`` does), so that the device pipeline finds the CPU path's faces.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engines import boxes as bx
from engines.torch_backend import import_torch

# NMS compares the boxes of a group two by two; the groups of one pass are padded to the
# largest, and at most this many pairs are compared at once (float64: 64 MiB a matrix). A
# group too large even alone for four times as many goes to the host's NMS.
NMS_PAIRS_PER_PASS = 2**23
# Rounds of settling before a pass is left to the host's NMS: each round settles the next
# box of every chain of suppressions, and crowded 1080p frames need 7 at most, but a long
# chain (boxes in a row, each overlapping the next, scores falling) needs one per box.
NMS_ROUNDS = 32


def bin_edges(n_in: int, n_out: int, device: Any) -> tuple[Any, Any]:
    """``engines.images._bin_edges`` on the device: start and end (exclusive) of each
    adaptive-average-pooling bin along one axis (int64)."""
    torch = import_torch()
    i = torch.arange(n_out + 1, device=device)
    return torch.div(i[:-1] * n_in, n_out, rounding_mode="floor"), torch.div(
        i[1:] * n_in + n_out - 1, n_out, rounding_mode="floor"
    )


def level_sums(sums: Any, size_hw: tuple[int, int], rows: tuple[int, int] | None = None) -> Any:
    """``AreaPyramid.level_sums`` of a stack of frames: ``sums`` (N, H+1, W+1, C) integer
    integral images -> the pixel sums (N, h, w, C) of each output pixel's bin and the
    bin areas (h, w) float32 of the level ``size_hw`` (its rows ``rows`` = (start, end) only,
    when given): PyTorch's area interpolation, as four lookups per pixel."""
    height, width = sums.shape[1] - 1, sums.shape[2] - 1
    r0, r1 = bin_edges(height, size_hw[0], sums.device)
    c0, c1 = bin_edges(width, size_hw[1], sums.device)
    if rows is not None:
        r0, r1 = r0[rows[0] : rows[1]], r1[rows[0] : rows[1]]
    across = sums[:, r1] - sums[:, r0]  # running sums along each row bin
    total = across[:, :, c1] - across[:, :, c0]
    area = ((r1 - r0)[:, None] * (c1 - c0)[None, :]).float()
    return total, area


def area_crops(sums: Any, which: Any, windows_xyxy: Any, size: int) -> tuple[Any, Any]:
    """``engines.images.area_crop_sums`` on the device, for frames of one size: windows (K, 4)
    int64 (x0, y0, x1, y1, end exclusive, may leave the image) of the frames ``which`` (K,)
    int64 of the integral images ``sums`` (N, H+1, W+1, C) (integers), each resized to size x size by
    area averaging, zeros outside the image. Returns the bin sums (K, size, size, C) (the
    type of ``sums``) and the bin areas (K, size, size) float32."""
    torch = import_torch()
    height, width, channels = sums.shape[1] - 1, sums.shape[2] - 1, sums.shape[3]
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
    base = (which * ((height + 1) * (width + 1)))[:, None, None]

    def corner(rows: Any, columns: Any) -> Any:
        return flat[(base + rows[:, :, None] * (width + 1) + columns[:, None, :]).reshape(-1)]

    total = corner(yhi, xhi) - corner(ylo, xhi) - corner(yhi, xlo) + corner(ylo, xlo)
    area = (ycount[:, :, None] * xcount[:, None, :]).float()
    return total.reshape(len(windows_xyxy), size, size, channels), area


def normalise(sums: Any, area: Any) -> Any:
    """``MTCNN._normalise`` on the device: bin sums (..., H, W, C) and bin areas (..., H, W)
    -> (mean - 127.5) / 128 channels first, in the host path's float32 operations."""
    channels_first = sums.movedim(-1, -3).float()
    return channels_first * ((1 / 128.0) / area).unsqueeze(-3) - (127.5 / 128.0)


def pnet_boxes(xs: Any, ys: Any, score: Any, offsets: Any, scale: Any) -> Any:
    """``engines.boxes.pnet_boxes`` on the device, ``scale`` (K,) float32 one per cell:
    boxes (K, 9) = x1, y1, x2, y2, score, the 4 regressions."""
    torch = import_torch()
    cells = torch.stack([xs, ys], 1).float()
    s = scale[:, None]
    top_left = torch.floor((bx.PNET_STRIDE * cells + 1) / s)
    bottom_right = torch.floor((bx.PNET_STRIDE * cells + bx.PNET_CELL) / s)
    return torch.cat([top_left, bottom_right, score[:, None], offsets], 1)


def nms(
    boxes_xyxy: Any,
    scores: Any,
    threshold: float,
    groups: Any | None = None,
    mode: str = "union",
    inclusive: bool = False,
) -> Any:
    """``engines.boxes.nms`` on the device: the same kept indices (int64), group by group
    (groups ascending), best score first within each, ties in index order.

    Greedy NMS keeps a box when no box it keeps before it overlaps it by more than
    ``threshold``. Here all boxes of a group are settled at once: the matrix of which box
    would suppress which, then "kept = suppressed by no kept box", applied from "all kept"
    until nothing changes. Each pass settles the next box of every chain of suppressions,
    and the only fixed point is greedy NMS's answer, so it ends with that answer after a
    handful of rounds instead of one step per kept box. A pass that needs more than
    ``NMS_ROUNDS``, or a group too large to compare on the device, is settled by the host's
    ``engines.boxes.nms`` instead: the same answer, in bounded time and memory.
    """
    torch = import_torch()
    count = len(scores)
    device = scores.device
    if count == 0:
        return torch.zeros(0, dtype=torch.int64, device=device)
    order = torch.sort(scores, descending=True, stable=True).indices
    if groups is not None:
        order = order[torch.sort(groups[order], stable=True).indices]
        sizes = torch.unique_consecutive(groups[order], return_counts=True)[1].tolist()
    else:
        sizes = [count]
    boxes = boxes_xyxy[order].double()
    kept = torch.zeros(count, dtype=torch.bool, device=device)
    start = 0
    for chunk in _passes(sizes):
        if max(chunk) ** 2 > 4 * NMS_PAIRS_PER_PASS or not _settle(
            boxes, kept, start, chunk, threshold, mode, 1.0 if inclusive else 0.0
        ):
            _settle_on_host(boxes, kept, start, chunk, threshold, mode, inclusive)
        start += sum(chunk)
    return order[kept]


def _passes(sizes: list[int]) -> list[list[int]]:
    """Consecutive groups taken together, each pass comparing at most
    ``NMS_PAIRS_PER_PASS`` pairs once padded to its largest group (a larger group alone)."""
    passes: list[list[int]] = []
    for size in sizes:
        if passes:
            last = passes[-1]
            if (len(last) + 1) * max(max(last), size) ** 2 <= NMS_PAIRS_PER_PASS:
                last.append(size)
                continue
        passes.append([size])
    return passes


def _settle(
    boxes: Any, kept: Any, start: int, sizes: list[int], threshold: float, mode: str, one: float
) -> bool:
    """Greedy NMS of the groups ``sizes`` whose boxes (score order) begin at ``start``:
    marks the boxes it keeps in ``kept``; False (nothing marked) when ``NMS_ROUNDS`` did not
    settle them."""
    torch = import_torch()
    device = boxes.device
    counts = torch.tensor(sizes, device=device)
    width = max(sizes)
    firsts = start + torch.cumsum(counts, 0) - counts
    slot = torch.arange(width, device=device)
    valid = slot[None, :] < counts[:, None]  # (G, M)
    index = torch.where(valid, firsts[:, None] + slot[None, :], start)
    x1, y1, x2, y2 = boxes[index].unbind(-1)  # (G, M) each
    area = (x2 - x1 + one) * (y2 - y1 + one)
    w = (
        torch.minimum(x2[:, :, None], x2[:, None, :])
        - torch.maximum(x1[:, :, None], x1[:, None, :])
        + one
    ).clamp(min=0)
    h = (
        torch.minimum(y2[:, :, None], y2[:, None, :])
        - torch.maximum(y1[:, :, None], y1[:, None, :])
        + one
    ).clamp(min=0)
    inter = w * h
    if mode == "min":
        overlap = inter / torch.minimum(area[:, :, None], area[:, None, :])
    else:
        overlap = inter / (area[:, :, None] + area[:, None, :] - inter)
    # suppresses[g, i, j]: box i, when kept, drops box j (j after i in score order); an
    # overlap of 0 / 0 (boxes without area) drops it, as on the host
    suppresses = (~(overlap <= threshold)).triu(diagonal=1) & valid[:, None, :]
    alive = valid
    for done in range(NMS_ROUNDS):
        settled = valid & ~(suppresses & alive[:, :, None]).any(1)
        # Each check is a wait for the device: after the second round (the first settles
        # only groups where no box overlaps another), then every third (a crowded 1080p
        # level needs 7 to 9); a round past the fixed point only gives it again.
        check = done % 3 == 1 or done == NMS_ROUNDS - 1
        if check and torch.equal(settled, alive):
            kept[index[alive]] = True
            return True
        alive = settled
    return False


def _settle_on_host(
    boxes: Any,
    kept: Any,
    start: int,
    sizes: list[int],
    threshold: float,
    mode: str,
    inclusive: bool,
) -> None:
    """``_settle`` by ``engines.boxes.nms``, group by group (boxes in score order, so their
    scores are given as a falling count)."""
    torch = import_torch()
    first = start
    for size in sizes:
        mine = boxes[first : first + size].cpu().numpy()
        scores = np.arange(size, 0, -1, dtype=np.float32)
        keep = bx.nms(mine, scores, threshold, None, mode, inclusive)
        kept[first + torch.from_numpy(keep).to(kept.device)] = True
        first += size
