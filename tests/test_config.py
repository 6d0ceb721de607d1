"""Tests for the run configuration: presets, per-device overrides, TOML and JSON, validation."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from pipelearn.config import (
    MODES,
    NETWORK_PRESETS,
    ConfigError,
    DeviceOverride,
    Link,
    RunConfig,
    check_profile_in,
    check_sizes,
    from_mapping,
    load_toml,
)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_defaults_are_valid() -> None:
    config = RunConfig().validate()
    assert config.mode == "pipelearn" and config.mode in MODES
    assert config.link(0) == NETWORK_PRESETS["4g"]


@pytest.mark.parametrize("name", sorted(NETWORK_PRESETS))
def test_presets(name: str) -> None:
    config = RunConfig(network=name, devices=2).validate()
    assert config.link(0) == config.link(1) == NETWORK_PRESETS[name]
    link = NETWORK_PRESETS[name]
    assert link.up_mbps > 0 and link.down_mbps > 0 and link.latency_ms >= 0


def test_unlimited_preset_is_infinite() -> None:
    link = NETWORK_PRESETS["unlimited"]
    assert math.isinf(link.up_mbps) and math.isinf(link.down_mbps) and link.latency_ms == 0


def test_run_wide_rates_override_preset() -> None:
    config = RunConfig(network="wifi", up_mbps=7, latency_ms=1).validate()
    assert config.link(2) == Link(up_mbps=7, down_mbps=NETWORK_PRESETS["wifi"].down_mbps, latency_ms=1)


def test_device_overrides() -> None:
    config = RunConfig(
        devices=3,
        network="4g",
        up_mbps=12,
        device_slowdown=2.0,
        split=3,
        microbatches=4,
        device_overrides={
            1: DeviceOverride(network="wifi", down_mbps=99, device_slowdown=8.0, split=1, microbatches=2),
            2: DeviceOverride(up_mbps=1.5, latency_ms=0),
        },
    ).validate()
    # device 0: run-wide values
    assert config.link(0) == Link(up_mbps=12, down_mbps=25, latency_ms=30)
    assert config.slowdown(0) == 2.0
    assert config.requested_split(0) == 3
    assert config.requested_microbatches(0) == 4
    # device 1: its own preset, then its own rate; the run-wide up_mbps still beats the device's preset
    assert config.link(1) == Link(up_mbps=12, down_mbps=99, latency_ms=NETWORK_PRESETS["wifi"].latency_ms)
    assert config.slowdown(1) == 8.0
    assert config.requested_split(1) == 1
    assert config.requested_microbatches(1) == 2
    # device 2: rates of its own on the run's preset; a latency of 0 is a value, not a missing one
    assert config.link(2) == Link(up_mbps=1.5, down_mbps=25, latency_ms=0)
    assert config.slowdown(2) == 2.0


def test_auto_is_requested_run_wide_or_per_device() -> None:
    config = RunConfig(split="auto", microbatches="auto").validate()
    assert config.requested_split(0) == "auto" and config.requested_microbatches(0) == "auto"
    override = RunConfig(devices=2, device_overrides={1: DeviceOverride(split="auto")}).validate()
    assert override.requested_split(0) == 2 and override.requested_split(1) == "auto"


def test_synthetic_shape_from_toml_and_json(tmp_path: Path) -> None:
    config = load_toml(_toml(tmp_path, 'dataset = "synthetic"\nsynthetic_shape = [3, 32, 32]\n'))
    assert config.synthetic_shape == (3, 32, 32)
    assert RunConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="synthetic_shape"):
        RunConfig(synthetic_shape=(3, 32)).validate()  # type: ignore[arg-type]


def test_load_toml_with_device_override_tables(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        """
mode = "sfl"
devices = 3
network = "4g+"
up_mbps = inf
batch_size = 32
aggregate_every = 5

[device_overrides.1]
network = "wifi"
device_slowdown = 6.5
split = 1

[device_overrides.2]
up_mbps = 2.5
microbatches = 8
""",
    )
    config = load_toml(path)
    assert config.mode == "sfl" and config.devices == 3 and config.batch_size == 32 and config.aggregate_every == 5
    assert math.isinf(config.up_mbps or 0)
    assert math.isinf(config.link(0).up_mbps)
    assert config.link(0).down_mbps == NETWORK_PRESETS["4g+"].down_mbps
    assert set(config.device_overrides) == {1, 2}
    assert config.device_overrides[1] == DeviceOverride(network="wifi", device_slowdown=6.5, split=1)
    assert config.link(1).latency_ms == NETWORK_PRESETS["wifi"].latency_ms
    assert config.slowdown(1) == 6.5 and config.requested_split(1) == 1
    assert config.link(2).up_mbps == 2.5
    assert config.device_overrides[2].microbatches == 8


def test_toml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(_toml(tmp_path, "devices = = 3\n"))
    with pytest.raises(ConfigError, match="colour"):
        load_toml(_toml(tmp_path, 'colour = "red"\n'))
    with pytest.raises(ConfigError, match="'devices'"):
        load_toml(_toml(tmp_path, 'devices = "four"\n'))
    with pytest.raises(ConfigError, match=r"device_overrides\.1"):
        load_toml(_toml(tmp_path, "[device_overrides.1]\nwarp = 9\n"))


def test_unknown_keys_are_named() -> None:
    with pytest.raises(ConfigError, match="epoch") as info:
        from_mapping({"epoch": 3})
    assert "unknown" in str(info.value)
    with pytest.raises(ConfigError, match=r"'batchsize' \(did you mean 'batch_size'\?\), 'colour'; known: "):
        from_mapping({"colour": 1, "batchsize": 2})
    with pytest.raises(ConfigError, match=r"speed.*device_overrides\.0"):
        from_mapping({"device_overrides": {"0": {"speed": 2}}})
    with pytest.raises(ConfigError, match="'x' is not a device id"):
        from_mapping({"device_overrides": {"x": {"split": 1}}})


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"mode": "gossip"}, "mode"),
        ({"network": "5g"}, "network"),
        ({"network": ["4g"]}, "network"),
        ({"devices": 0}, "devices"),
        ({"devices": "4"}, "devices"),
        ({"devices": 2.5}, "devices"),
        ({"devices": True}, "devices"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"device_slowdown": 0.5}, "device_slowdown"),
        ({"device_slowdown": "fast"}, "device_slowdown"),
        ({"partition": "random"}, "partition"),
        ({"dirichlet_alpha": 0}, "dirichlet_alpha"),
        ({"lr": 0}, "lr"),
        ({"lr": "0.1"}, "lr"),
        ({"threads": 0}, "threads"),
        ({"host_cores": 0}, "host_cores"),
        ({"host_cores": "all"}, "host_cores"),
        ({"host_cores": math.inf}, "host_cores"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"heartbeat_s": 0}, "heartbeat_s"),
        ({"heartbeat_s": "often"}, "heartbeat_s"),
        ({"liveness_s": -1}, "liveness_s"),
        ({"heartbeat_s": 2.0, "liveness_s": 3.0}, "liveness_s"),
        ({"samples_per_device": 0}, "samples_per_device"),
        ({"aggregate_every": 0}, "aggregate_every"),
        ({"test_samples": "all"}, "test_samples"),
        ({"eval_every": -1}, "eval_every"),
        ({"eval_every": 1.5}, "eval_every"),
        ({"eval_samples": 0}, "eval_samples"),
        ({"target_accuracy": 97}, "target_accuracy"),
        ({"target_accuracy": "high"}, "target_accuracy"),
        ({"stop_at_target": "yes"}, "stop_at_target"),
        ({"stop_at_target": True}, "target_accuracy"),
        ({"stop_at_target": True, "target_accuracy": 0.9, "eval_every": 0}, "eval_every"),
        ({"stop_at_target": True, "target_accuracy": 0.9, "mode": "sl"}, "stop_at_target"),
        ({"split": "middle"}, "split"),
        ({"split": 1.5}, "split"),
        ({"microbatches": 0}, "microbatches"),
        ({"microbatches": "many"}, "microbatches"),
        ({"up_mbps": 0}, "up_mbps"),
        ({"down_mbps": -1}, "down_mbps"),
        ({"up_mbps": "fast"}, "up_mbps"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"batchnorm": "no"}, "batchnorm"),
        ({"model": 5}, "model"),
        ({"server_device": "gpu"}, "server_device"),
        ({"server_device": "cuda:"}, "server_device"),
        ({"server_amp": "fp16"}, "server_amp"),
        ({"devices": 2, "device_overrides": {"2": {}}}, "device_overrides"),
        ({"device_overrides": {"-1": {}}}, "device_overrides"),
        ({"device_overrides": {"0": {"network": "5g"}}}, "device_overrides.0.network"),
        ({"device_overrides": {"0": {"network": ["4g"]}}}, "device_overrides.0.network"),
        ({"device_overrides": {"1": {"device_slowdown": 0.5}}}, "device_overrides.1.device_slowdown"),
        ({"device_overrides": {"1": {"device_slowdown": "x"}}}, "device_overrides.1.device_slowdown"),
        ({"device_overrides": {"1": {"microbatches": 0}}}, "device_overrides.1.microbatches"),
        ({"device_overrides": {"1": {"microbatches": "many"}}}, "device_overrides.1.microbatches"),
        ({"device_overrides": {"1": {"split": "middle"}}}, "device_overrides.1.split"),
        ({"device_overrides": {"1": {"up_mbps": -1}}}, "device_overrides.1.up_mbps"),
        ({"device_overrides": {"1": {"down_mbps": 0}}}, "device_overrides.1.down_mbps"),
        ({"device_overrides": {"1": {"latency_ms": -5}}}, "device_overrides.1.latency_ms"),
        ({"device_overrides": {"1": 3}}, "device_overrides.1"),
        ({"device_overrides": [1, 2]}, "device_overrides"),
    ],
)
def test_bad_values_name_the_key(values: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping(values)
    assert f"'{key}'" in str(info.value)


def test_liveness_must_span_at_least_two_heartbeats() -> None:
    with pytest.raises(
        ConfigError, match=r"'liveness_s' is 1\.5; expected at least twice config key 'heartbeat_s' \(1\)"
    ):
        from_mapping({"heartbeat_s": 1.0, "liveness_s": 1.5})
    assert from_mapping({"heartbeat_s": 0.5, "liveness_s": 1.0}).liveness_s == 1.0


def test_good_edge_values() -> None:
    config = from_mapping(
        {
            "up_mbps": math.inf,
            "latency_ms": 0,
            "lr": 1,  # a whole number where a float is expected is fine
            "microbatches": "auto",
            "split": "auto",
            "samples_per_device": None,
            "device_overrides": {"0": {"microbatches": "auto", "latency_ms": 0, "up_mbps": math.inf}},
        }
    )
    assert config.lr == 1 and config.microbatches == "auto"
    assert math.isinf(config.link(0).up_mbps) and config.link(0).latency_ms == 0


def test_json_round_trip_with_inf_and_overrides() -> None:
    config = RunConfig(
        mode="sl",
        devices=3,
        network="unlimited",
        down_mbps=math.inf,
        split="auto",
        aggregate_every=7,
        samples_per_device=None,
        device_overrides={2: DeviceOverride(up_mbps=math.inf, device_slowdown=3.0, microbatches=5)},
    ).validate()
    text = config.to_json()
    assert "pickle" not in text
    data = json.loads(text)
    assert data["device_overrides"] == {"2": dataclasses.asdict(config.device_overrides[2])}
    again = RunConfig.from_json(text)
    assert again == config
    assert isinstance(next(iter(again.device_overrides)), int)
    assert math.isinf(again.link(0).up_mbps) and math.isinf(again.link(2).up_mbps)


def test_from_json_validates() -> None:
    data = json.loads(RunConfig().to_json())
    data["batch_size"] = -3
    with pytest.raises(ConfigError, match="batch_size"):
        RunConfig.from_json(json.dumps(data))


# --- rate schedules ------------------------------------------------------------------------------------------------


def test_rates_over_time_take_the_most_specific_schedule_or_rate() -> None:
    config = RunConfig(
        devices=4,
        network="4g",
        up_schedule=[[0, 10], [30, 2], [60, 10]],
        device_overrides={
            1: DeviceOverride(up_schedule=[[0, 5], [10, 1]], down_schedule=[[0, 40], [5.5, 20]]),
            2: DeviceOverride(up_mbps=3),
            3: DeviceOverride(network="wifi"),
        },
    ).validate()
    assert config.rates(0, "up") == ((0.0, 10.0), (30.0, 2.0), (60.0, 10.0))
    assert config.rates(0, "down") == ((0.0, 25.0),)  # the preset's rate: one step for the whole run
    assert config.rates(1, "up") == ((0.0, 5.0), (10.0, 1.0))
    assert config.rates(1, "down") == ((0.0, 40.0), (5.5, 20.0))
    assert config.rates(2, "up") == ((0.0, 3.0),)  # the device's fixed rate beats the run's schedule
    assert config.rates(3, "up") == config.rates(0, "up")  # as the run-wide up_mbps beats a device's preset
    assert config.rates(3, "down") == ((0.0, 50.0),)
    # link() is the network at training start
    assert config.link(1) == Link(up_mbps=5.0, down_mbps=40.0, latency_ms=30)
    assert config.link(0).up_mbps == 10.0


def test_schedules_from_toml_and_through_json(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        """
devices = 2
up_schedule = [[0, 10], [30, 2], [60, 10]]

[device_overrides.1]
down_schedule = [[0, 25], [0.5, 1.5]]
""",
    )
    config = load_toml(path)
    assert config.rates(1, "up") == ((0.0, 10.0), (30.0, 2.0), (60.0, 10.0))
    assert config.rates(1, "down") == ((0.0, 25.0), (0.5, 1.5))
    assert RunConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    "schedule",
    [
        [],
        [[1, 10]],  # does not start at 0 s
        [[0, 10], [30, 2], [20, 5]],  # times fall
        [[0, 10], [0, 2]],  # times repeat
        [[0, 0]],  # a rate of 0
        [[0, -3]],
        [[0, 10, 5]],  # not a pair
        [[0, "fast"]],
        [[0, 10], [math.inf, 2]],
        10,
        "0:10,30:2",
    ],
)
def test_bad_schedules_name_the_key(schedule: Any) -> None:
    for values, key in [
        ({"up_schedule": schedule}, "up_schedule"),
        ({"down_schedule": schedule}, "down_schedule"),
        ({"device_overrides": {"0": {"up_schedule": schedule}}}, "device_overrides.0.up_schedule"),
    ]:
        with pytest.raises(ConfigError, match=rf"'{key}' is .*expected a list of \[seconds since training start"):
            from_mapping(values)


@pytest.mark.parametrize(
    ("values", "keys"),
    [
        ({"up_mbps": 5, "up_schedule": [[0, 5]]}, ("up_schedule", "up_mbps")),
        ({"down_mbps": 5, "down_schedule": [[0, 5]]}, ("down_schedule", "down_mbps")),
        (
            {"device_overrides": {"0": {"up_mbps": 1, "up_schedule": [[0, 5]]}}},
            ("device_overrides.0.up_schedule", "device_overrides.0.up_mbps"),
        ),
    ],
)
def test_a_rate_and_a_schedule_of_one_direction_are_refused(values: dict[str, Any], keys: tuple[str, str]) -> None:
    with pytest.raises(ConfigError, match=rf"'{keys[0]}' and config key '{keys[1]}' are both given; give one"):
        from_mapping(values)


def test_netns_must_be_a_boolean() -> None:
    assert from_mapping({"netns": True}).netns is True
    with pytest.raises(ConfigError, match="'netns' is 'yes'; expected true or false"):
        from_mapping({"netns": "yes"})


def test_compression_per_direction() -> None:
    config = RunConfig().validate()
    assert config.codec("up") == config.codec("down") == "none"
    config = RunConfig(compress="int8", compress_down="topk:0.05").validate()
    assert config.codec("up") == "int8" and config.codec("down") == "topk:0.05"
    config = RunConfig(compress_up="bf16").validate()
    assert config.codec("up") == "bf16" and config.codec("down") == "none"
    assert RunConfig.from_json(config.to_json()) == config
    with pytest.raises(ConfigError, match="'compress' is None"):
        from_mapping({"compress": None})  # only the per-direction keys may be left out


@pytest.mark.parametrize("key", ["compress", "compress_up", "compress_down"])
@pytest.mark.parametrize("value", ["int4", "topk", "topk:0", "topk:1.5", "topk:x", "fp16:0.5", 8])
def test_bad_compression_names_the_key_and_the_choices(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"'{key}' is .*expected none, fp16, bf16, int8 or topk:R with 0 < R < 1"):
        from_mapping({key: value})


def test_plugins_and_hardware_in_toml(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('model = "my_nets:small_cnn"\ndataset = "data/mine.py:load"\nserver_device = "cuda:1"\n')
    config = load_toml(path)
    assert (config.model, config.dataset, config.server_device, config.server_amp) == (
        "my_nets:small_cnn",
        "data/mine.py:load",
        "cuda:1",
        "off",
    )


# --- one spelling, suggestions, and counts the run would cap -------------------------------------------------------


def test_misspelt_keys_get_the_closest_known_one() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'epoch' \(did you mean 'epochs'\?\)$"):
        from_mapping({"epoch": 3})
    with pytest.raises(ConfigError, match=r"'slowdwn' \(did you mean 'device_slowdown'\?\) in device_overrides\.1"):
        from_mapping({"device_overrides": {"1": {"slowdwn": 2.0}}})
    with pytest.raises(ConfigError, match="known: "):  # nothing close: the known keys are listed
        from_mapping({"zzz": 1})


def test_the_old_override_key_slowdown_still_reads_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="pipelearn.config"):
        config = from_mapping({"devices": 3, "device_overrides": {"1": {"slowdown": 6.0}, "2": {"slowdown": 2.0}}})
    assert config.device_overrides[1] == DeviceOverride(device_slowdown=6.0) and config.slowdown(2) == 2.0
    [record] = caplog.records
    assert "device_overrides.1, 2: the key 'slowdown' is now 'device_slowdown'" in record.getMessage()
    with pytest.raises(ConfigError, match="both 'slowdown' and 'device_slowdown'"):
        from_mapping({"device_overrides": {"1": {"slowdown": 6.0, "device_slowdown": 2.0}}})


def test_a_message_names_each_key_as_the_user_spelt_it() -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping({"heartbeat_s": 2.0, "liveness_s": 3.0})
    assert str(info.value).startswith("config key 'liveness_s' is 3.0; expected at least twice config key 'heart")
    shown = info.value.message({"liveness_s": "--liveness", "heartbeat_s": "--heartbeat-s"})
    assert shown == "--liveness is 3.0; expected at least twice --heartbeat-s (2)"
    assert ConfigError("a {brace} as it is").message({"x": "--x"}) == "a {brace} as it is"  # no keys: no formatting


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"microbatches": 200}, ["'microbatches' is 200, more than config key 'batch_size' 100", "at most 100"]),
        (
            {"devices": 2, "device_overrides": {"1": {"microbatches": 101}}},
            ["'device_overrides.1.microbatches' is 101, more than config key 'batch_size' 100"],
        ),
        ({"samples_per_device": 50}, ["'batch_size' is 100, more than config key 'samples_per_device' 50"]),
        (
            {"test_samples": 100, "eval_samples": 500},
            ["'eval_samples' is 500, more than config key 'test_samples' 100"],
        ),
    ],
)
def test_counts_the_run_would_cap_are_refused_naming_both_values(values: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping(values)
    for word in words:
        assert word in str(info.value)


def test_micro_batches_are_only_checked_where_they_cut_mini_batches() -> None:
    assert from_mapping({"mode": "sfl", "microbatches": 200}).microbatches == 200  # sfl sends whole mini-batches
    assert from_mapping({"microbatches": 100, "samples_per_device": 100}).microbatches == 100


def test_sizes_of_the_data_set_refuse_more_test_samples_than_it_has() -> None:
    with pytest.raises(ConfigError, match=r"'test_samples' is 20000, more than the 10000 samples of mnist's test"):
        check_sizes(RunConfig(test_samples=20000).validate(), 10000, [1000] * 4)
    with pytest.raises(ConfigError, match="'eval_samples' is 12000"):
        check_sizes(RunConfig(eval_samples=12000).validate(), 10000, [1000] * 4)
    assert check_sizes(RunConfig(test_samples=10000).validate(), 10000, [1000] * 4) == []


def test_sizes_of_the_devices_warn_where_they_cap_batches_in_one_line_each() -> None:
    config = RunConfig(devices=3, partition="dirichlet", microbatches=8, samples_per_device=None).validate()
    [batches, micro] = check_sizes(config, 10000, [500, 40, 5])
    assert "fewer training samples than batch_size 100 (device 1 40, device 2 5)" in batches
    assert "(device 2 8 into 5)" in micro
    assert check_sizes(dataclasses.replace(config, mode="sfl"), 10000, [500, 40, 5]) == [batches]


def test_a_profile_in_that_is_no_file_is_refused_and_one_never_read_is_warned_of(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'profile_in' is '.*none\.json', which is no file; save one with"):
        check_profile_in(RunConfig(profile_in=str(tmp_path / "none.json")).validate())
    saved = tmp_path / "vgg5.json"
    saved.write_text("{}")
    [warning] = check_profile_in(RunConfig(profile_in=str(saved)).validate())  # split 2, 4 micro-batches: fixed
    assert "is not read: every split and micro-batch count is fixed" in warning
    assert check_profile_in(RunConfig(profile_in=str(saved), split="auto").validate()) == []
    assert check_profile_in(RunConfig(mode="fl", profile_in=str(saved), split="auto").validate())  # fl: no split
    assert check_profile_in(RunConfig().validate()) == []


def test_configure_suggests_the_setting_meant() -> None:
    from pipelearn.api import configure

    with pytest.raises(ConfigError, match=r"unknown setting 'epoch' \(did you mean 'epochs'\?\)"):
        configure(epoch=3)
    with pytest.raises(ConfigError, match=r"'batchsize' \(did you mean 'batch_size'\?\)"):
        configure(RunConfig(), batchsize=3)


def test_slowdown_over_time_takes_the_most_specific_schedule_or_factor() -> None:
    config = RunConfig(
        devices=3,
        device_slowdown=3.0,
        slowdown_schedule=[[0, 2.0], [60, 8.0]],
        device_overrides={1: DeviceOverride(device_slowdown=5.0), 2: DeviceOverride(slowdown_schedule=[[0, 1.0]])},
    ).validate()
    assert config.slowdowns(0) == ((0.0, 2.0), (60.0, 8.0)) and config.slowdown(0) == 2.0
    assert config.slowdowns(1) == ((0.0, 5.0),) and config.slowdowns(2) == ((0.0, 1.0),)
    assert RunConfig(device_slowdown=3.0).slowdowns(0) == ((0.0, 3.0),)
    assert RunConfig.from_json(config.to_json()).slowdowns(0) == config.slowdowns(0)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"slowdown_schedule": [[0, 0.5]]}, "slowdown_schedule"),
        ({"slowdown_schedule": [[5, 2.0]]}, "the first at 0"),
        ({"device_overrides": {0: DeviceOverride(device_slowdown=2.0, slowdown_schedule=[[0, 2.0]])}}, "both given"),
        ({"adapt": "sometimes"}, "on or off"),
        ({"server_order": "random"}, "arrival or critical-path"),
        ({"staleness": 2}, "0 or 1"),
        ({"staleness": 1, "mode": "fl"}, "0 in fl"),
        ({"staleness": 1, "dp_epsilon": 3.0, "batchnorm": False}, "0 with config key 'dp_epsilon'"),
    ],
)
def test_bad_adaptation_settings_are_refused_naming_the_key(values: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        RunConfig(**values).validate()
