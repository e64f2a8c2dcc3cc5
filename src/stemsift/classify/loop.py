"""The one classifier training loop and the one "average framewise probabilities per item" inference, shared by
Ψ (ConvNeXt on random mixes, classify/train.py) and the cleaners' frame MLP (clean/frames.py)."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch


def fit(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], loss_fn: Callable,
        opt: torch.optim.Optimizer, sched=None, device: torch.device = torch.device("cpu"),
        record: bool = False) -> list[float]:
    """Train `model` on each (inputs, targets) batch once, in order (the caller decides epochs / steps and the
    batch order, so seeding stays with it); returns the loss per step when `record`. Leaves the model in eval mode."""
    losses = []
    model.train()
    for x, y in batches:
        loss = loss_fn(model(x.to(device)), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        if record:
            losses.append(float(loss.item()))
    model.eval()
    return losses


def mean_probs(model: torch.nn.Module, items: list[np.ndarray], activation: Callable[[torch.Tensor], torch.Tensor],
               batch_size: int | None = None, device: torch.device = torch.device("cpu")) -> np.ndarray:
    """Per item (an array of frames or windows, one per row): the model's class probabilities averaged over its
    rows, (items, classes) float64. `batch_size` None: one forward per item; else rows of all items in batches."""
    model.eval()
    owner = np.concatenate([np.full(len(x), i) for i, x in enumerate(items)])
    flat = np.concatenate([np.asarray(x, dtype=np.float32) for x in items])
    edges = np.cumsum([0] + [len(x) for x in items]) if batch_size is None else range(0, len(flat) + batch_size, batch_size)
    probs = []
    with torch.inference_mode():
        for a, b in zip(edges[:-1], edges[1:]):
            if b > a:
                probs.append(activation(model(torch.from_numpy(flat[a:b]).to(device))).cpu().numpy())
    p = np.concatenate(probs).astype(np.float64)
    return np.stack([p[owner == i].mean(0) for i in range(len(items))])
