"""Adam and RMSProp as TensorFlow 1.x updates them, which the original project trained with.

torch's own differ where the original's large epsilons make it show: Adam adds epsilon
after the bias correction (TF before it: with epsilon 0.1 torch's first steps were up to
29 times larger), and RMSProp starts its mean square at zeros with epsilon outside the
root (TF: ones, inside; 15-30 % apart after 10 steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


class TfAdam(torch.optim.Adam):
    """Adam with TensorFlow 1.x's epsilon ("epsilon hat" of Kingma and Ba's paper).

    TF steps by ``lr sqrt(1-b2^t)/(1-b1^t) m / (sqrt(v) + eps)``; torch by
    ``lr/(1-b1^t) m / (sqrt(v)/sqrt(1-b2^t) + eps)``. The two are equal when torch's eps at
    step t is ``eps / sqrt(1 - b2^t)``: it is set before each step. The steps are counted
    here, so the fused kernel's step count (on the GPU) is never read back; a step the AMP
    scaler skips still counts with the fused kernel (a handful at the start, when the loss
    scale settles: eps then runs those steps ahead, a difference that fades within the first
    few hundred steps).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        betas: tuple[float, float],
        eps: float,
        fused: bool | None = None,
    ):
        super().__init__(params, lr=lr, betas=betas, eps=eps, fused=fused)
        self.eps_hat = eps
        self.steps_taken = 0

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        t = self.steps_taken + 1
        for group in self.param_groups:
            group["eps"] = self.eps_hat / math.sqrt(1.0 - group["betas"][1] ** t)
        loss = super().step(closure)
        self.steps_taken = t
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume: the steps taken are those of the restored state (read once, here)."""
        super().load_state_dict(state_dict)
        steps = [int(s["step"]) for s in self.state.values() if "step" in s]
        self.steps_taken = max(steps, default=0)


class TfRMSProp(torch.optim.Optimizer):
    """RMSProp as TensorFlow 1.x's RMSPropOptimizer (not centred):

    ``ms = decay ms + (1-decay) g^2`` (ms starts at ones), ``mom = momentum mom +
    lr g / sqrt(ms + eps)``, ``w -= mom``. Weight decay adds ``weight_decay w`` to the
    gradient, as the original's L2 regularisation loss did.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        decay: float = 0.9,
        momentum: float = 0.9,
        eps: float = 1.0,
        weight_decay: float = 0.0,
    ):
        defaults = {
            "lr": lr,
            "decay": decay,
            "momentum": momentum,
            "eps": eps,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    def _slots(self, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Each parameter's mean square and momentum (named apart from torch.optim.RMSprop's,
        whose momentum leaves lr out: a run resumed from one of its checkpoints starts them
        afresh)."""
        for p in params:
            state = self.state[p]
            if "tf_ms" not in state:
                state["tf_ms"] = torch.ones_like(p, memory_format=torch.preserve_format)
                state["tf_mom"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return [self.state[p]["tf_ms"] for p in params], [self.state[p]["tf_mom"] for p in params]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"]:
                grads = list(torch._foreach_add(grads, params, alpha=group["weight_decay"]))
            ms, mom = self._slots(params)
            torch._foreach_mul_(ms, group["decay"])
            torch._foreach_addcmul_(ms, grads, grads, value=1.0 - group["decay"])
            root = torch._foreach_add(ms, group["eps"])
            torch._foreach_sqrt_(root)
            torch._foreach_mul_(mom, group["momentum"])
            torch._foreach_addcdiv_(mom, grads, root, value=group["lr"])
            torch._foreach_sub_(params, mom)
        return loss
