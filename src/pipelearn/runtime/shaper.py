"""Kernel traffic shaping of a run's links with tc, and the rate changes of their schedules during training.

Each direction of a device's link is shaped where its packets leave: the uplink on the device's end of its veth,
the downlink on the server's end. An htb class holds the link's rate; beneath it pure acknowledgements go before
data, so that a busy direction does not hold back the acknowledgements of the other one (a full-duplex link, as the
user-space shaper assumes). The kernel is told not to charge the 66 bytes of Ethernet, IPv4 and TCP headers of
each packet, so that it counts the bytes the user-space shaper counts: the stream of messages; a link's rate is the
rate its messages move at. One-way latency stays in user space (netem is not needed).
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Any

from pipelearn.config import Direction, RunConfig
from pipelearn.events import now
from pipelearn.runtime.netns import NetnsError, Network, run_command

HEADER_BYTES = 66
"""Ethernet (14), IPv4 (20) and TCP with timestamps (32) per packet: not charged to the link."""
_PURE_ACK = [
    *("match", "ip", "protocol", "6", "0xff"),
    *("match", "u8", "0x05", "0x0f", "at", "0"),  # an IPv4 header without options
    *("match", "u16", "0x0000", "0xffc0", "at", "2"),  # under 64 bytes in all
    *("match", "u8", "0x10", "0xff", "at", "33"),  # TCP flags: ACK alone
]


def link_mtu(config: RunConfig, device: int) -> int:
    """The MTU of a device's link: a packet of at most 1 ms at the fastest rate its schedules reach, 1500-9000 bytes.

    Every packet costs the kernel CPU time: on a 2-core machine 1500-byte packets at 50 Mbit/s took a quarter of a
    core, which the emulated devices' compute then lacked. A packet longer than 1 ms of the link would let each
    transfer end that much early: the shaper charges a packet once it has sent it.
    """
    fastest = max(mbps for direction in ("up", "down") for _, mbps in config.rates(device, direction))
    return 9000 if math.isinf(fastest) else min(max(round(fastest * 1e6 / 8 / 1000), 1500), 9000)


def _rate(mbps: float) -> list[str]:
    # What an idle link may send at once: 1 ms at its rate, at least a packet. The user-space shaper has no burst
    # at all; a larger one lets the first message after a pause through faster than the rate.
    burst = str(max(1514, int(mbps * 1e6 / 8 / 1000)))
    bits = f"{round(mbps * 1e6)}bit"
    return ["rate", bits, "ceil", bits, "burst", burst, "cburst", burst, "quantum", "1514"]


def shape(namespace: str, interface: str, mbps: float, shaped: bool) -> bool:
    """Set the rate of packets leaving `interface`; `shaped` says whether it has a shaper already.

    An unlimited rate (inf) removes the shaper. Returns whether the interface has a shaper now.
    """
    tc = ("tc", "-n", namespace)
    if math.isinf(mbps):
        if shaped:
            run_command(*tc, "qdisc", "del", "dev", interface, "root")
        return False
    if shaped:
        run_command(*tc, "class", "change", "dev", interface, "parent", "1:", "classid", "1:1", "htb", *_rate(mbps))
        return True
    run_command(
        *tc, "qdisc", "add", "dev", interface, "root", "handle", "1:",
        "stab", "overhead", str(-HEADER_BYTES), "htb", "default", "20",
    )  # fmt: skip
    run_command(*tc, "class", "add", "dev", interface, "parent", "1:", "classid", "1:1", "htb", *_rate(mbps))
    # the two classes below get next to nothing of their own and borrow the link's rate, acknowledgements first
    for classid, priority in (("1:10", "0"), ("1:20", "1")):
        run_command(
            *tc, "class", "add", "dev", interface, "parent", "1:1", "classid", classid, "htb",
            "rate", "1kbit", "ceil", "100gbit", "burst", "1514", "cburst", "1514", "prio", priority, "quantum", "1514",
        )  # fmt: skip
    run_command(*tc, "filter", "add", "dev", interface, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                *_PURE_ACK, "flowid", "1:10")  # fmt: skip
    return True


@dataclass(frozen=True)
class Change:
    """One scheduled rate change of one direction of one device's link."""

    at_s: float
    """Seconds since training start."""
    device: int
    direction: Direction
    mbps: float


class KernelLinks:
    """The kernel shapers of a run: the starting rates at once, later steps at their times from training start."""

    def __init__(self, network: Network, config: RunConfig) -> None:
        self.network = network
        self.changes = sorted(
            (Change(t, d, direction, mbps) for d in range(config.devices) for direction in ("up", "down")
             for t, mbps in config.rates(d, direction)[1:]),
            key=lambda c: c.at_s,
        )  # fmt: skip
        self.applied: list[dict[str, Any]] = []
        """Each change made after training started, with when it was made."""
        self.errors: list[str] = []
        self._shaped: dict[tuple[int, Direction], bool] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        for d in range(config.devices):
            for direction in ("up", "down"):
                self._set(d, direction, config.rates(d, direction)[0][1])

    def _set(self, device: int, direction: Direction, mbps: float) -> None:
        namespace, interface = (self.network.uplink if direction == "up" else self.network.downlink)(device)
        key = (device, direction)
        self._shaped[key] = shape(namespace, interface, mbps, self._shaped.get(key, False))

    def start(self, origin: float) -> None:
        """Make the scheduled changes from now on, each at `origin` plus its time, in a thread of its own."""
        if self.changes:
            self._thread = threading.Thread(target=self._run, args=(origin,), daemon=True, name="rate-changes")
            self._thread.start()

    def stop(self) -> None:
        """Make no more changes; idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self, origin: float) -> None:
        for change in self.changes:
            if self._stop.wait(max(origin + change.at_s - now(), 0.0)):
                return
            try:
                self._set(change.device, change.direction, change.mbps)
            except NetnsError as exc:
                self.errors.append(str(exc))
                logging.getLogger("pipelearn.run").error("a scheduled rate change failed: %s", exc)
                continue
            self.applied.append({**change.__dict__, "applied_s": now() - origin})
