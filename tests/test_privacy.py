"""DP-SGD of a device's part: per-sample clipping, one noise draw per mini-batch whatever the micro-batching, the
accountant's epsilon, and the refusals (BatchNorm, sl, two noises, no Opacus)."""

from __future__ import annotations

import importlib.util
import itertools
from typing import Any

import pytest
import torch
from torch import nn

from pipelearn.config import ConfigError, RunConfig
from pipelearn.privacy import PrivacyLedger, PrivateSteps, epsilon, noise_multiplier, noise_seed, refuse_batchnorm
from pipelearn.schedule import DevicePlan, Schedule, build_schedule

pytest.importorskip("opacus", reason="DP-SGD needs the dp extra (opacus), which the dev extra installs")

BATCH = 8


def _config(**overrides: Any) -> RunConfig:
    values: dict[str, Any] = {
        "mode": "pipelearn",
        "batchnorm": False,
        "devices": 1,
        "batch_size": BATCH,
        "samples_per_device": 32,
        "lr": 1.0,
        "momentum": 0.0,
        "dp_noise_multiplier": 1.0,
        "dp_max_grad_norm": 0.5,
    }
    values.update(overrides)
    return RunConfig(**values).validate()


def _schedule(config: RunConfig, microbatches: int = 1) -> Schedule:
    plan = DevicePlan(config.samples_per_device or 0, 2, microbatches)
    return build_schedule(config.mode, [plan], config.batch_size, config.epochs, config.aggregate_every)


def _part() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 1, 6, 6, generator=g) * 10  # large inputs: most raw per-sample gradients exceed the bound
    head = torch.randn(5, 4, generator=g)
    y = torch.randint(0, 4, (BATCH,), generator=g)
    return x, head, y


def _private_step(config: RunConfig, sizes: list[int]) -> tuple[dict[str, torch.Tensor], nn.Sequential]:
    """One DP-SGD step of the part, as a device takes it: every micro-batch's forward, then their backwards (the
    server's head stands in for the server), then one step."""
    part = _part()
    private = PrivateSteps(config, 0, [config.samples_per_device or 0], _schedule(config, len(sizes)))
    optimizer = private.wrap(part, torch.optim.SGD(part.parameters(), lr=config.lr, momentum=0.0))
    assert optimizer is not None
    x, head, y = _data()
    outputs = []
    for i, (xs, _) in enumerate(zip(torch.split(x, sizes), torch.split(y, sizes), strict=True)):
        outputs.append(part(xs))
        private.forwarded((0, i))
    for i, (out, ys) in enumerate(zip(outputs, torch.split(y, sizes), strict=True)):
        server_in = out.detach().requires_grad_()
        loss = nn.functional.cross_entropy(server_in @ head, ys, reduction="sum") / BATCH
        loss.backward()
        assert server_in.grad is not None
        private.backward((0, i), out, server_in.grad, BATCH)
    before = {k: v.clone() for k, v in _part().state_dict().items()}
    private.step(BATCH)
    return {k: before[k] - v for k, v in part.state_dict().items()}, part


def _per_sample_gradients() -> list[torch.Tensor]:
    """Each sample's own gradient of its loss, flattened over the part's parameters, one backward per sample."""
    x, head, y = _data()
    grads = []
    for i in range(BATCH):
        part = _part()
        loss = nn.functional.cross_entropy(part(x[i : i + 1]) @ head, y[i : i + 1], reduction="sum")
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in part.parameters() if p.grad is not None]))
    return grads


def test_each_samples_gradient_is_clipped_to_the_bound_before_the_mean():
    config = _config(dp_noise_multiplier=1e-9)  # noise too small to matter: the step is the clipped mean
    raw = _per_sample_gradients()
    bound = config.dp_max_grad_norm
    norms = [float(g.norm()) for g in raw]
    assert sum(n > 2 * bound for n in norms) >= BATCH // 2  # the bound bites on most samples
    clipped = [g * min(1.0, bound / (float(g.norm()) + 1e-6)) for g in raw]
    assert all(float(c.norm()) <= bound + 1e-5 for c in clipped)
    expected = torch.stack(clipped).mean(dim=0)
    for sizes in ([BATCH], [3, 2, 3]):
        update, part = _private_step(config, sizes)
        got = torch.cat([update[name].flatten() for name, _ in part.named_parameters()])
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4, msg=f"micro-batches {sizes}")
        # the mean of clipped gradients, not the clipped mean: far from the raw mean clipped as a whole
        whole = torch.stack(raw).mean(dim=0)
        assert not torch.allclose(got, whole * min(1.0, bound / float(whole.norm())), atol=1e-3)


def test_a_single_samples_step_is_its_gradient_clipped_to_the_bound():
    config = _config(dp_noise_multiplier=1e-9, batch_size=1, microbatches=1)
    for sample in range(3):
        part = _part()
        private = PrivateSteps(config, 0, [32], _schedule(config))
        private.wrap(part, torch.optim.SGD(part.parameters(), lr=1.0))
        x, head, y = _data()
        out = part(x[sample : sample + 1])
        private.forwarded((0, 0))
        loss = nn.functional.cross_entropy(out @ head, y[sample : sample + 1], reduction="sum")
        private.backward((0, 0), loss, torch.ones_like(loss), 1)
        before = _part().state_dict()
        private.step(1)
        step = torch.cat([(before[k] - v).flatten() for k, v in part.state_dict().items()])
        assert float(step.norm()) == pytest.approx(config.dp_max_grad_norm, rel=1e-4)


def test_the_noise_is_drawn_once_per_mini_batch_whatever_its_micro_batches():
    config = _config(dp_noise_multiplier=2.0)
    whole, _ = _private_step(config, [BATCH])
    for sizes in ([4, 4], [1, 3, 4], [1] * BATCH):
        cut, _ = _private_step(config, sizes)
        for name, value in whole.items():
            torch.testing.assert_close(cut[name], value, atol=1e-5, rtol=1e-5, msg=f"{sizes} {name}")
    quiet, _ = _private_step(_config(dp_noise_multiplier=1e-9), [BATCH])
    noise = torch.cat([(whole[k] - quiet[k]).flatten() for k in whole])
    # noise of std sigma x C on the sum, divided by the batch: sigma x C / B per coordinate
    assert float(noise.std()) == pytest.approx(2.0 * 0.5 / BATCH, rel=0.25)


def test_epsilon_grows_with_rounds_as_the_accountant_says():
    from opacus.accountants import RDPAccountant

    config = _config(epochs=3, aggregate_every=2)  # 4 mini-batches an epoch: 6 rounds of 2 steps
    schedule = _schedule(config)
    ledger = PrivacyLedger(config, schedule, [32])
    spent = [ledger.after(r)[0] for r in range(schedule.rounds)]
    assert schedule.rounds == 6 and all(a < b for a, b in itertools.pairwise(spent))
    for r, value in enumerate(spent):
        accountant = RDPAccountant()
        for _ in range(2 * (r + 1)):
            accountant.step(noise_multiplier=1.0, sample_rate=BATCH / 32)
        assert value == pytest.approx(accountant.get_epsilon(delta=1e-5), rel=1e-9)
    assert ledger.metrics()["max_epsilon"] == spent[-1]
    assert epsilon(1.0, 0.25, 0, 1e-5) == 0.0


def test_a_target_epsilon_sets_the_noise_that_the_run_spends_exactly():
    config = _config(dp_noise_multiplier=None, dp_epsilon=3.0, epochs=2)
    sigma = noise_multiplier(config, 32, 8)
    assert epsilon(sigma, BATCH / 32, 8, 1e-5) == pytest.approx(3.0, abs=0.01)
    assert epsilon(sigma, BATCH / 32, 8, 1e-5) <= 3.0
    assert (
        noise_multiplier(_config(dp_noise_multiplier=None, dp_epsilon=1.0), 32, 8) > sigma
    )  # less epsilon, more noise


def test_batchnorm_is_refused_naming_no_batchnorm():
    with pytest.raises(ConfigError, match="--no-batchnorm"):
        _config(batchnorm=True)
    with pytest.raises(ConfigError, match="--no-batchnorm"):
        refuse_batchnorm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)))
    refuse_batchnorm(_part())  # no BatchNorm: nothing to refuse


def test_dp_is_refused_in_sl_and_with_two_noises():
    with pytest.raises(ConfigError, match="sl has no aggregation"):
        _config(mode="sl")
    with pytest.raises(ConfigError, match="both given"):
        _config(dp_epsilon=3.0)
    with pytest.raises(ConfigError, match="above 0 and below 1"):
        _config(dp_delta=1.0)


def test_without_opacus_dp_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "opacus" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'pipelearn\[dp\]'"):
        _config()
    RunConfig(batchnorm=False).validate()  # without DP nothing needs it


def test_local_training_refuses_dp_and_says_which_modes_run_it(tmp_path):
    from pipelearn.trainer import train_local

    with pytest.raises(ConfigError, match="fl, sfl or pipelearn"):
        train_local(_config(dataset="synthetic", out=str(tmp_path)), progress=False)
    assert not (tmp_path / "metrics.json").exists()


def test_a_part_wrapped_again_after_a_replan_is_hooked_once():
    config = _config(dp_noise_multiplier=1e-12, dp_max_grad_norm=1e6, batch_size=1, microbatches=1)  # no clipping
    whole = _part()
    private = PrivateSteps(config, 0, [32], _schedule(config))
    private.wrap(whole[:2], torch.optim.SGD(whole[:2].parameters(), lr=1.0))
    private.wrap(whole, torch.optim.SGD(whole.parameters(), lr=1.0))  # the split moved: the first blocks again
    x, head, y = _data()
    out = whole(x[:1])
    private.forwarded((0, 0))
    loss = nn.functional.cross_entropy(out @ head, y[:1], reduction="sum")
    private.backward((0, 0), loss, torch.ones_like(loss), 1)
    before = _part().state_dict()
    private.step(1)
    step = torch.cat([(before[k] - v).flatten() for k, v in whole.state_dict().items()])
    torch.testing.assert_close(step, _per_sample_gradients()[0], atol=1e-4, rtol=1e-4)  # once, not twice


def test_each_device_and_each_rejoin_draws_noise_of_its_own_and_staleness_is_refused():
    config = _config()
    seeds = {noise_seed(config, d, r) for d in range(4) for r in range(3)}
    assert len(seeds) == 12 and noise_seed(config, 1) == noise_seed(_config(mode="sfl"), 1)  # mode-independent
    stale = build_schedule("pipelearn", [DevicePlan(32, 2, 2)], BATCH, 1, staleness=1)
    with pytest.raises(ValueError, match="staleness"):
        PrivateSteps(config, 0, [32], stale)
