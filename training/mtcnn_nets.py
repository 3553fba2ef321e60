"""MTCNN's three networks (P-Net, R-Net, O-Net) in PyTorch.

Parameter names match facenet-pytorch's so its published state dicts (the MTCNN authors'
weights, converted) load unchanged. Input: NCHW float, RGB, ``(pixel - 127.5) / 128``.
Outputs are the box regression, (landmarks) and the face probability (softmax).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.onnx_weights import load_onnx_weights


class CeilMaxPool2x2(nn.Module):
    """``nn.MaxPool2d(2, 2, ceil_mode=True)`` as an even-sized floor-mode pool: odd heights and
    widths get one row / column of -inf, so the last cell pools what is left, the same numbers.
    A ``torch.export`` program with dynamic height and width made with it stays valid for odd
    and even sizes. PyTorch 2.11's export (the GPU machine's) bakes the example's parity into
    a program that pools odd-or-even sizes as they come, in ceil and floor mode alike, and that
    program then fails on every pyramid level of the other parity."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x, (0, x.shape[3] % 2, 0, x.shape[2] % 2), value=float("-inf"))
        return nn.functional.max_pool2d(x, 2, 2)


class PNet(nn.Module):
    """Proposal net: fully convolutional, any input size >= 12x12, stride 2, cell 12."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        prob = torch.softmax(self.conv4_1(x), dim=1)
        return self.conv4_2(x), prob


class RNet(nn.Module):
    """Refinement net on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The converted weights flatten in (W, H, C) order, as the original Caffe model did.
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
        x = self.prelu4(self.dense4(x))
        prob = torch.softmax(self.dense5_1(x), dim=1)
        return self.dense5_2(x), prob


class ONet(nn.Module):
    """Output net on 48x48 crops: box regression, 5 landmarks, face probability."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
        x = self.prelu5(self.dense5(x))
        prob = torch.softmax(self.dense6_1(x), dim=1)
        return self.dense6_2(x), self.dense6_3(x), prob


NETS: dict[str, type[nn.Module]] = {"pnet": PNet, "rnet": RNet, "onet": ONet}


def load_net(name: str, weights: str | Path) -> nn.Module:
    """Build network ``name`` ("pnet", "rnet", "onet") and load its weights: a facenet-pytorch
    state dict (``.pt``), or the ONNX model facewatch exported from one (``.onnx``: what
    ships in models/mtcnn)."""
    net = NETS[name]()
    if Path(weights).suffix.lower() == ".onnx":
        return load_onnx_weights(net, weights)
    state = torch.load(Path(weights), map_location="cpu", weights_only=True)
    net.load_state_dict(state, strict=True)
    return net.eval()
