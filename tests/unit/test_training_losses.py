"""Losses against hand-computed values."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.losses import CenterLoss, distillation_loss, triplet_loss, triplet_loss_stacked  # noqa: E402


def test_triplet_loss_hand_computed() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [0.0, 1.0]])  # d(a,p) = 0.16 + 0.64 = 0.8, then 0
    n = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # d(a,n) = 2, 2
    # max(0.8 - 2 + 0.2, 0) = 0 and max(0 - 2 + 0.2, 0) = 0 -> 0; with alpha 1.5: 0.3 and 0
    assert float(triplet_loss(a, p, n, 0.2)) == pytest.approx(0.0)
    assert float(triplet_loss(a, p, n, 1.5)) == pytest.approx(0.15)
    stacked = torch.stack([a, p, n], 1).reshape(-1, 2)
    assert float(triplet_loss_stacked(stacked, 1.5)) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="multiple of 3"):
        triplet_loss_stacked(stacked[:5], 0.2)


def test_center_loss_moves_centers_towards_features() -> None:
    center = CenterLoss(num_classes=2, dim=2, alfa=0.5)
    features = torch.tensor([[2.0, 0.0], [4.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1])
    loss = center(features, labels)
    assert float(loss) == pytest.approx((4 + 16 + 4) / 6)  # centers start at 0
    # each sample moves its center by (1 - alfa) * (x - c): class 0 by 1 + 2, class 1 by 1
    assert torch.allclose(center.centers, torch.tensor([[3.0, 0.0], [0.0, 1.0]]))


def test_distillation_is_zero_only_when_matching_the_teacher() -> None:
    teacher = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    assert float(distillation_loss(teacher.clone(), teacher)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(torch.randn(6, 8), teacher)) > 0.1
    # dimensions differ: only the relational term, still zero for the same geometry
    rotated = torch.cat([teacher, torch.zeros(6, 4)], 1)
    assert float(distillation_loss(rotated, teacher)) == pytest.approx(0.0, abs=1e-6)


def test_a_teacher_in_a_narrow_cone_is_centred_so_one_fixed_output_does_not_fit_it() -> None:
    import numpy as np

    from training.teacher import centred

    rng = np.random.default_rng(0)
    cone = rng.normal(size=(64, 16)) * 0.1 + np.eye(16)[0]  # pairwise cosine ~0.87, as dlib's
    cone /= np.linalg.norm(cone, axis=1, keepdims=True)
    fixed = torch.nn.functional.normalize(torch.ones(64, 16) * torch.eye(16)[0], dim=1)
    # raw, a student answering one fixed direction is already close to every target ...
    assert float(distillation_loss(fixed, torch.from_numpy(cone).float())) < 0.15
    # ... centred, it is not, and the targets are unit vectors again
    targets = centred(cone)
    assert np.allclose(np.linalg.norm(targets, axis=1), 1.0, atol=1e-5)
    assert float(distillation_loss(fixed, torch.from_numpy(targets).float())) > 0.5
    # centring moves the origin to the targets' mean, then makes them unit vectors again
    shifted = cone - cone.mean(0)
    assert np.allclose(targets, shifted / np.linalg.norm(shifted, axis=1, keepdims=True))
