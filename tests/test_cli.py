"""Tests for the command line: flags over TOML over defaults, exit statuses and messages for bad values."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from pipelearn import __version__
from pipelearn.cli import _config, _given, _parser, _plan_config, _summary, main
from pipelearn.config import ConfigError, DeviceOverride, RunConfig
from pipelearn.settings import deprecations, settings, typed_flags


def _toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return str(path)


def test_defaults_without_toml() -> None:
    assert _config(_parser().parse_args(["run"])) == RunConfig().validate()
    assert _config(_parser().parse_args(["server", "--listen", "0.0.0.0:50051"])) == RunConfig().validate()


def test_flags_override_toml(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        """
mode = "sfl"
devices = 5
batch_size = 32
network = "wifi"
batchnorm = false

[device_overrides.4]
device_slowdown = 9.0
""",
    )
    config = _config(_parser().parse_args(["run", path, "--devices", "6", "--lr", "0.5", "--timeout-s", "7"]))
    assert config.devices == 6 and config.lr == 0.5 and config.timeout_s == 7
    # what no flag names comes from the file
    assert config.mode == "sfl" and config.batch_size == 32 and config.network == "wifi"
    assert config.batchnorm is False
    assert config.device_overrides == {4: DeviceOverride(device_slowdown=9.0)}
    assert config.slowdown(4) == 9.0
    # a flag naming the file's value is no change; a flag for a default changes it
    again = _config(_parser().parse_args(["run", path, "--mode", "pipelearn", "--network", "4g"]))
    assert again.mode == "pipelearn" and again.network == "4g" and again.devices == 5


def test_every_run_flag_reaches_the_config() -> None:
    args = _parser().parse_args(
        [
            "run",
            "--mode=sl",
            "--model=resnet18",
            "--dataset=cifar10",
            "--data-dir=/data",
            "--devices=3",
            "--network=4g+",
            "--up-mbps=inf",
            "--down-mbps=12.5",
            "--latency-ms=0",
            "--device-slowdown=2",
            "--split=3",
            "--microbatches=6",
            "--epochs=4",
            "--batch-size=16",
            "--samples-per-device=64",
            "--partition=dirichlet",
            "--dirichlet-alpha=0.1",
            "--aggregate-every=5",
            "--lr=0.2",
            "--momentum=0",
            "--seed=9",
            "--test-samples=50",
            "--eval-every=3",
            "--eval-samples=40",
            "--target-accuracy=0.9",
            "--threads=2",
            "--host-cores=1.5",
            "--timeout-s=30",
            "--heartbeat-s=0.5",
            "--liveness-s=4",
            "--out=runs/x",
            "--server-device=cuda:1",
            "--server-amp=bf16",
            "--no-batchnorm",
        ]
    )
    config = _config(args)
    expected = RunConfig(
        mode="sl",
        model="resnet18",
        dataset="cifar10",
        data_dir="/data",
        batchnorm=False,
        devices=3,
        network="4g+",
        up_mbps=math.inf,
        down_mbps=12.5,
        latency_ms=0.0,
        device_slowdown=2.0,
        split=3,
        microbatches=6,
        epochs=4,
        batch_size=16,
        samples_per_device=64,
        partition="dirichlet",
        dirichlet_alpha=0.1,
        aggregate_every=5,
        lr=0.2,
        momentum=0.0,
        seed=9,
        test_samples=50,
        eval_every=3,
        eval_samples=40,
        target_accuracy=0.9,
        threads=2,
        host_cores=1.5,
        timeout_s=30.0,
        heartbeat_s=0.5,
        liveness_s=4.0,
        out="runs/x",
        server_device="cuda:1",
        server_amp="bf16",
    )
    assert config == expected
    assert math.isinf(config.link(0).up_mbps) and config.link(0).latency_ms == 0


def test_stop_at_target_is_a_switch() -> None:
    config = _config(_parser().parse_args(["run", "--target-accuracy", "0.9", "--stop-at-target"]))
    assert config.stop_at_target is True and config.target_accuracy == 0.9
    assert _config(_parser().parse_args(["run"])).stop_at_target is False


def test_auto_split_and_microbatches_parse() -> None:
    config = _config(_parser().parse_args(["run", "--split", "auto", "--microbatches", "auto"]))
    assert config.split == "auto" and config.microbatches == "auto"


def test_train_local_defaults_and_flags(tmp_path: Path) -> None:
    defaults = {"devices": 1, "samples_per_device": None, "epochs": 3, "mode": "fl", "out": "runs/train-local"}
    config = _config(_parser().parse_args(["train-local"]), defaults)
    assert (config.mode, config.devices, config.samples_per_device, config.epochs) == ("fl", 1, None, 3)
    config = _config(_parser().parse_args(["train-local", "--epochs", "1", "--samples-per-device", "200"]), defaults)
    assert config.epochs == 1 and config.samples_per_device == 200
    # a TOML file replaces the defaults of train-local with its own (and RunConfig's)
    config = _config(_parser().parse_args(["train-local", _toml(tmp_path, "epochs = 7\n")]), defaults)
    assert config.epochs == 7 and config.devices == RunConfig().devices
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(["train-local", "--devices", "2"])  # a distributed setting is not a local flag
    assert info.value.code == 2


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["run", "--devices", "0"], "--devices is 0;"),
        (["run", "--lr", "-1"], "--lr is -1.0;"),
        (["run", "--batch-size", "0"], "--batch-size is 0;"),
        (["run", "--microbatches", "0"], "--microbatches is 0;"),
        (["run", "--up-mbps", "0"], "--up-mbps is 0.0;"),
        (["run", "--aggregate-every", "0"], "--aggregate-every is 0;"),
        (["server", "--listen", "127.0.0.1:0", "--epochs", "0"], "--epochs is 0;"),
        (["train-local", "--threads", "0"], "--threads is 0;"),
        (["run", "--liveness", "1"], "--liveness is 1.0; expected at least twice config key 'heartbeat_s'"),
        (["run", "--heartbeat-s", "6"], "config key 'liveness_s' is 10.0; expected at least twice --heartbeat-s"),
    ],
)
def test_bad_values_exit_2_naming_the_flag(argv: list[str], said: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("pipelearn: error: ") and said in errors[0], captured.err
    assert captured.out == ""


def test_a_bad_value_from_the_file_names_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", _toml(tmp_path, "devices = 0\n")]) == 2
    assert "pipelearn: error: config key 'devices' is 0;" in capsys.readouterr().err


def test_bad_toml_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", _toml(tmp_path, "devices = 2\ncolour = 'red'\n")]) == 2
    assert "colour" in capsys.readouterr().err
    assert main(["run", _toml(tmp_path, "[device_overrides.5]\nsplit = 1\n")]) == 2
    assert "device_overrides" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["run", "--split", "middle"], ["--split", "'auto'"]),
        (["run", "--microbatches", "1.5"], ["--microbatches"]),
        (["run", "--mode", "gossip"], ["--mode", "gossip"]),
        (["run", "--network", "5g"], ["--network"]),
        (["run", "--devices", "four"], ["--devices"]),
        (["run", "--lr", "fast"], ["--lr", "expected a number"]),
        (["run", "--colour", "red"], ["--colour"]),
        (["device", "--server", "127.0.0.1:1", "--insecure", "--credentials", "x.pem"], ["not allowed with"]),
        (["server", "--listen", "127.0.0.1:1", "--insecure", "--credentials", "keys"], ["not allowed with"]),
        (["credentials", "keys"], ["--devices"]),
        ([], ["COMMAND"]),
    ],
)
def test_unparsable_flags_exit_2(argv: list[str], words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"pipelearn {__version__}"


def test_summary_is_rounded_json() -> None:
    metrics = {
        "mode": "pipelearn",
        "model": "vgg5",
        "dataset": "mnist",
        "train_time_s": 1.234567,
        "epoch_times_s": [0.123456, 1.111111],
        "test_accuracy": 0.98766,
        "server": {"busy_s": 1.0, "idle_s": 0.234567},
        "device": [{"idle_s": 0.55556}, {"idle_s": 0.1}],
        "bytes_up": 123,
    }
    shown = json.loads(_summary(metrics))
    assert shown == {
        "mode": "pipelearn",
        "model": "vgg5",
        "dataset": "mnist",
        "train_time_s": 1.2346,
        "epoch_times_s": [0.1235, 1.1111],
        "test_accuracy": 0.9877,
        "server_idle_s": 0.2346,
        "device_idle_s": [0.5556, 0.1],
    }


def test_schedule_and_netns_flags(tmp_path: Path) -> None:
    config = _config(
        _parser().parse_args(["run", "--up-schedule", "0:10,30:2,60:10", "--down-schedule=0:25", "--netns"])
    )
    assert config.up_schedule == [[0, 10], [30, 2], [60, 10]] and config.down_schedule == [[0, 25]]
    assert config.netns is True
    assert _config(_parser().parse_args(["run"])).netns is False
    # a flag replaces the file's rate or schedule of its direction, whichever the file gave
    path = _toml(tmp_path, "up_mbps = 3\ndown_schedule = [[0, 9], [1, 2]]\n")
    config = _config(_parser().parse_args(["run", path, "--up-schedule", "0:10,30:2"]))
    assert config.up_mbps is None and config.rates(0, "up") == ((0.0, 10.0), (30.0, 2.0))
    config = _config(_parser().parse_args(["run", path, "--down-mbps", "7"]))
    assert config.down_schedule is None and config.rates(0, "down") == ((0.0, 7.0),)
    assert config.up_mbps == 3


@pytest.mark.parametrize("text", ["10", "0:10,30", "0:10;30:2", "a:b"])
def test_unparsable_schedules_exit_2(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--up-schedule", text])
    assert info.value.code == 2
    assert "expected SECONDS:MBPS steps separated by commas" in capsys.readouterr().err


def test_schedules_that_break_the_rules_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--up-schedule", "5:10,30:2"]) == 2
    assert "--up-schedule is [[5.0, 10.0], [30.0, 2.0]]; expected a list of" in capsys.readouterr().err
    assert main(["run", "--up-schedule", "0:10", "--up-mbps", "3"]) == 2
    assert "--up-schedule and --up-mbps are both given; give one" in capsys.readouterr().err


def test_a_server_refuses_netns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:  # not a flag of the server's
        main(["server", "--listen", "127.0.0.1:0", "--netns"])
    assert info.value.code == 2 and "unrecognized arguments: --netns" in capsys.readouterr().err
    assert main(["server", "--listen", "127.0.0.1:0", _toml(tmp_path, "netns = true\n")]) == 2
    assert "config key 'netns' is for `pipelearn run`" in capsys.readouterr().err


def test_summary_says_the_best_accuracy_and_the_time_to_target() -> None:
    rounds = [
        {"round": 0, "time_s": 1.0, "train_loss": 2.0, "test_accuracy": 0.5, "eval_s": 0.1},
        {"round": 1, "time_s": 2.0, "train_loss": 1.0, "test_accuracy": 0.91, "eval_s": 0.1},
        {"round": 2, "time_s": 3.0, "train_loss": 0.5, "test_accuracy": 0.9, "eval_s": 0.1},
    ]
    metrics = {
        "mode": "fl",
        "test_accuracy": 0.9,
        "rounds": rounds,
        "eval_s": 0.3,
        "target_accuracy": 0.9,
        "time_to_accuracy_s": 2.0,
        "target_round": 1,
        "stopped_at_target": False,
    }
    shown = json.loads(_summary(metrics))
    assert shown["best_accuracy"] == 0.91
    assert (shown["time_to_accuracy_s"], shown["target_round"]) == (2.0, 1)
    assert "stopped_after_round" not in shown
    assert "best_accuracy" not in json.loads(_summary({"mode": "sl", "test_accuracy": 0.5, "rounds": []}))


def test_compress_flags_reach_the_config(tmp_path: Path) -> None:
    config = _config(_parser().parse_args(["run", "--compress", "fp16", "--compress-up", "topk:0.01"]))
    assert config.codec("up") == "topk:0.01" and config.codec("down") == "fp16"
    path = _toml(tmp_path, 'compress = "int8"\ncompress_down = "bf16"\n')
    config = _config(_parser().parse_args(["run", path, "--compress-up", "none"]))
    assert (config.codec("up"), config.codec("down")) == ("none", "bf16")


def test_a_bad_compress_flag_exits_2_with_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--compress-down", "topk:2"]) == 2
    err = capsys.readouterr().err
    assert "--compress-down is 'topk:2'" in err and "topk:R with 0 < R < 1" in err


def test_a_bad_plugin_is_an_error_that_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", "no_such_nets:net", "--dataset", "synthetic", "--quiet"]) == 2
    assert "model plug-in 'no_such_nets:net': no module named 'no_such_nets'" in capsys.readouterr().err


def test_security_flags_exit_2_with_what_to_give(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device", "--server", "127.0.0.1:1", "--insecure"]) == 2
    assert "needs --id" in capsys.readouterr().err
    for argv in (["device", "--server", "127.0.0.1:1", "--id", "0"], ["server", "--listen", "127.0.0.1:0"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "needs --credentials" in err and "or --insecure" in err
    assert main(["device", "--server", "127.0.0.1:1", "--credentials", str(tmp_path / "none.pem")]) == 2
    assert "none.pem does not exist" in capsys.readouterr().err
    assert main(["server", "--listen", "127.0.0.1:0", "--credentials", str(tmp_path / "nowhere")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_credentials_command_writes_a_new_directory_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    assert main(["credentials", str(keys), "--devices", "2", "--host", "trainer.example", "--ip", "10.0.0.7"]) == 0
    listed = capsys.readouterr().out.split()
    assert sorted(Path(p).name for p in listed) == sorted(
        ["ca.pem", "server.pem", "server.key", "device-0.pem", "device-1.pem"]
    )
    assert main(["credentials", str(keys), "--devices", "2"]) == 2
    assert "already holds credentials" in capsys.readouterr().err
    assert main(["credentials", str(tmp_path / "bad"), "--devices", "1", "--ip", "not-an-ip"]) == 2
    assert "--ip 'not-an-ip'" in capsys.readouterr().err


# --- every option described, one spelling each, refusals instead of silent caps -----------------------------------


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS]


def test_every_option_of_every_command_is_described() -> None:
    parser = _parser()
    assert set(parser.commands) == {"run", "plan", "server", "device", "bench", "report", "credentials", "train-local"}
    for name, command in parser.commands.items():
        for action in [*command._actions, *parser._actions]:
            if action.help != argparse.SUPPRESS:
                assert action.help and len(action.help) > 10, (name, action.option_strings or action.dest)


def test_every_run_setting_is_a_flag_with_its_unit_and_default() -> None:
    run = {s: a for a in _options(_parser().commands["run"]) for s in a.option_strings}
    for setting in settings():
        if setting.name == "device_overrides":
            assert setting.flag not in run  # TOML only
            continue
        help_text = run[setting.flag].help or ""
        assert help_text.startswith(setting.description[:30]) and "Default: " in help_text, setting.name
        if setting.name.endswith(("_s", "_ms", "_mbps")):
            assert "Unit: " in help_text, setting.name
    assert "Unit: seconds. Default: 120." in (run["--timeout-s"].help or "")


def test_commands_show_their_own_defaults() -> None:
    local = {s: a for a in _options(_parser().commands["train-local"]) for s in a.option_strings}
    assert "Default: runs/train-local." in (local["--out"].help or "")
    assert "--devices" not in local and "--samples" not in local
    bench = {s: a for a in _options(_parser().commands["bench"]) for s in a.option_strings}
    assert "--mode" not in bench and "--model" not in bench and "--json" not in bench  # refused, below
    assert "--quick: 300" in (bench["--samples-per-device"].help or "")


def test_a_server_is_not_offered_netns() -> None:
    server = {s for a in _options(_parser().commands["server"]) for s in a.option_strings}
    assert "--netns" not in server and "--listen" in server and "--log-file" in server


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("--timeout", "--timeout-s", "timeout_s"),
        ("--heartbeat", "--heartbeat-s", "heartbeat_s"),
        ("--liveness", "--liveness-s", "liveness_s"),
    ],
)
def test_old_flag_spellings_still_work_with_a_warning(old: str, new: str, field: str) -> None:
    args = _parser().parse(["run", "--liveness-s", "30", old, "7"])
    assert getattr(_config(args), field) == 7.0
    assert deprecations(args) == [f"{old} is now {new}; the old name will go"]
    assert typed_flags(args)[field] == old


def test_a_deprecation_warning_is_one_line_before_the_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--liveness", "1"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "pipelearn: warning: --liveness is now --liveness-s; the old name will go",
        "pipelearn: error: --liveness is 1.0; expected at least twice config key 'heartbeat_s' (1)",
    ]


def test_train_local_takes_samples_per_device_and_still_reads_samples() -> None:
    args = _parser().parse(["train-local", "--samples", "200"])
    assert _config(args).samples_per_device == 200 and deprecations(args)[0].startswith("--samples is now --samples-")
    device = _parser().parse(["device", "--server", "h:1", "--timeout", "3"])
    assert device.timeout_s == 3.0 and deprecations(device) == ["--timeout is now --timeout-s; the old name will go"]
    renamed = _parser().parse(["device", "--server", "h:1", "--timeout-s", "4"])
    assert renamed.timeout_s == 4 and deprecations(renamed) == []


def test_a_runs_devices_are_given_the_timeout_by_its_current_flag() -> None:
    from pipelearn.runtime.launch import device_command

    argv = device_command("127.0.0.1:1", 1, RunConfig(timeout_s=7.0).validate(), "keys")
    assert argv[argv.index("--timeout-s") + 1] == "7.0" and "--timeout" not in argv
    args = _parser().parse(argv[3:])
    assert args.timeout_s == 7.0 and deprecations(args) == []  # a run's devices do not warn


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["run", "--epoch", "3"], "(did you mean '--epochs'?)"),
        (["run", "--sample-per-device=3"], "(did you mean '--samples-per-device'?)"),
        (["bench", "--mode", "fl", "--moddels", "vgg5"], "(did you mean '--models'?)"),
        (["server", "--listen", "h:1", "--credentails", "k"], "(did you mean '--credentials'?)"),
    ],
)
def test_a_misspelt_flag_is_refused_with_the_closest_one(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and hint in capsys.readouterr().err


def test_flags_are_not_abbreviated() -> None:
    with pytest.raises(SystemExit):
        _parser().parse(["run", "--epoch", "3"])


def test_plan_keeps_the_files_split_and_micro_batches(tmp_path: Path) -> None:
    path = _toml(tmp_path, "split = 3\nmicrobatches = 2\n")
    config = _plan_config(_parser().parse(["plan", path]))
    assert (config.split, config.microbatches) == (3, 2)
    config = _plan_config(_parser().parse(["plan", _toml(tmp_path, "split = 1\n")]))
    assert (config.split, config.microbatches) == (1, "auto")
    config = _plan_config(_parser().parse(["plan", "--microbatches", "5"]))
    assert (config.split, config.microbatches) == ("auto", 5)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["run", "--microbatches", "200"], "--microbatches is 200, more than config key 'batch_size' 100"),
        (["run", "--batch-size", "50", "--microbatches", "60"], "--microbatches is 60, more than --batch-size 50"),
        (["run", "--samples-per-device", "20"], "config key 'batch_size' is 100, more than --samples-per-device 20"),
        (["run", "--test-samples", "10", "--eval-samples", "20"], "--eval-samples is 20, more than --test-samples 10"),
        (["run", "--profile-in", "none.json"], "--profile-in is 'none.json', which is no file"),
        (["plan", "--profile-in", "none.json"], "--profile-in is 'none.json', which is no file"),
        (["bench", "--profile-in", "none.json"], "--profile-in is 'none.json', which is no file"),
    ],
)
def test_what_a_run_would_cap_or_ignore_is_refused(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pipelearn: error: ") and said in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["bench", "--quick", "--mode", "fl"], "--mode: the bench runs each mode of --modes: give --modes MODE"),
        (["bench", "--model", "vgg5"], "--model: the bench runs each model of --models"),
        (["bench", "--network", "wifi"], "--network: the bench runs each network of --networks"),
        (["bench", "--up-mbps", "3"], "--up-mbps: the bench runs each network of --networks at its preset's rates"),
        (["bench", "--split", "2"], "--split: the bench runs each mode at the planner's best split"),
        (["bench", "--microbatches", "auto"], "--microbatches: the bench runs each mode at the planner's best"),
        (["bench", "--accuracy", "--dataset", "mnist"], "--dataset: the accuracy table trains each data set of --dat"),
        (["bench", "--accuracy", "--network", "4g"], "--network: the accuracy table plans under 4g, 4g+ and wifi"),
        (["bench", "--accuracy", "--networks", "4g"], "--networks: the accuracy table plans under 4g, 4g+, wifi"),
        (["bench", "--datasets", "mnist"], "--datasets chooses cells of the accuracy table: add --accuracy"),
        (["bench", "--accuracy", "--quick"], "--quick is for the timing bench"),
        (["bench", "--networks", "5g"], "--networks: unknown network(s) 5g; expected some of 4g, 4g+, wifi"),
        (["bench", "--modes", "gossip"], "--modes: unknown mode(s) gossip"),
        (["bench", "--quick", "--device-slowdown", "9"], "--device-slowdown: the regimes strong and edge each run at"),
        (["bench", "--regime", "edge", "strong", "--device-slowdown", "9"], "give --regime strong or --regime edge"),
        (["bench", "--accuracy", "--regime", "edge"], "--regime is for the timing bench; the accuracy table plans at"),
    ],
)
def test_bench_refuses_what_it_cannot_honour_naming_the_alternative(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"pipelearn: error: {err.removeprefix('pipelearn: error: ')}" and said in err, err
    assert len(err.splitlines()) == 1


def test_bench_refuses_a_setting_of_the_file_naming_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", _toml(tmp_path, 'mode = "fl"\n')]) == 2
    assert "pipelearn: error: config key 'mode': the bench runs each mode of --modes" in capsys.readouterr().err


def test_bench_honours_the_workload_given_for_every_model(tmp_path: Path) -> None:
    from pipelearn.bench.runner import BenchPlan, run_config

    args = _parser().parse(["bench", "--quick", "--devices", "2", "--samples-per-device", "100", "--epochs", "3"])
    args.modes = ["fl"]
    config = _config(args)
    plan = BenchPlan.quick().chosen(args.modes, args.models, args.networks).with_workload(config, _given(args))
    assert plan.modes == ("fl",) and plan.networks == ("wifi",)
    run = run_config(config, "vgg5", "4g", "fl", plan, tmp_path)
    assert (run.devices, run.samples_per_device, run.epochs, run.mode) == (2, 100, 3, "fl")
    untouched = BenchPlan.quick().with_workload(config, {"devices": "--devices"})
    assert run_config(config, "vgg5", "4g", "fl", untouched, tmp_path).samples_per_device == 300
    assert BenchPlan().chosen(networks=["wifi"], models=["VGG5"]).networks == ("wifi",)


def test_bench_regimes_run_at_their_own_slowdown_unless_one_is_given_for_one_regime(tmp_path: Path) -> None:
    from pipelearn.bench.runner import REGIME_SLOWDOWNS, BenchPlan, run_config

    args = _parser().parse(["bench", "--regime", "edge"])
    assert args.regime == ["edge"]
    config = _config(args)
    edge = BenchPlan.of("edge").with_workload(config, _given(args))
    assert run_config(config, "vgg5", "4g", "fl", edge, tmp_path).device_slowdown == REGIME_SLOWDOWNS["edge"]
    args = _parser().parse(["bench", "--regime", "edge", "--device-slowdown", "60"])
    config = _config(args)
    mine = BenchPlan.of("edge").with_workload(config, _given(args))
    assert run_config(config, "vgg5", "4g", "fl", mine, tmp_path).device_slowdown == 60.0
    assert mine.label == "edge devices (slowdown 60)" and mine.run_dir("vgg5", "4g", "fl") == "edge-vgg5-4g-fl"
    strong = BenchPlan.of("strong")
    assert (strong.device_slowdown, strong.run_dir("vgg5", "4g", "fl")) == (4.0, "vgg5-4g-fl")
    assert BenchPlan.of("edge", quick=True).networks == ("wifi",) and BenchPlan.of("edge").modes == (
        "fl",
        "sfl",
        "pipelearn",
    )
    with pytest.raises(ConfigError, match="--regime: unknown regime 'cloud'; expected one of strong, edge"):
        BenchPlan.of("cloud")


def test_a_log_file_that_cannot_be_opened_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--log-file", str(tmp_path / "no" / "such" / "run.log")]) == 2
    assert capsys.readouterr().err.startswith("pipelearn: error: --log-file ")
