"""The hosts of a run as Linux network namespaces: the server and each device with an address of its own.

The server's namespace holds a bridge with the server's address and one veth per device; the other end of each
veth is the only interface (besides loopback) of that device's namespace. The addresses come from one private /24
that exists only inside these namespaces: none of them has a route out, and nothing outside them (interfaces,
routes, firewall rules) is touched. Every namespace's name starts with a prefix of this process and run, so that
parallel runs never meet, and `Network.remove` deletes them all, and with them their interfaces and queueing
disciplines, however the run ends.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from pipelearn.config import ConfigError

SUBNET = "10.210.0"
"""The /24 of the run's hosts: the server at .1, device d at .(d + 2)."""
MAX_DEVICES = 250
BRIDGE = "br0"
DEVICE_INTERFACE = "eth0"
SEND_QUEUE_BYTES = 16384
"""Each namespace's net.ipv4.tcp_limit_output_bytes: the most a TCP connection keeps queued below it. With the
default (MBs) a transfer's data fills the shaper's queue, and the acknowledgements of the other direction, riding
on that data, wait seconds behind it: the two directions of a link would slow each other down."""
_NAMESPACES = Path("/run/netns")
_RUNS = itertools.count()
_HINT = "Run it as root on Linux with iproute2 installed, or drop --netns to shape the links in user space."


class NetnsError(OSError):
    """Network namespaces cannot be made or used here; the message says why and how to run without them."""


def unavailable_reason() -> str | None:
    """Why this process cannot make network namespaces, or None when nothing says it cannot."""
    if sys.platform != "linux":
        return f"network namespaces are a Linux feature, and this is {sys.platform}"
    if os.geteuid() != 0:
        return f"making network namespaces needs root, and this process runs as user id {os.geteuid()}"
    missing = [command for command in ("ip", "tc", "sysctl") if shutil.which(command) is None]
    if missing:
        return f"the command(s) {', '.join(missing)} (from iproute2 and procps) are not installed"
    return None


def run_command(*args: str) -> str:
    """Run one ip/tc/sysctl command; NetnsError with its message and the way out if it fails."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsError(f"--netns cannot run here: `{' '.join(args)}` failed ({exc}). {_HINT}") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip()
        raise NetnsError(f"--netns cannot run here: `{' '.join(args)}` failed: {message}. {_HINT}")
    return done.stdout


class Network:
    """The namespaces and veth pairs of one run: a context manager that makes them and always removes them."""

    def __init__(self, devices: int, mtus: Sequence[int] | None = None) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsError(f"--netns cannot run here: {reason}. {_HINT}")
        if devices > MAX_DEVICES:
            raise ConfigError(f"a --netns run puts its hosts in one /24: at most {MAX_DEVICES} devices, not {devices}")
        self.prefix = f"pl{os.getpid()}-{next(_RUNS)}"
        """Every namespace of this run starts with it."""
        self.server = f"{self.prefix}-server"
        """The server's namespace."""
        self.devices = [f"{self.prefix}-dev{d}" for d in range(devices)]
        """Each device's namespace."""
        self.server_address = f"{SUBNET}.1"
        self.mtus = list(mtus or [1500] * devices)
        """The MTU of each device's veth pair."""
        self._made: list[str] = []

    def device_address(self, device: int) -> str:
        """The address of a device's host."""
        return f"{SUBNET}.{device + 2}"

    def uplink(self, device: int) -> tuple[str, str]:
        """The namespace and interface where a device's uplink leaves: its end of the veth."""
        return self.devices[device], DEVICE_INTERFACE

    def downlink(self, device: int) -> tuple[str, str]:
        """The namespace and interface where a device's downlink leaves: the server's end of the veth."""
        return self.server, f"dev{device}"

    def exec_in(self, device: int | None) -> list[str]:
        """The command prefix that runs a command on a device's host, or on the server's (None)."""
        return ["ip", "netns", "exec", self.server if device is None else self.devices[device]]

    def create(self) -> None:
        """Make the namespaces, the bridge, the veth pairs and the addresses."""
        self._add(self.server)
        run_command("ip", "-n", self.server, "link", "add", BRIDGE, "type", "bridge")
        run_command("ip", "-n", self.server, "addr", "add", f"{self.server_address}/24", "dev", BRIDGE)
        # the bridge takes the largest MTU; each connection's segment size still fits its own veth
        mtu = str(max(self.mtus, default=1500))
        run_command("ip", "-n", self.server, "link", "set", BRIDGE, "gso_max_segs", "1", "mtu", mtu, "up")
        for d, namespace in enumerate(self.devices):
            self._add(namespace)
            _, port = self.downlink(d)
            run_command(
                "ip", "-n", self.server, "link", "add", port, "type", "veth",
                "peer", "name", DEVICE_INTERFACE, "netns", namespace,
            )  # fmt: skip
            # one segment per packet, so that the shaper and the send-queue limit see packets, not 64 kB bursts
            mtu = str(self.mtus[d])
            run_command(
                "ip", "-n", self.server, "link", "set", port, "master", BRIDGE, "gso_max_segs", "1", "mtu", mtu, "up"
            )  # fmt: skip
            run_command("ip", "-n", namespace, "addr", "add", f"{self.device_address(d)}/24", "dev", DEVICE_INTERFACE)
            run_command("ip", "-n", namespace, "link", "set", DEVICE_INTERFACE, "gso_max_segs", "1", "mtu", mtu, "up")

    def _add(self, namespace: str) -> None:
        self._made.append(namespace)  # before it exists: an interrupt in between still removes it
        run_command("ip", "netns", "add", namespace)
        run_command("ip", "-n", namespace, "link", "set", "lo", "up")
        run_command(
            "ip", "netns", "exec", namespace, "sysctl", "-q", "-w",
            f"net.ipv4.tcp_limit_output_bytes={SEND_QUEUE_BYTES}",
            "net.ipv4.tcp_slow_start_after_idle=0",  # a link that was idle is at its rate at once, as in user space
        )  # fmt: skip

    def remove(self) -> None:
        """Delete every namespace this run made, with its interfaces and shapers; safe to call again."""
        while self._made:
            namespace = self._made[-1]
            if (_NAMESPACES / namespace).exists():
                subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, timeout=30)
            self._made.pop()

    def __enter__(self) -> Network:
        atexit.register(self.remove)
        try:
            self.create()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.remove()
        atexit.unregister(self.remove)
