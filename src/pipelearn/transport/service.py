"""The gRPC service: one bidirectional stream of envelopes per device."""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
from google.protobuf.message import DecodeError

from pipelearn.schedule import Key, Op
from pipelearn.transport import pipelearn_pb2 as pb
from pipelearn.transport.codec import WireError
from pipelearn.transport.credentials import DeviceCredentials, ServerCredentials, warn_if_plain_text

PROTOCOL_VERSION = 3
"""Bumped whenever the meaning of a message changes; peers of other versions are refused.

2: the PLAN message carries the resolved run plan beside the configuration.
3: both sides send HEARTBEAT messages and drop a peer that sends nothing, not even those, for liveness_s.
"""

KIND_OF_TRANSFER = {Op.ACTIVATION: pb.ACTIVATION, Op.GRADIENT: pb.GRADIENT, Op.WEIGHTS: pb.WEIGHTS}
"""The message kind that carries each transfer of a schedule."""

DEFAULT_RECEIVE_BYTES = 256 << 20
"""The largest message a peer accepts unless told a limit from the plan: the weights of the zoo's largest model
(ResNet-50, about 95 MB) with room to spare. The server sets its own limit from the plan."""

KEEPALIVE_S = 10
"""Each side pings the connection this often and closes it when a ping goes unanswered as long: a peer whose
machine or network is gone ends its stream within half a minute, even where nothing else is being sent."""
STILL_TRYING_S = 5.0
"""A device that has not reached the server says so this often, until its connect timeout."""
_METHOD = "/pipelearn.PipeLearn/Session"
_KEEPALIVE = [
    ("grpc.keepalive_time_ms", KEEPALIVE_S * 1000),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_S * 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
# the server accepts the other side's pings at that rate (its default policy refuses pings under 5 minutes apart)
_SERVER_KEEPALIVE = [
    *_KEEPALIVE,
    ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_S * 1000 // 2),
    ("grpc.http2.max_ping_strikes", 0),
]

SessionHandler = Callable[[Iterator[pb.Envelope | WireError], grpc.ServicerContext], Iterator[pb.Envelope]]


def parse_envelope(data: bytes) -> pb.Envelope | WireError:
    """An envelope from its bytes, or (returned, not raised, so that the stream's reader can say who sent it) the
    WireError that says they are not one. gRPC would otherwise end the stream with a bare INTERNAL status."""
    try:
        return pb.Envelope.FromString(data)
    except DecodeError as exc:
        return WireError(f"a message of {len(data)} bytes is not a protobuf Envelope ({exc})")


def start_server(
    handler: SessionHandler,
    listen: str,
    workers: int,
    credentials: ServerCredentials | None = None,
    max_receive_bytes: int = DEFAULT_RECEIVE_BYTES,
) -> tuple[grpc.Server, int]:
    """Serve sessions on HOST:PORT (port 0 picks a free one), over mutual TLS unless `credentials` is None."""
    # gRPC sets SO_REUSEPORT by default, which lets a second server silently share a port already in use
    options = [("grpc.max_receive_message_length", max_receive_bytes), *_SERVER_KEEPALIVE, ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=options)
    method = grpc.stream_stream_rpc_method_handler(
        handler,
        request_deserializer=parse_envelope,
        response_serializer=pb.Envelope.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("pipelearn.PipeLearn", {"Session": method}),))
    try:
        if credentials is None:
            warn_if_plain_text(listen, "server")
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, credentials.grpc())
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {listen}: the address is taken or invalid ({exc})") from None
    server.start()
    return server, port


def open_session(
    address: str,
    requests: Iterator[pb.Envelope],
    connect_timeout_s: float = 30.0,
    credentials: DeviceCredentials | None = None,
    max_receive_bytes: int = DEFAULT_RECEIVE_BYTES,
) -> tuple[grpc.Channel, Iterator[pb.Envelope | WireError]]:
    """Connect to a server at HOST:PORT (mutual TLS unless `credentials` is None); return the channel and replies.

    Waits up to connect_timeout_s for the server to answer; a TLS handshake that fails ends the wait at once, since
    waiting longer cannot mend credentials that do not fit.
    """
    options = [("grpc.max_receive_message_length", max_receive_bytes), *_KEEPALIVE]
    if credentials is None:
        warn_if_plain_text(address, "device")
        channel = grpc.insecure_channel(address, options=options)
    else:
        channel = grpc.secure_channel(address, credentials.grpc(), options=options)
    call = channel.stream_stream(
        _METHOD, request_serializer=pb.Envelope.SerializeToString, response_deserializer=parse_envelope
    )
    try:
        _wait_until_ready(channel, call, address, connect_timeout_s, tls=credentials is not None)
    except ConnectionError:
        channel.close()
        raise
    return channel, call(requests)


def _wait_until_ready(
    channel: grpc.Channel, call: grpc.StreamStreamMultiCallable, address: str, timeout_s: float, tls: bool
) -> None:
    states: queue.Queue[grpc.ChannelConnectivity] = queue.Queue()
    channel.subscribe(states.put, try_to_connect=True)
    deadline = time.monotonic() + timeout_s
    state, reason = grpc.ChannelConnectivity.IDLE, ""
    tell = time.monotonic() + STILL_TRYING_S
    try:
        while (left := deadline - time.monotonic()) > 0:
            if time.monotonic() >= tell:
                tell += STILL_TRYING_S
                why = f" ({reason})" if reason else ""
                _log.info("still trying to reach %s%s; giving up in %.0f s", address, why, left)
            with contextlib.suppress(queue.Empty):  # gRPC stays in TRANSIENT_FAILURE while it retries: look anyway
                state = states.get(timeout=min(left, 1.0))
            if state is grpc.ChannelConnectivity.READY:
                return
            if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                reason = _last_error(call)
                if _HANDSHAKE_FAILURE.search(reason):
                    side = (
                        "check that the server runs with --credentials from the same `pipelearn credentials` "
                        "directory as this device's file, and that its certificate names the host dialled"
                        if tls
                        else "the server may require TLS: give --credentials"
                    )
                    raise ConnectionError(f"the TLS handshake with {address} failed ({reason}); {side}")
    finally:
        channel.unsubscribe(states.put)
    why = f" ({reason})" if reason else ""
    raise ConnectionError(f"no PipeLearn server answered at {address} within {timeout_s:g} s{why}")


_log = logging.getLogger("pipelearn.device")
_HANDSHAKE_FAILURE = re.compile(r"handshake|ssl|certificate|verification|socket closed", re.IGNORECASE)


def _last_error(call: grpc.StreamStreamMultiCallable) -> str:
    """Why the channel cannot connect: a call on a failed channel fails at once with the last error."""
    try:
        for _ in call(iter(()), timeout=1.0):
            break
    except grpc.RpcError as exc:
        details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
        return str(details).removeprefix("failed to connect to all addresses; last error: ")
    return ""


def envelope(
    kind: pb.Kind,
    device: int,
    *,
    round: int = 0,
    iteration: int = -1,
    microbatch: int = 0,
    tensors: bytes = b"",
    text: str = "",
    clock: float = 0.0,
) -> pb.Envelope:
    """An envelope of this protocol version."""
    return pb.Envelope(
        protocol=PROTOCOL_VERSION,
        kind=kind,
        device=device,
        round=round,
        iteration=iteration,
        microbatch=microbatch,
        tensors=tensors,
        text=text,
        clock=clock,
    )


def kind_name(kind: int) -> str:
    """The name of a message kind, or its number when this protocol knows no such kind."""
    return pb.Kind.Name(kind) if kind in pb.Kind.values() else f"unknown kind {kind}"


def printable(text: str, limit: int = 1000) -> str:
    """A peer's text made safe to log: control characters escaped, cut to `limit` characters."""
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)


def heartbeat(device: int, progress: int, backlog_s: float) -> pb.Envelope:
    """A heartbeat: the sender is alive, has done `progress` actions of its schedule and has `backlog_s` queued."""
    message = envelope(pb.HEARTBEAT, device)
    message.progress, message.backlog = progress, backlog_s
    return message


def transfer(key: Key, tensors: bytes, text: str = "") -> pb.Envelope:
    """The envelope of a scheduled transfer, tagged with its kind, device, round, iteration and micro-batch."""
    return envelope(
        KIND_OF_TRANSFER[key.op],
        key.device,
        round=key.round,
        iteration=key.iteration,
        microbatch=key.microbatch,
        tensors=tensors,
        text=text,
    )
