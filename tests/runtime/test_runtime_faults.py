"""A device that breaks the protocol is refused and dropped; the other devices finish the run."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

import pytest
import torch

from pipelearn.metrics.events import now
from pipelearn.runtime.agreement import fingerprint
from pipelearn.runtime.server import Server
from pipelearn.runtime.work import device_part, make_model
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import encode
from pipelearn.transport.inbox import Inbox, PeerError
from pipelearn.transport.link import Outbox
from pipelearn.transport.service import PROTOCOL_VERSION, envelope, open_session


class Rogue:
    """A hand-driven device: a real gRPC client that sends whatever a test tells it to."""

    def __init__(self, address: str) -> None:
        self.outbox = Outbox()
        self.channel, replies = open_session(address, iter(self.outbox))
        self.inbox = Inbox(replies, "the server", 30.0)

    def send(self, message: pb.Envelope) -> None:
        self.outbox.control(message)

    def take(self, kind: int) -> pb.Envelope:
        message = self.inbox.take()
        assert message.kind == kind, pb.Kind.Name(message.kind)
        return message

    def close(self) -> None:
        self.outbox.close()
        self.channel.close()


def _start(config: Any) -> tuple[Server, str, threading.Thread, dict[str, Any]]:
    server = Server(config, progress=False)
    address = f"127.0.0.1:{server.listen('127.0.0.1:0')}"
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(metrics=server.run()), daemon=True)
    thread.start()
    return server, address, thread, result


def _fingerprint(config: Any, device: int) -> dict[str, Any]:
    """What an honest device with the run's model and synthetic 1x28x28 data in 10 classes declares with READY."""
    return fingerprint(device_part(make_model(config, (1, 28, 28), 10), config, device), (1, 28, 28), 10)


def _activation(size: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> bytes:
    return encode(
        {"activation": torch.zeros(size, *shape, dtype=dtype), "labels": torch.zeros(size, dtype=torch.int64)}
    )


# VGG5 split at 2 on 1x28x28: the activation of one sample is 32 x 7 x 7; 20-sample batches in 3 micro-batches.
BAD_MESSAGES = {
    "shape": (
        envelope(pb.ACTIVATION, 1, round=0, iteration=0, microbatch=0, tensors=_activation(7, (32, 5, 5))),
        "shape",
    ),
    "dtype": (
        envelope(
            pb.ACTIVATION, 1, round=0, iteration=0, microbatch=0, tensors=_activation(7, (32, 7, 7), torch.float64)
        ),
        "dtype",
    ),
    "tag": (
        envelope(pb.ACTIVATION, 1, round=0, iteration=0, microbatch=2, tensors=_activation(7, (32, 7, 7))),
        "micro-batch",
    ),
    "garbage": (envelope(pb.ACTIVATION, 1, round=0, iteration=0, microbatch=0, tensors=b"\x01" * 40), "safetensors"),
}


@pytest.mark.parametrize("fault", [*BAD_MESSAGES, "disconnect"])
def test_a_faulty_device_is_refused_while_the_other_finishes(small_config, fault):
    config = small_config(mode="pipelearn", epochs=2, timeout_s=20.0)
    _, address, thread, result = _start(config)
    honest = subprocess.Popen([sys.executable, "-m", "pipelearn", "device", "--server", address, "--id", "0"])
    rogue = Rogue(address)
    rogue.send(envelope(pb.HELLO, 1, clock=now()))
    rogue.take(pb.PLAN)
    rogue.send(envelope(pb.READY, 1, text=json.dumps({"samples": 40, "fingerprint": _fingerprint(config, 1)})))
    rogue.take(pb.START)
    rogue.take(pb.WEIGHTS)
    if fault == "disconnect":
        rogue.close()
    else:
        message, words = BAD_MESSAGES[fault]
        rogue.send(message)
        with pytest.raises(PeerError, match=words):
            rogue.inbox.take()
        rogue.close()
    thread.join(120)
    assert honest.wait(60) == 0
    metrics = result["metrics"]
    assert metrics["failed_devices"] == [1]
    assert metrics["device"][1]["error"]
    assert metrics["device"][0]["error"] is None
    assert metrics["device"][0]["busy_s"] > 0
    assert 0 <= metrics["test_accuracy"] <= 1


@pytest.mark.parametrize(
    ("hello", "words"),
    [
        (envelope(pb.HELLO, 5), "out of range"),
        (envelope(pb.READY, 0), "must start with HELLO"),
        (pb.Envelope(protocol=PROTOCOL_VERSION + 1, kind=pb.HELLO, device=0), "protocol"),
    ],
)
def test_a_bad_hello_is_refused_with_a_reason(small_config, hello, words):
    server = Server(small_config(), progress=False)
    address = f"127.0.0.1:{server.listen('127.0.0.1:0')}"
    rogue = Rogue(address)
    rogue.send(hello)
    with pytest.raises(PeerError, match=words):
        rogue.inbox.take()
    rogue.close()
    server._shutdown()


def test_a_second_device_with_the_same_id_is_refused(small_config):
    server = Server(small_config(), progress=False)
    address = f"127.0.0.1:{server.listen('127.0.0.1:0')}"
    first, second = Rogue(address), Rogue(address)
    first.send(envelope(pb.HELLO, 0))
    first.take(pb.PLAN)
    second.send(envelope(pb.HELLO, 0))
    with pytest.raises(PeerError, match="already joined"):
        second.inbox.take()
    first.close()
    second.close()
    server._shutdown()
