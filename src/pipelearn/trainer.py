"""The single-process reference trainer: the whole model, one process, the baseline of every mode."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from pipelearn.config import ConfigError, RunConfig, check_sizes
from pipelearn.data.dealing import DeviceBatches, device_indices, load_data
from pipelearn.events import now
from pipelearn.logs import progress_bar
from pipelearn.models.parts import make_model
from pipelearn.privacy import dp_enabled
from pipelearn.training import evaluate, make_optimizer, scaled_loss

log = logging.getLogger("pipelearn.trainer")


def train_local(config: RunConfig, progress: bool = True) -> dict[str, Any]:
    """Train the whole model on (a subset of) the training split; write and return the metrics."""
    if dp_enabled(config):
        raise ConfigError(
            "{0}: DP-SGD protects what devices send, and local training has none; run it with mode fl, sfl or "
            "pipelearn",
            "dp_noise_multiplier" if config.dp_noise_multiplier is not None else "dp_epsilon",
        )
    torch.set_num_threads(config.threads)
    train = load_data(config, "train")
    test = load_data(config, "test")
    indices = device_indices(config, train, 0)
    for warning in check_sizes(config, len(test), [len(indices)]):  # raises where the test split is too small
        log.warning("%s", warning)
    model = make_model(config, train.input_shape, train.num_classes).train()
    optimizer = make_optimizer(model, config)
    assert optimizer is not None
    batches = DeviceBatches(train, indices, config, 0)
    epoch_times, losses, accuracies = [], [], []
    start = now()
    for epoch in range(config.epochs):
        model.train()
        began, loss_sum = now(), 0.0
        desc = f"epoch {epoch + 1}/{config.epochs}"
        bar = progress_bar(range(batches.per_epoch), desc=desc, unit="batch", enabled=progress, log=log)
        for i in bar:
            x, y = batches.batch(epoch * batches.per_epoch + i)
            loss = scaled_loss(model(x), y, len(y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(y)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        epoch_times.append(now() - began)
        losses.append(loss_sum / len(indices))
        accuracies.append(evaluate(model, test, config.test_samples, config.seed))
        if progress:
            print(f"epoch {epoch + 1}: loss {losses[-1]:.4f}, test accuracy {accuracies[-1]:.4f}")
    metrics = {
        "mode": "local",
        "model": config.model,
        "dataset": config.dataset,
        "samples": len(indices),
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "lr": config.lr,
        "momentum": config.momentum,
        "train_time_s": sum(epoch_times),
        "wall_time_s": now() - start,
        "epoch_times_s": epoch_times,
        "train_loss": losses,
        "epoch_test_accuracy": accuracies,
        "test_accuracy": accuracies[-1],
    }
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    return metrics
