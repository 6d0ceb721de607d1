"""Who may join a run and what a device may send: refusals before anything is revealed, and a device that breaks
the protocol is dropped while the other devices finish the run with a finite global model."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from safetensors.torch import load_file

from pipelearn.events import now
from pipelearn.models.parts import device_part, make_model
from pipelearn.planner.resolve import resolve_plan
from pipelearn.runtime.agreement import fingerprint
from pipelearn.runtime.checks import HEADROOM_BYTES, HELLO_BYTES
from pipelearn.runtime.server import Server, prepare
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import encode
from pipelearn.transport.credentials import (
    DeviceCredentials,
    device_file,
    load_device_credentials,
    load_server_credentials,
    make_credentials,
)
from pipelearn.transport.inbox import Inbox, PeerError
from pipelearn.transport.link import Outbox
from pipelearn.transport.service import PROTOCOL_VERSION, envelope, open_session, parse_envelope

pytestmark = pytest.mark.slow


class Raw:
    """Bytes sent as they are, in place of an envelope (for malformed protobuf)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def ByteSize(self) -> int:
        return len(self.data)

    def SerializeToString(self) -> bytes:
        return self.data


class Rogue:
    """A hand-driven device: a real gRPC client over mutual TLS that sends whatever a test tells it to."""

    def __init__(self, address: str, credentials: DeviceCredentials) -> None:
        self.outbox = Outbox()
        self.channel = grpc.secure_channel(address, credentials.grpc())
        grpc.channel_ready_future(self.channel).result(timeout=30)
        call = self.channel.stream_stream(
            "/pipelearn.PipeLearn/Session",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=parse_envelope,
        )
        self.inbox = Inbox(call(iter(self.outbox)), "the server", 30.0)

    def send(self, message: pb.Envelope | Raw) -> None:
        self.outbox.control(message)  # type: ignore[arg-type]

    def take(self, kind: int) -> pb.Envelope:
        message = self.inbox.take()
        assert message.kind == kind, pb.Kind.Name(message.kind)
        return message

    def ready(self, device: int, config: Any, samples: object = 40) -> None:
        """Join as `device` and declare `samples` and an honest fingerprint; START comes once every device is ready."""
        self.send(envelope(pb.HELLO, device, clock=now()))
        self.take(pb.PLAN)
        declared = {"samples": samples, "fingerprint": _fingerprint(config, device)}
        self.send(envelope(pb.READY, device, text=json.dumps(declared)))

    def close(self) -> None:
        self.outbox.close()
        self.channel.close()


def _start(config: Any, credentials: Path) -> tuple[Server, str, threading.Thread, dict[str, Any]]:
    server = Server(prepare(config), progress=False)
    address = f"127.0.0.1:{server.listen('127.0.0.1:0', load_server_credentials(credentials))}"
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(metrics=server.run()), daemon=True)
    thread.start()
    return server, address, thread, result


def _honest(address: str, credentials: Path, device: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "pipelearn", "device", "--server", address]
    return subprocess.Popen([*command, "--credentials", str(device_file(credentials, device))])


def _rogue(address: str, credentials: Path, device: int) -> Rogue:
    return Rogue(address, load_device_credentials(device_file(credentials, device)))


def _fingerprint(config: Any, device: int) -> dict[str, Any]:
    """What an honest device with the run's model and synthetic 1x28x28 data in 10 classes declares with READY."""
    model = make_model(config, (1, 28, 28), 10)
    return fingerprint(
        device_part(model, resolve_plan(config, model, (1, 28, 28)).devices[device].split), (1, 28, 28), 10
    )


def _activation(size: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32, fill: float = 0.0) -> bytes:
    return encode(
        {"activation": torch.full((size, *shape), fill, dtype=dtype), "labels": torch.zeros(size, dtype=torch.int64)}
    )


def _first(tensors: bytes, kind: int = pb.ACTIVATION, tag: int | None = None) -> Any:
    """The first activation a device sends, with what it carries (for the device it is given)."""
    return lambda d, limit: envelope(
        kind, d if tag is None else tag, round=0, iteration=0, microbatch=0, tensors=tensors
    )


# VGG5 split at 2 on 1x28x28: the activation of one sample is 64 x 7 x 7; 20-sample batches in 3 micro-batches.
GOOD = (7, (64, 7, 7))
BAD_MESSAGES: dict[str, tuple[Any, str]] = {
    "shape": (_first(_activation(7, (64, 5, 5))), "shape"),
    "dtype": (_first(_activation(*GOOD, torch.float64)), "dtype"),
    "count": (_first(_activation(6, GOOD[1])), "shape"),
    "tag": (
        lambda d, limit: envelope(pb.ACTIVATION, d, round=0, iteration=0, microbatch=2, tensors=_activation(*GOOD)),
        "micro-batch",
    ),
    "device tag": (_first(_activation(*GOOD), tag=0), "for device 0"),
    "kind": (_first(_activation(*GOOD), kind=42), "unknown kind 42"),
    "order": (_first(b"", kind=pb.READY), "got READY"),
    "garbage": (_first(b"\x01" * 40), "safetensors"),
    "truncated": (_first(_activation(*GOOD)[:-10]), "fill"),
    "header length": (_first(b"\xff" * 8 + _activation(*GOOD)[8:]), "more than"),
    "nan": (_first(_activation(*GOOD, fill=float("nan"))), "NaN or Inf"),
    "inf": (_first(_activation(*GOOD, fill=float("-inf"))), "NaN or Inf"),
    "huge": (_first(_activation(*GOOD, fill=3e38)), "makes the loss"),
    "labels": (_first(encode({"activation": torch.zeros(7, 64, 7, 7), "labels": torch.full((7,), 99)})), "labels"),
    "over its limit": (lambda d, limit: _first(b"\x00" * limit)(d, limit), "allows at most"),
    "over gRPC's limit": (
        lambda d, limit: _first(b"\x00" * (limit + 2 * HEADROOM_BYTES))(d, limit),
        "larger than max|disconnected|broke",
    ),
    "protobuf": (lambda d, limit: Raw(b"\xff\xff\xff\xff\x0f"), "not a protobuf Envelope"),
    "disconnect": (None, "disconnected|went away"),
}


def test_faulty_devices_are_dropped_while_the_honest_one_finishes(small_config, credentials, capfd):
    faults = list(BAD_MESSAGES)
    config = small_config(mode="pipelearn", devices=1 + len(faults), epochs=2, timeout_s=30.0)
    server, address, thread, result = _start(config, credentials)
    honest = _honest(address, credentials, 0)
    rogues = {d: _rogue(address, credentials, d) for d in range(1, 1 + len(faults))}
    for d, rogue in rogues.items():
        rogue.ready(d, config)
    for (d, rogue), fault in zip(rogues.items(), faults, strict=True):
        rogue.take(pb.START)
        rogue.take(pb.WEIGHTS)
        message, words = BAD_MESSAGES[fault]
        if message is None:
            rogue.close()
            continue
        rogue.send(message(d, server.limits.max_bytes[d]))
        with pytest.raises(PeerError, match=words):
            rogue.inbox.take()
        rogue.close()
    thread.join(120)
    assert honest.wait(60) == 0
    metrics = result["metrics"]
    assert metrics["failed_devices"] == list(rogues)
    for d, fault in zip(rogues, faults, strict=True):
        assert re.search(BAD_MESSAGES[fault][1], metrics["device"][d]["error"]), (fault, metrics["device"][d])
    assert metrics["device"][0]["error"] is None and metrics["device"][0]["busy_s"] > 0
    assert 0 <= metrics["test_accuracy"] <= 1
    err = capfd.readouterr().err
    assert all(re.search(rf"device {d} failed in round \d+ and was dropped", err) for d in rogues)
    model = load_file(Path(config.out) / "model.safetensors")
    assert all(bool(torch.isfinite(t).all()) for t in model.values() if t.is_floating_point())


def test_nan_weights_never_reach_the_global_model(small_config, credentials):
    config = small_config(mode="fl", epochs=2, timeout_s=20.0)
    server, address, thread, result = _start(config, credentials)
    honest = _honest(address, credentials, 0)
    rogue = _rogue(address, credentials, 1)
    rogue.ready(1, config)
    rogue.take(pb.START)
    rogue.take(pb.WEIGHTS)
    state = make_model(config, (1, 28, 28), 10).state_dict()
    state["0.0.weight"][0, 0, 0, 0] = float("nan")
    rogue.send(envelope(pb.WEIGHTS, 1, round=0, tensors=encode(state)))
    with pytest.raises(PeerError, match="NaN or Inf"):
        rogue.inbox.take()
    rogue.close()
    thread.join(120)
    assert honest.wait(60) == 0
    assert result["metrics"]["failed_devices"] == [1]
    assert all(bool(torch.isfinite(t).all()) for t in server.global_state.values() if t.is_floating_point())


MISSTATED: list[object] = [100_000_000, 39, -1, "40", None, 40.0]


def test_devices_that_misstate_their_samples_are_dropped_before_training(small_config, credentials, capfd):
    config = small_config(mode="sfl", devices=1 + len(MISSTATED), timeout_s=20.0)
    _, address, thread, result = _start(config, credentials)
    honest = _honest(address, credentials, 0)
    rogues = {d: _rogue(address, credentials, d) for d in range(1, 1 + len(MISSTATED))}
    for (d, rogue), samples in zip(rogues.items(), MISSTATED, strict=True):
        rogue.ready(d, config, samples)
    for rogue in rogues.values():
        with pytest.raises(PeerError, match="the plan gives it 40"):
            rogue.inbox.take()
        rogue.close()
    thread.join(120)
    assert honest.wait(60) == 0
    metrics = result["metrics"]
    assert metrics["failed_devices"] == list(rogues)
    assert [d["samples"] for d in metrics["device"]] == [40] * config.devices  # the server's own counts
    assert metrics["device"][0]["error"] is None and metrics["device"][0]["busy_s"] > 0
    assert "declares 100000000 training samples" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("hello", "words"),
    [
        (envelope(pb.HELLO, 1), "certificate is for device 0"),
        (envelope(pb.HELLO, 5), "certificate is for device 0"),
        (envelope(pb.READY, 0), "must start with HELLO"),
        (envelope(pb.HELLO, 0, text="x" * HELLO_BYTES), "allows at most"),
        (pb.Envelope(protocol=PROTOCOL_VERSION + 1, kind=pb.HELLO, device=0), "protocol"),
    ],
)
def test_a_bad_hello_is_refused_before_the_plan_is_sent(small_config, credentials, hello, words, capfd):
    server = Server(prepare(small_config()), progress=False)
    address = f"127.0.0.1:{server.listen('127.0.0.1:0', load_server_credentials(credentials))}"
    rogue = _rogue(address, credentials, 0)
    rogue.send(hello)
    with pytest.raises(PeerError, match=words):
        rogue.inbox.take()  # the refusal is the first and only message: no PLAN came before it
    rogue.close()
    server.sessions.shutdown()
    assert not server.sessions
    err = capfd.readouterr().err
    assert "refused a device at ipv4:127.0.0.1:" in err and "with the certificate of device 0" in err


def test_a_second_device_with_the_same_credentials_is_refused(small_config, credentials):
    server = Server(prepare(small_config()), progress=False)
    address = f"127.0.0.1:{server.listen('127.0.0.1:0', load_server_credentials(credentials))}"
    first, second = _rogue(address, credentials, 0), _rogue(address, credentials, 0)
    first.send(envelope(pb.HELLO, 0))
    first.take(pb.PLAN)
    second.send(envelope(pb.HELLO, 0))
    with pytest.raises(PeerError, match="already joined"):
        second.inbox.take()
    first.close()
    second.close()
    server.sessions.shutdown()
    assert list(server.sessions) == [0]


def test_without_valid_credentials_the_handshake_fails_and_nothing_is_revealed(small_config, credentials, tmp_path):
    server = Server(prepare(small_config()), progress=False)
    address = f"127.0.0.1:{server.listen('127.0.0.1:0', load_server_credentials(credentials))}"
    make_credentials(tmp_path / "other", 2)
    strangers: list[DeviceCredentials | None] = [None, load_device_credentials(device_file(tmp_path / "other", 0))]
    for stranger in strangers:
        with pytest.raises(ConnectionError, match="TLS handshake"):
            open_session(address, iter([envelope(pb.HELLO, 0)]), 30.0, stranger)
    server.sessions.shutdown()
    assert not server.sessions


def test_a_plain_text_server_must_be_asked_for(small_config):
    server = Server(prepare(small_config()), progress=False)
    with pytest.raises(ValueError, match="insecure"):
        server.listen("127.0.0.1:0")
    port = server.listen("127.0.0.1:0", insecure=True)
    outbox = Outbox()
    channel, replies = open_session(f"127.0.0.1:{port}", iter(outbox))
    outbox.control(envelope(pb.HELLO, 1))
    assert Inbox(replies, "the server", 30.0).take().kind == pb.PLAN
    outbox.close()
    channel.close()
    server.sessions.shutdown()
