"""A device trusts the server no more than it must: its own data directory, and plans it can follow."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from pipelearn.config import RunConfig
from pipelearn.data import DatasetError, dealing
from pipelearn.plan import RunPlan, fixed_setups, plan_message
from pipelearn.runtime.joining import run_device
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import WireError
from pipelearn.transport.credentials import load_device_credentials
from pipelearn.transport.inbox import Inbox, PeerError
from pipelearn.transport.service import envelope, start_server


class FakeServer:
    """A server that answers HELLO with a given plan and keeps what the device reports next."""

    def __init__(self, plan: str) -> None:
        self.plan = plan
        self.said: list[str] = []
        self.done = threading.Event()
        self.server, self.port = start_server(self.session, "127.0.0.1:0", 2)

    def session(self, requests: Iterator[pb.Envelope], context: grpc.ServicerContext) -> Iterator[pb.Envelope]:
        inbox = Inbox(requests, "the device", 10.0)
        inbox.take()
        yield envelope(pb.PLAN, 0, text=self.plan)
        try:
            self.said.append(pb.Kind.Name(inbox.take().kind))
        except PeerError as exc:
            self.said.append(str(exc))
        self.done.set()


@pytest.mark.slow
def test_the_device_reads_its_own_data_directory_not_the_plans(small_config, monkeypatch, tmp_path: Path):
    fake = FakeServer(_message(small_config(dataset="idx", data_dir="/srv/server-only", download=True)))
    read: list[Any] = []

    def load_dataset(name: str, split: str, root: Any = None, *, download: bool = False, **_: Any) -> Any:
        read.append((name, split, root, download))
        raise DatasetError(f"no idx files in {root}")

    monkeypatch.setattr(dealing, "load_dataset", load_dataset)
    mine = str(tmp_path / "mine")
    with pytest.raises(DatasetError):
        run_device(f"127.0.0.1:{fake.port}", 0, 10.0, insecure=True, data_dir=mine)
    assert read == [("idx", "train", mine, False)]
    assert fake.done.wait(10)
    assert fake.said == [f"the device reported: no idx files in {mine}"]  # the server is told why
    fake.server.stop(None)


@pytest.mark.slow
def test_the_device_refuses_a_plan_for_a_model_it_does_not_know(small_config):
    fake = FakeServer(_message(small_config()).replace('"vgg5"', '"notamodel"'))
    with pytest.raises(WireError, match="unknown model 'notamodel'"):
        run_device(f"127.0.0.1:{fake.port}", 0, 10.0, insecure=True)
    assert fake.done.wait(10)
    assert fake.said[0].startswith("the device reported: the server's plan") and "notamodel" in fake.said[0]
    fake.server.stop(None)


def test_run_device_wants_credentials_or_insecure_and_the_right_id(credentials):
    with pytest.raises(ValueError, match="insecure=True"):
        run_device("127.0.0.1:1", 0)
    with pytest.raises(ValueError, match="device 1's, not device 0's"):
        run_device("127.0.0.1:1", 0, credentials=load_device_credentials(credentials, 1))


def _message(config: RunConfig) -> str:
    """The PLAN text a server sends for `config` with its fixed splits."""
    splits = [config.requested_split(d) for d in range(config.devices)]
    counts = [config.requested_microbatches(d) for d in range(config.devices)]
    return plan_message(config, RunPlan(fixed_setups(config, splits, counts)))  # type: ignore[arg-type]


def test_slowdown_multiplies_cpu_time_not_time_lost_to_other_processes() -> None:
    from pipelearn.runtime.device import slowdown_wait_s

    assert slowdown_wait_s(0.1, 0.1, 4.0) == pytest.approx(0.3)  # alone on a core: waits 3x the work
    assert slowdown_wait_s(0.1, 0.2, 4.0) == pytest.approx(0.2)  # half the wall time went to other processes
    assert slowdown_wait_s(0.1, 0.5, 4.0) == 0.0  # sharing already took longer than the device would
    assert slowdown_wait_s(0.1, 0.1, 1.0) == 0.0
