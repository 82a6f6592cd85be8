"""The MoE router's balance loss, added to the training loss and logged (`router_aux_loss` in metrics.jsonl).

transformers' GLM-4.5 / 4.7-Flash classes route with a sigmoid score and a correction bias (DeepSeek-V3's
"aux-loss-free" balancing, whose bias is updated by the pretraining loop, not by backprop) and compute no
auxiliary loss, so `output_router_logits` alone changes nothing. Fine-tuning on a narrow dataset can still
collapse the routing onto a few experts; GLM-4.5 itself trained with a small sequence-wise balance loss beside the
bias. This adds that loss, batch-wise: for each MoE layer, with T tokens, E experts, K chosen per token,

    f_i = E / (K T) * (tokens that chose expert i)      P_i = mean over tokens of s_i / sum_j s_j  (s = sigmoid)
    loss = coef * mean over layers of sum_i f_i P_i        (1 when the load is perfectly even)

The routers' outputs are caught by forward hooks (the logits and the chosen experts), so it works with the fused
loss, gradient checkpointing (the recomputation's outputs are dropped) and any method. Padding tokens count too.
"""

from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger("glm_workbench")
KEY = "router_aux_loss"


def routers(model) -> list[torch.nn.Module]:
    """The MoE routers: modules returning (logits, weights, chosen experts) (transformers' *TopkRouter)."""
    return [module for module in model.modules() if type(module).__name__.endswith("TopkRouter")]


class RouterBalance:
    """Collects each router's (logits, chosen experts) during a forward pass and turns them into the loss."""

    def __init__(self, model):
        self.caught: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.found = routers(model)
        self.collecting = False
        for router in self.found:
            router.register_forward_hook(self._catch)

    def _catch(self, module, args, output) -> None:
        if self.collecting and torch.is_grad_enabled():
            self.caught.append((output[0], output[2]))

    def start(self) -> None:
        self.caught, self.collecting = [], True

    def loss(self) -> torch.Tensor | None:
        """The balance loss of what was caught since `start` (None when nothing was)."""
        self.collecting = False
        if not self.caught:
            return None
        per_layer = []
        for logits, chosen in self.caught:
            scores = logits.float().sigmoid()
            tokens, experts = scores.shape
            share = (scores / scores.sum(dim=-1, keepdim=True)).mean(dim=0)
            counts = torch.zeros(experts, device=scores.device).scatter_add_(
                0, chosen.reshape(-1), torch.ones(chosen.numel(), device=scores.device)
            )
            load = counts * experts / max(chosen.numel(), 1)
            per_layer.append((load * share).sum())
        self.caught = []
        return torch.stack(per_layer).mean()


class RouterBalanceMixin:
    """compute_loss plus `router_aux_loss_coef` times the routers' balance loss; the mean of each logging window
    goes to the logs as `router_aux_loss`."""

    router_aux_loss_coef: float = 0.0
    _balance: RouterBalance | None = None
    _balance_values: list[float]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._balance is None:
            self._balance, self._balance_values = RouterBalance(model), []
            log.info(
                "moe: router balance loss on (coef %s, %d routers)", self.router_aux_loss_coef, len(self._balance.found)
            )
        self._balance.start()
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        balance = self._balance.loss()
        if balance is None or not model.training:
            return result
        self._balance_values.append(float(balance.detach()))
        extra = self.router_aux_loss_coef * balance
        if num_items_in_batch is not None:  # the LM loss is already averaged over the accumulated micro-batches
            extra = extra / max(self.args.gradient_accumulation_steps, 1)
        if return_outputs:
            loss, outputs = result
            return loss + extra, outputs
        return result + extra

    def log(self, logs, *args, **kwargs):
        if "loss" in logs and getattr(self, "_balance_values", None):
            logs[KEY] = sum(self._balance_values) / len(self._balance_values)
            self._balance_values = []
        return super().log(logs, *args, **kwargs)


@functools.cache
def with_router_balance(trainer_class: type) -> type:
    return type(f"Balanced{trainer_class.__name__}", (RouterBalanceMixin, trainer_class), {})
