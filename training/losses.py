"""Losses: triplet, softmax + center loss, distillation to a teacher's embeddings."""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, alpha: float
) -> torch.Tensor:
    """mean(max(||a - p||² - ||a - n||² + alpha, 0)) over the triplets (FaceNet eq. 1)."""
    pos = (anchor - positive).pow(2).sum(dim=1)
    neg = (anchor - negative).pow(2).sum(dim=1)
    return F.relu(pos - neg + alpha).mean()


def triplet_loss_stacked(embeddings: torch.Tensor, alpha: float) -> torch.Tensor:
    """Triplet loss on rows ordered (a0, p0, n0, a1, p1, n1, ...)."""
    if embeddings.shape[0] % 3:
        raise ValueError(f"triplet batch of {embeddings.shape[0]} rows is not a multiple of 3")
    a, p, n = embeddings.view(-1, 3, embeddings.shape[1]).unbind(1)
    return triplet_loss(a, p, n, alpha)


class CenterLoss(nn.Module):
    """Center loss (Wen et al. 2016) as the original FaceNet ``train_softmax.py`` uses it.

    loss = mean over the batch and dimensions of (x - c_y)²; the centers are not trained by
    the optimiser but moved towards the batch features:
    ``c_y -= (1 - alfa) * (c_y - x)`` (alfa = ``center_loss_alfa``, 0.95 there).
    """

    def __init__(self, num_classes: int, dim: int, alfa: float = 0.95) -> None:
        super().__init__()
        if not 0.0 <= alfa <= 1.0:
            raise ValueError(f"center_loss_alfa must be in [0, 1], got {alfa}")
        self.alfa = alfa
        self.register_buffer("centers", torch.zeros(num_classes, dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        centers = self.centers[labels]
        loss = (features - centers).pow(2).mean()
        if self.training:
            with torch.no_grad():
                delta = (1.0 - self.alfa) * (centers - features.detach().float())
                update = torch.zeros_like(self.centers).index_add_(0, labels, -delta)
                if dist.is_available() and dist.is_initialized():
                    dist.all_reduce(update)  # every process applies the whole batch's update
                self.centers.add_(update)
        return loss


def softmax_center_loss(
    logits: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    center: CenterLoss,
    center_loss_factor: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross entropy + ``center_loss_factor`` x center loss; also returns both parts."""
    ce = F.cross_entropy(logits, labels)
    cl = center(features, labels)
    total = ce + center_loss_factor * cl
    return total, {"cross_entropy": float(ce.detach()), "center": float(cl.detach())}


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, relation_weight: float = 1.0
) -> torch.Tensor:
    """Make the student's L2-normalised embeddings behave like the teacher's.

    Two terms: (1) when the dimensions match, mean(1 - cos(s_i, t_i)), pulling each
    embedding onto the teacher's; (2) always, the mean squared difference between the two
    pairwise cosine-similarity matrices of the batch (relational distillation), which does
    not need the dimensions to match. ``relation_weight`` scales term 2.
    """
    s = F.normalize(student.float(), dim=1)
    t = F.normalize(teacher.float(), dim=1)
    relation = (s @ s.T - t @ t.T).pow(2).mean()
    if s.shape[1] != t.shape[1]:
        return relation_weight * relation
    direct = (1.0 - (s * t).sum(dim=1)).mean()
    return direct + relation_weight * relation
