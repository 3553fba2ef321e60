"""Training on CUDA: mixed precision trains, and the CUDA model embeds like the CPU one."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="PyTorch sees no CUDA device")


def _synthetic_faces(root: Path, people: int = 6, images: int = 6) -> Path:
    """Per person a colour and a shape, per image a small shift and brightness change."""
    rng = np.random.default_rng(0)
    for p in range(people):
        colour = rng.integers(40, 220, 3).tolist()
        for i in range(images):
            image = np.full((96, 96, 3), 30 + 5 * i, np.uint8)
            centre = (48 + int(rng.integers(-6, 7)), 48 + int(rng.integers(-6, 7)))
            cv2.circle(image, centre, 14 + 3 * p, colour, -1)
            (root / f"p{p}").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / f"p{p}" / f"{i}.png"), image)
    return root


def test_amp_training_on_cuda(tmp_path: Path) -> None:
    from training.checkpoint import Checkpoint
    from training.embedders import TorchEmbedder
    from training.train import train
    from training.train_options import build_parser

    data = _synthetic_faces(tmp_path / "data")
    losses: list[float] = []
    argv = ["--data-dir", str(data), "--models-base-dir", str(tmp_path / "m"), "--logs-base-dir",
            str(tmp_path / "l"), "--run-name", "amp", "--gpu", "0", "--amp", "--image-size", "80",
            "--batch-size", "24", "--people-per-batch", "6", "--images-per-person", "6",
            "--epoch-size", "5", "--max-nrof-epochs", "2", "--random-crop", "--workers", "2",
            "--optimizer", "ADAM", "--learning-rate", "0.001"]  # fmt: skip
    train(build_parser().parse_args(argv), on_step=lambda e, b, s, loss: losses.append(loss))
    assert len(losses) == 10 and all(np.isfinite(losses))
    ckpt = Checkpoint.load(tmp_path / "m" / "amp" / "latest.pt")
    assert "scaler" in ckpt.extra  # the AMP loss scale is checkpointed for --resume
    crops = np.stack(
        [cv2.imread(str(p))[8:88, 8:88, ::-1] for p in sorted(data.glob("*/*.png"))[:8]]
    )
    cpu = TorchEmbedder.from_checkpoint(tmp_path / "m" / "amp" / "latest.pt").embed_rgb(crops)
    gpu = TorchEmbedder.from_checkpoint(
        tmp_path / "m" / "amp" / "latest.pt", torch.device("cuda")
    ).embed_rgb(crops)
    assert np.abs(cpu - gpu).max() < 1e-3


def test_distillation_on_cuda_takes_the_cpus_steps(tmp_path: Path, monkeypatch) -> None:
    """The default model's route, --loss distill with a .npz teacher and the recipes'
    ADAM_TORCH, on CUDA in fp32: the CUDA settings (channels-last, fused Adam, cuDNN
    autotuning, the teacher's table on the GPU, each loss read a step late) give the CPU's
    losses step by step, and report every step once, in order. cuDNN's TF32 convolutions are
    off here: with them (PyTorch's default), the first H200 run matched the first steps but
    drifted 0.06 by the fourth, as torch's Adam's early steps, about lr in size whatever the
    gradient, turn rounding into different weights."""
    from training.train import train

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    from training.train_options import build_parser

    data = _synthetic_faces(tmp_path / "data")
    paths = sorted(p.relative_to(data).as_posix() for p in data.glob("*/*.png"))
    embeddings = np.random.default_rng(1).normal(size=(len(paths), 16)).astype(np.float32)
    np.savez(tmp_path / "teacher.npz", paths=np.array(paths), embeddings=embeddings)
    runs = {}
    for gpu in ("cpu", "0"):
        argv = ["--data-dir", str(data), "--models-base-dir", str(tmp_path / "m"),
                "--logs-base-dir", str(tmp_path / "l"), "--run-name", f"distill-{gpu}",
                "--gpu", gpu, "--loss", "distill", "--teacher", str(tmp_path / "teacher.npz"),
                "--image-size", "80", "--batch-size", "12", "--epoch-size", "3",
                "--max-nrof-epochs", "2", "--random-crop", "--random-flip", "--workers", "2",
                "--embedding-size", "16", "--optimizer", "ADAM_TORCH", "--learning-rate", "0.001"]  # fmt: skip
        steps: list[tuple[int, int, int, float]] = []
        train(
            build_parser().parse_args(argv),
            on_step=lambda e, b, s, loss, out=steps: out.append((e, b, s, loss)),
        )
        runs[gpu] = steps
    cpu, cuda = runs["cpu"], runs["0"]
    assert (
        [s[:3] for s in cuda]
        == [s[:3] for s in cpu]
        == [(e, b, 3 * e + b) for e in range(2) for b in range(1, 4)]
    )
    assert abs(cuda[0][3] - cpu[0][3]) < 5e-3  # same weights, same batch: the forward pass
    assert np.allclose([s[3] for s in cuda], [s[3] for s in cpu], atol=0.05)
