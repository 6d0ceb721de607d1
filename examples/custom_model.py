"""Train your own network across devices with PipeLearn: a small CNN, written here, on MNIST in pipelearn mode.

    python examples/custom_model.py

Each device process imports `small_cnn` from this file by name (nothing is pickled), so the run starts under
`if __name__ == "__main__":`, as with multiprocessing.
"""

from __future__ import annotations

from torch import nn

import pipelearn


def small_cnn(input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """Two convolutional blocks and a classifier; the run splits the network between blocks."""
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Flatten(), nn.Linear(32 * (height // 4) * (width // 4), 64), nn.ReLU()),
        nn.Linear(64, num_classes),
    )


def main() -> None:
    config = pipelearn.RunConfig(
        mode="pipelearn",
        dataset="mnist",
        devices=2,
        split=1,  # the first block on each device, the rest on the server
        microbatches=4,
        samples_per_device=300,
        batch_size=20,
        lr=0.05,
        epochs=1,
        network="wifi",
        test_samples=1000,
        out="runs/custom-model",
    )
    metrics = pipelearn.run(config, model=small_cnn)
    print(
        f"test accuracy {metrics['test_accuracy']:.3f} after {metrics['train_time_s']:.1f} s of training; "
        f"server idle {metrics['server']['idle_s']:.1f} s; results in {config.out}/"
    )


if __name__ == "__main__":
    main()
