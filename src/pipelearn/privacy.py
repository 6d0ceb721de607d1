"""Differential privacy of a device's part: DP-SGD with Opacus, and the privacy each device has spent.

A device's part is trained with DP-SGD: every sample's gradient is clipped to `dp_max_grad_norm`, the clipped
gradients of a mini-batch are summed, Gaussian noise of `dp_noise_multiplier x dp_max_grad_norm` is added once, and
the sum is divided by the mini-batch's size. Micro-batching changes none of it: each micro-batch's backward pass adds
its samples' gradients to the mini-batch's, and the clipping and the noise come at the mini-batch's one step, so
`pipelearn` spends what `sfl` spends. Opacus is optional (`pip install 'pipelearn[dp]'`) and imported only here,
only when DP is on.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pipelearn.config import ConfigError, RunConfig
from pipelearn.schedule import Schedule

if TYPE_CHECKING:
    from opacus.optimizers import DPOptimizer

INSTALL = "pip install 'pipelearn[dp]' (or pip install 'opacus==1.6.0')"
"""How to install what DP-SGD needs."""


def dp_enabled(config: RunConfig) -> bool:
    """Whether the run trains devices' parts with DP-SGD."""
    return config.dp_noise_multiplier is not None or config.dp_epsilon is not None


def require_opacus() -> None:
    """Raise ConfigError, saying how to install it, where Opacus is missing."""
    if importlib.util.find_spec("opacus") is None:
        raise ConfigError(f"{{0}} needs Opacus, which is not installed; {INSTALL}", "dp_noise_multiplier")


def refuse_batchnorm(module: nn.Module) -> None:
    """Raise ConfigError where `module` has BatchNorm, which mixes samples and so defeats per-sample clipping."""
    norms = [name for name, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        raise ConfigError(
            f"{{0}}: DP-SGD clips each sample's gradient, and BatchNorm ({norms[0]}) mixes the samples of a "
            "batch; give --no-batchnorm (TOML batchnorm = false), or a model without BatchNorm",
            "dp_noise_multiplier",
        )


def device_steps(schedule: Schedule, device: int, through_round: int | None = None) -> int:
    """The optimizer steps (mini-batches) a device takes up to the end of round `through_round` (None: the run)."""
    starts = schedule.round_starts[device]
    total = len(schedule.batch_sizes[device])
    if through_round is None or through_round + 1 >= len(starts):
        return total
    return min(starts[through_round + 1], total)


def sample_rate(config: RunConfig, samples: int) -> float:
    """The share of a device's samples in each of its mini-batches, which the accountant takes as its sampling
    rate."""
    return min(1.0, config.batch_size / samples)


def noise_multiplier(config: RunConfig, samples: int, steps: int) -> float:
    """The noise multiplier of a device with `samples` samples that takes `steps` steps: the one given, or the least
    that keeps the whole run within the target `dp_epsilon` at `dp_delta` (Opacus's RDP accountant)."""
    if config.dp_noise_multiplier is not None:
        return float(config.dp_noise_multiplier)
    assert config.dp_epsilon is not None
    return _noise_for(config.dp_epsilon, config.dp_delta, sample_rate(config, samples), max(steps, 1))


@functools.lru_cache(maxsize=64)
def _noise_for(target: float, delta: float, rate: float, steps: int) -> float:
    from opacus.accountants.utils import get_noise_multiplier

    _quiet_accountant()
    return float(
        get_noise_multiplier(target_epsilon=target, target_delta=delta, sample_rate=rate, steps=steps, accountant="rdp")
    )


def epsilon(noise: float, rate: float, steps: int, delta: float) -> float:
    """The epsilon at `delta` spent by `steps` DP-SGD steps at this noise multiplier and sampling rate (Opacus's RDP
    accountant); 0 before the first step, infinite without noise."""
    if steps <= 0:
        return 0.0
    if noise <= 0:
        return float("inf")
    from opacus.accountants import RDPAccountant

    _quiet_accountant()

    accountant = RDPAccountant()
    accountant.history = [(noise, rate, steps)]
    return float(accountant.get_epsilon(delta=delta))


class PrivacyLedger:
    """What each device spends, round by round, as the accountant reckons it from the run's schedule: the server's
    record of the privacy of the weights that devices send at aggregation."""

    def __init__(self, config: RunConfig, schedule: Schedule, samples: list[int]) -> None:
        self.config, self.schedule, self.samples = config, schedule, samples
        self.noise = [noise_multiplier(config, n, device_steps(schedule, d)) for d, n in enumerate(samples)]
        """Each device's noise multiplier."""

    def after(self, through_round: int) -> list[float]:
        """Each device's epsilon at dp_delta once round `through_round` is done."""
        return [
            epsilon(
                sigma, sample_rate(self.config, n), device_steps(self.schedule, d, through_round), self.config.dp_delta
            )
            for d, (sigma, n) in enumerate(zip(self.noise, self.samples, strict=True))
        ]

    def metrics(self) -> dict[str, Any]:
        """The run's DP-SGD settings and what each device spent over the whole run, for metrics.json."""
        spent = self.after(self.schedule.rounds - 1)
        return {
            "mechanism": "DP-SGD (Opacus) on each device's part",
            "accountant": "rdp",
            "delta": self.config.dp_delta,
            "target_epsilon": self.config.dp_epsilon,
            "max_grad_norm": self.config.dp_max_grad_norm,
            "noise_multiplier": self.noise,
            "sample_rate": [sample_rate(self.config, n) for n in self.samples],
            "steps": [device_steps(self.schedule, d) for d in range(len(self.samples))],
            "epsilon": spent,
            "max_epsilon": max(spent, default=0.0),
        }


def noise_seed(config: RunConfig, device: int, first_round: int = 0) -> int:
    """The seed of a device's noise from `first_round` on: the same in every mode, so that runs that differ only in
    micro-batching add the same noise; another for a device that rejoins or resumes, so as not to repeat its noise."""
    return (config.seed * 1_000_003 + device * 7_919 + first_round * 104_729 + 0x5EED) % (2**63)


class PrivateSteps:
    """DP-SGD for one device's part: Opacus's per-sample gradients and DPOptimizer, kept right under micro-batching.

    Opacus pairs a layer's saved input with the next backward pass last in, first out, and sums the per-sample
    gradients of backward passes it cannot tell apart. A device runs every micro-batch's forward before their
    backwards, so each forward's saved inputs are set aside here (`forwarded`) and put back just before that
    micro-batch's own backward (`backward`): every backward is then a batch of its own to Opacus, whose per-sample
    gradients the step concatenates, clips and noises once.
    """

    def __init__(
        self, config: RunConfig, device: int, samples: list[int], schedule: Schedule, first_round: int = 0
    ) -> None:
        require_opacus()
        if schedule.staleness:  # an overtaken forward runs on a copy of the weights, which Opacus's hooks miss
            raise ValueError("DP-SGD runs only on schedules without staleness")
        self.config = config
        self.noise = noise_multiplier(config, samples[device], device_steps(schedule, device))
        """The noise multiplier of this device's steps."""
        self.generator = torch.Generator().manual_seed(noise_seed(config, device, first_round))
        self.module: Any = None
        """The GradSampleModule of the part trained now."""
        self.optimizer: DPOptimizer | None = None
        self._saved: dict[tuple[int, int], list[tuple[Any, Any]]] = {}

    def wrap(self, part: nn.Module, optimizer: torch.optim.Optimizer | None) -> torch.optim.Optimizer | None:
        """Train `part` privately from now on: hooks for per-sample gradients on it, and `optimizer` wrapped to clip
        and noise them; return the optimizer to step (None for a part without parameters)."""
        from opacus import GradSampleModule
        from opacus.optimizers import DPOptimizer

        refuse_batchnorm(part)
        # the first layer's input needs no gradient: torch says so at every backward, and it is as it should be
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        if self.module is not None:  # the part trained before (a re-plan moved the split): its hooks off
            self.module.remove_hooks()
            self.module._close()
        self._saved.clear()
        self.module = GradSampleModule(part, batch_first=True, loss_reduction="sum")
        if optimizer is None:
            self.optimizer = None
            return None
        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=self.noise,
            max_grad_norm=self.config.dp_max_grad_norm,
            expected_batch_size=self.config.batch_size,
            loss_reduction="mean",
            generator=self.generator,
        )
        return self.optimizer

    def forwarded(self, microbatch: tuple[int, int]) -> None:
        """The forward of `microbatch` just ran: set aside what its layers saved for its backward."""
        saved = []
        for m in self._layers():
            if getattr(m, "activations", None):
                saved.append((m, m.activations.pop()))
                for p in _trainable(m):
                    p._forward_counter -= 1
        self._saved[microbatch] = saved

    def backward(self, microbatch: tuple[int, int], output: torch.Tensor, gradient: torch.Tensor, batch: int) -> None:
        """Back-propagate `gradient` (of the mini-batch's mean loss) through `microbatch`'s `output`, leaving its
        samples' own gradients (of their losses, unscaled) for the step."""
        for m, activations in self._saved.pop(microbatch, []):
            m.activations = [activations]
            for p in _trainable(m):
                p._forward_counter += 1
        output.backward(gradient * batch)  # the loss was scaled by 1/batch: per-sample gradients are of the sum

    def step(self, batch: int) -> None:
        """Clip every sample's gradient, add the mini-batch's noise once, divide by its size, and step."""
        if self.optimizer is None:
            return
        for p in self.optimizer.params:  # one batch of samples, whatever number of micro-batches made it
            if isinstance(p.grad_sample, list):
                p.grad_sample = torch.cat(p.grad_sample, dim=0)
        self.optimizer.expected_batch_size = batch
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _layers(self) -> list[Any]:  # Opacus's hooks keep their state in attributes of the layers and parameters
        return [m for m in self.module.modules() if m is not self.module]


def _trainable(module: Any) -> list[Any]:
    return [p for p in module.parameters(recurse=False) if p.requires_grad]


def _quiet_accountant() -> None:
    # The search for the noise tries multipliers whose best Renyi order is the largest; what it reports is still an
    # upper bound, only perhaps not the tightest
    warnings.filterwarnings("ignore", message="Optimal order is the largest alpha", category=UserWarning)
