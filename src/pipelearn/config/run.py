"""A run's configuration: `RunConfig`, each field with its one description, and per-device overrides."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pipelearn.config.rules import _first, check_run
from pipelearn.config.values import NETWORK_PRESETS, Direction, Link, Mode, RateSteps


def _meta(*, unit: str = "", metavar: str = "", choices: Iterable[str] = ()) -> dict[str, Any]:
    """A field's metadata: the unit of its value, the form of its flag's value, and the values it may take where its
    type does not say (pipelearn.settings reads them)."""
    return {"unit": unit, "metavar": metavar, "choices": tuple(choices)}


@dataclass
class DeviceOverride:
    """Per-device settings that differ from the run's defaults (heterogeneous fleets)."""

    network: str | None = None
    """A preset name from NETWORK_PRESETS."""
    up_mbps: float | None = field(default=None, metadata=_meta(unit="Mbit/s"))
    """This device's uplink rate, as RunConfig.up_mbps."""
    down_mbps: float | None = field(default=None, metadata=_meta(unit="Mbit/s"))
    """This device's downlink rate, as RunConfig.down_mbps."""
    latency_ms: float | None = field(default=None, metadata=_meta(unit="ms"))
    """This device's one-way latency, as RunConfig.latency_ms."""
    device_slowdown: float | None = field(default=None, metadata=_meta(unit="times"))
    """Device computation takes this many times its measured time, as RunConfig.device_slowdown."""
    split: int | Literal["auto"] | None = None
    """This device's split point, as RunConfig.split."""
    microbatches: int | Literal["auto"] | None = None
    """This device's micro-batch count, as RunConfig.microbatches."""
    up_schedule: list[list[float]] | None = None
    """This device's uplink rate over time, as RunConfig.up_schedule; give it or up_mbps, not both."""
    down_schedule: list[list[float]] | None = None
    """This device's downlink rate over time, as RunConfig.down_schedule; give it or down_mbps, not both."""
    slowdown_schedule: list[list[float]] | None = None
    """This device's slowdown over time, as RunConfig.slowdown_schedule; give it or device_slowdown, not both."""
    ray_cpus: float | None = field(default=None, metadata=_meta(unit="CPUs"))
    """The CPUs Ray gives this device, as RunConfig.ray_device_cpus."""


@dataclass
class RunConfig:
    """Everything one training run needs; every process of the run sees the same values.

    Each field's docstring is its one description: `pipelearn.settings` makes the command line's flags (the name
    with dashes), their help and the README's flag table from the fields, their types, defaults and metadata.
    """

    mode: Mode = "pipelearn"
    """fl, sl, sfl or pipelearn."""
    model: str = field(default="vgg5", metadata=_meta(metavar="NAME|MODULE:FUNCTION"))
    """A zoo model (vgg5, vgg8, vgg11, vgg16, resnet18, resnet50, mobilenetv3-small, mobilenetv3-large), or a
    plug-in MODULE:FUNCTION or FILE.py:FUNCTION (a pipelearn.models.ModelFactory); every device must be started with
    the same plug-in."""
    dataset: str = field(default="mnist", metadata=_meta(metavar="NAME|MODULE:FUNCTION"))
    """A data set (mnist, fashion-mnist, cifar10, cifar100, svhn; idx: a directory of idx files; synthetic; saved: a
    directory written by pipelearn.save_dataset), or a plug-in MODULE:FUNCTION or FILE.py:FUNCTION (a
    pipelearn.data.DatasetFactory); every device must be started with the same plug-in."""
    synthetic_shape: tuple[int, int, int] = field(default=(1, 28, 28), metadata=_meta(metavar="CxHxW"))
    """Sample shape (channels, height, width) of the synthetic data set; (3, 32, 32) is CIFAR's."""
    data_dir: str | None = field(default=None, metadata=_meta(metavar="DIR"))
    """Directory holding the data set's official files, where it needs one."""
    download: bool = False
    """Fetch the data set's official files (checksummed) when they are missing; needs a network."""
    batchnorm: bool = True
    """Whether the zoo model has BatchNorm layers."""
    devices: int = field(default=4, metadata=_meta(metavar="N"))
    """Number of devices."""
    network: str = field(default="4g", metadata=_meta(choices=NETWORK_PRESETS))
    """Network preset for every device: 4g (10/25 Mbit/s up/down, 30 ms), 4g+ (20/60, 20 ms), wifi (50/50, 5 ms) or
    unlimited."""
    up_mbps: float | None = field(default=None, metadata=_meta(unit="Mbit/s", metavar="MBPS"))
    """Uplink rate in Mbit/s (inf for unlimited); overrides the preset's."""
    down_mbps: float | None = field(default=None, metadata=_meta(unit="Mbit/s", metavar="MBPS"))
    """Downlink rate in Mbit/s (inf for unlimited); overrides the preset's."""
    latency_ms: float | None = field(default=None, metadata=_meta(unit="ms", metavar="MS"))
    """One-way latency in ms; overrides the preset's."""
    up_schedule: list[list[float]] | None = field(default=None, metadata=_meta(metavar="S:MBPS,..."))
    """Uplink rate over time for every device: [[seconds since training start, Mbit/s], ...], the first at 0 s
    (on the command line 0:10,30:2,60:10); overrides the preset's rate. Give it or up_mbps, not both."""
    down_schedule: list[list[float]] | None = field(default=None, metadata=_meta(metavar="S:MBPS,..."))
    """Downlink rate over time for every device, as up_schedule. Give it or down_mbps, not both."""
    netns: bool = False
    """Run the server and every device as separate hosts in Linux network namespaces, each link's rates enforced
    by the kernel (tc); `pipelearn run` only, as root. The user-space links then add only the latency."""
    launcher: Literal["local", "ray"] = "local"
    """Who places the server and the devices of `pipelearn run`: local (processes on this machine) or ray (actors on a
    Ray cluster, `pip install pipelearn[ray]`); either way the devices dial the server over gRPC with mutual TLS."""
    ray_address: str | None = field(default=None, metadata=_meta(metavar="auto|HOST:PORT"))
    """The Ray cluster of launcher ray: auto (the one `ray start` made on this node) or its head's HOST:PORT; none
    starts a Ray instance on this machine for the run, with as many CPUs as the run reserves (at least its own)."""
    ray_server_cpus: float = field(default=1.0, metadata=_meta(unit="CPUs", metavar="N"))
    """The CPUs Ray reserves for the server (launcher ray)."""
    ray_server_gpus: float = field(default=0.0, metadata=_meta(unit="GPUs", metavar="N"))
    """The GPUs Ray reserves for the server (launcher ray); with one, server_device auto trains there."""
    ray_device_cpus: float = field(default=1.0, metadata=_meta(unit="CPUs", metavar="N"))
    """The CPUs Ray reserves for each device (launcher ray), a fraction such as 0.25 included; per device in
    device_overrides (ray_cpus)."""
    device_slowdown: float = field(default=4.0, metadata=_meta(unit="times", metavar="K"))
    """Each device action takes this many times the CPU time its work needs here (devices are slower than servers);
    the device waits out the difference. Time lost to other processes on a shared machine is not multiplied."""
    slowdown_schedule: list[list[float]] | None = field(default=None, metadata=_meta(metavar="S:K,..."))
    """Every device's slowdown over time, as a device that throttles or takes other load: [[seconds since training
    start, factor], ...], the first at 0 s (on the command line 0:4,60:16); replaces device_slowdown."""
    split: int | Literal["auto"] = field(default=2, metadata=_meta(unit="blocks", metavar="P|auto"))
    """Split point p: blocks 1..p run on the device; 'auto' lets the planner choose per device."""
    microbatches: int | Literal["auto"] = field(default=4, metadata=_meta(metavar="N|auto"))
    """Micro-batches per mini-batch in pipelearn mode (sfl and sl use 1, fl 1), at most batch_size; 'auto' lets the
    planner choose."""
    adapt: Literal["on", "off"] = "on"
    """Re-plan at aggregation from what the run measures (each device's speed, each link's rate, the server's
    costs): where a split or micro-batch count is 'auto' and a new plan is predicted clearly faster, the next round
    runs it. Nothing is re-planned where every split and micro-batch count is fixed."""
    server_order: Literal["arrival", "critical-path"] = "arrival"
    """Which waiting device the shared server computes for first: the one whose work arrived first, or the one
    predicted to finish its round last (a straggler), so that the round ends sooner."""
    epochs: int = field(default=2, metadata=_meta(metavar="N"))
    """Passes over each device's data."""
    batch_size: int = field(default=100, metadata=_meta(unit="samples", metavar="SAMPLES"))
    """Mini-batch size on each device, at most samples_per_device."""
    samples_per_device: int | None = field(default=1000, metadata=_meta(unit="samples", metavar="SAMPLES"))
    """Training samples per device, drawn from the training split; none uses the whole split."""
    partition: Literal["iid", "dirichlet"] = "iid"
    """How samples are dealt to devices: iid, or a non-IID dirichlet label split."""
    dirichlet_alpha: float = field(default=0.5, metadata=_meta(metavar="ALPHA"))
    """Concentration of the non-IID label split; smaller is more skewed."""
    aggregate_every: int | None = field(default=None, metadata=_meta(unit="iterations", metavar="ITERATIONS"))
    """FedAvg every this many iterations; none means once per epoch."""
    staleness: int = field(default=0, metadata=_meta(unit="mini-batches", metavar="0|1"))
    """How many mini-batches late each side applies its gradient: 0 is the paper's arithmetic; 1 lets the next
    mini-batch's forwards run while this one's gradients come back (no fill and drain per mini-batch; each backward
    uses the weights its forward used; FedAvg still averages fully updated models). Not in fl."""
    lr: float = field(default=0.01, metadata=_meta(metavar="LR"))
    """SGD learning rate."""
    momentum: float = field(default=0.9, metadata=_meta(metavar="M"))
    """SGD momentum."""
    optimizer_state: Literal["keep", "reset"] = "keep"
    """What SGD momentum does when FedAvg replaces a part's weights: "keep" applies the old momentum to the new
    weights (the paper's reference code builds each optimizer once); "reset" starts from none, as a fresh optimizer
    per round would (Flower's examples)."""
    dp_noise_multiplier: float | None = field(default=None, metadata=_meta(unit="times", metavar="SIGMA"))
    """Train every device's part with DP-SGD (Opacus: each sample's gradient clipped to dp_max_grad_norm, Gaussian
    noise of this many times dp_max_grad_norm added once per mini-batch); fl, sfl and pipelearn. None: no DP unless
    dp_epsilon is given. Needs pipelearn[dp] and a model without BatchNorm."""
    dp_epsilon: float | None = field(default=None, metadata=_meta(metavar="EPSILON"))
    """Train with DP-SGD with the least noise that keeps each device within this epsilon (at dp_delta) over the
    whole run (Opacus's RDP accountant); give it or dp_noise_multiplier, not both."""
    dp_max_grad_norm: float = field(default=1.0, metadata=_meta(metavar="C"))
    """DP-SGD's bound on each sample's gradient (L2 norm over the device's part)."""
    dp_delta: float = field(default=1e-5, metadata=_meta(metavar="DELTA"))
    """The delta at which the privacy spent (epsilon) is reported and dp_epsilon is met; below 1 / a device's
    samples."""
    seed: int = field(default=0, metadata=_meta(metavar="N"))
    """Seed of the initial weights, of each device's samples and of their shuffling."""
    test_samples: int | None = field(default=None, metadata=_meta(unit="samples", metavar="SAMPLES"))
    """Evaluate on this many test samples, at most the test split's; none uses the whole test split."""
    eval_every: int = field(default=1, metadata=_meta(unit="rounds", metavar="ROUNDS"))
    """Evaluate the global model after every this many aggregation rounds (and the last), beside training; 0: only
    the final model."""
    eval_samples: int | None = field(default=None, metadata=_meta(unit="samples", metavar="SAMPLES"))
    """Evaluate each round's global model on this many test samples (seeded), at most test_samples; none: as
    test_samples."""
    target_accuracy: float | None = field(default=None, metadata=_meta(unit="fraction", metavar="A"))
    """Record the time and round at which the global model first reaches this test accuracy (a fraction)."""
    stop_at_target: bool = False
    """End the run at the first aggregation after the global model has reached target_accuracy."""
    threads: int = field(default=1, metadata=_meta(metavar="N"))
    """torch threads per process; 1 keeps processes from starving each other on few cores."""
    host_cores: float | Literal["auto", "off"] = field(
        default="auto", metadata=_meta(unit="cores", metavar="N|auto|off")
    )
    """CPU cores that the server and every device share, for the planner's predictions: what compute at once
    shares them. 'auto': this machine's usable cores, as `pipelearn run` starts every process here ('off' for
    `pipelearn server`, whose devices are elsewhere); 'off': each on hardware of its own; or a number of cores."""
    profile_in: str | None = field(default=None, metadata=_meta(metavar="FILE"))
    """A saved profile (`pipelearn plan --profile-out FILE`, calibrated or not) that the planner chooses every
    `auto` from, instead of profiling the model as the run starts."""
    timeout_s: float = field(default=120.0, metadata=_meta(unit="seconds", metavar="SECONDS"))
    """Least time a device gets to show progress towards its next scheduled message, and the limit for joining and
    loading data. Its deadline is longer where the plan and its pace so far expect longer (see
    pipelearn.transport.liveness); past it the server warns, late by as much again it drops the device. Raise it for
    first steps longer than this: nothing is measured before them."""
    heartbeat_s: float = field(default=1.0, metadata=_meta(unit="seconds", metavar="SECONDS"))
    """Seconds between the heartbeats each side sends the other: alive, and how far along (not training traffic)."""
    liveness_s: float = field(default=10.0, metadata=_meta(unit="seconds", metavar="SECONDS"))
    """A peer from which nothing arrives, not even a heartbeat, for this long is dead: the server drops such a
    device, and a device gives up on such a server. Heartbeats pass what an emulated link is pacing, but not a
    message already crossing a real network: there, keep it above the time the largest message takes to cross."""
    compress: str = field(default="none", metadata=_meta(metavar="none|fp16|bf16|int8|topk:R"))
    """Compression of every tensor sent, both ways: none, fp16, bf16, int8 or topk:R (keep the largest fraction R)."""
    compress_up: str | None = field(default=None, metadata=_meta(metavar="CODEC"))
    """Compression of what devices send (activations, weights), as compress; overrides compress."""
    compress_down: str | None = field(default=None, metadata=_meta(metavar="CODEC"))
    """Compression of what the server sends (gradients, weights), as compress; overrides compress."""
    server_device: str = field(default="auto", metadata=_meta(metavar="auto|cpu|cuda|cuda:N|mps"))
    """Where the server trains its parts: auto (a GPU where torch sees one, else the CPU), cpu, cuda, cuda:N or mps."""
    server_amp: Literal["off", "bf16"] = "off"
    """Mixed precision of the server's forward passes: off, or bf16 (torch.autocast) where the hardware has it."""
    out: str = field(default="runs/latest", metadata=_meta(metavar="DIR"))
    """Output directory for metrics.json, trace.json, model.safetensors and the checkpoints. The default gives each
    run a new directory, runs/RUN, and points runs/latest at the newest; a directory given that holds another run's
    results is refused unless replace is set."""
    replace: bool = False
    """Let this run replace the results of an earlier run in out (its metrics, trace, model and checkpoints)."""
    device_overrides: dict[int, DeviceOverride] = field(default_factory=dict)
    """Per-device settings, keyed by device id: TOML tables [device_overrides.N] of network, up_mbps, down_mbps,
    latency_ms, device_slowdown, slowdown_schedule, split, microbatches, up_schedule, down_schedule and ray_cpus."""

    def link(self, device: int) -> Link:
        """The network of one device at training start, overrides applied (`rates` gives the rates over time)."""
        o = self.device_overrides.get(device, DeviceOverride())
        base = NETWORK_PRESETS[o.network or self.network]
        return Link(
            up_mbps=self.rates(device, "up")[0][1],
            down_mbps=self.rates(device, "down")[0][1],
            latency_ms=_first(o.latency_ms, self.latency_ms, base.latency_ms),
        )

    def rates(self, device: int, direction: Direction) -> RateSteps:
        """One device's uplink or downlink rate over time: the most specific schedule or rate given wins."""
        o = self.device_overrides.get(device, DeviceOverride())
        for level in (o, self):
            schedule, mbps = getattr(level, f"{direction}_schedule"), getattr(level, f"{direction}_mbps")
            if schedule is not None:
                return tuple((float(t), float(rate)) for t, rate in schedule)
            if mbps is not None:
                return ((0.0, float(mbps)),)
        base = NETWORK_PRESETS[o.network or self.network]
        return ((0.0, float(base.up_mbps if direction == "up" else base.down_mbps)),)

    def ray_cpus(self, device: int) -> float:
        """The CPUs Ray reserves for one device (launcher ray)."""
        return _first(self.device_overrides.get(device, DeviceOverride()).ray_cpus, self.ray_device_cpus)

    def slowdown(self, device: int) -> float:
        """The compute slowdown factor of one device at training start (`slowdowns` gives it over time)."""
        return self.slowdowns(device)[0][1]

    def slowdowns(self, device: int) -> RateSteps:
        """One device's slowdown over time: (seconds since training start, factor) steps; the most specific given
        wins (the device's schedule or factor, then the run's)."""
        o = self.device_overrides.get(device, DeviceOverride())
        for schedule, factor in ((o.slowdown_schedule, o.device_slowdown), (self.slowdown_schedule, None)):
            if schedule is not None:
                return tuple((float(t), float(k)) for t, k in schedule)
            if factor is not None:
                return ((0.0, float(factor)),)
        return ((0.0, float(self.device_slowdown)),)

    def requested_split(self, device: int) -> int | Literal["auto"]:
        """The split point asked for one device, 'auto' included; the run plan resolves it (pipelearn.plan)."""
        o = self.device_overrides.get(device, DeviceOverride()).split
        return o if o is not None else self.split

    def requested_microbatches(self, device: int) -> int | Literal["auto"]:
        """The micro-batch count asked for one device, 'auto' included; the run plan resolves it."""
        o = self.device_overrides.get(device, DeviceOverride()).microbatches
        return o if o is not None else self.microbatches

    def codec(self, direction: Direction) -> str:
        """The compression of one direction: up (device to server) or down."""
        return _first(self.compress_up if direction == "up" else self.compress_down, self.compress)

    def validate(self) -> RunConfig:
        """Check every value; raise ConfigError naming the first bad key."""
        check_run(self)
        return self

    def to_json(self) -> str:
        """Serialise for the wire (JSON, never pickle)."""
        data = dataclasses.asdict(self)
        data["device_overrides"] = {str(k): v for k, v in data["device_overrides"].items()}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        """Inverse of to_json."""
        from pipelearn.config.loading import from_mapping  # loading builds RunConfigs

        return from_mapping(json.loads(text))
