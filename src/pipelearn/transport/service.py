"""The gRPC service: one bidirectional stream of envelopes per device."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures

import grpc

from pipelearn.schedule import Key, Op
from pipelearn.transport import pipelearn_pb2 as pb

PROTOCOL_VERSION = 2
"""Bumped whenever the meaning of a message changes; peers of other versions are refused.

2: both sides send HEARTBEAT messages and drop a peer that sends nothing, not even those, for liveness_s.
"""

KIND_OF_TRANSFER = {Op.ACTIVATION: pb.ACTIVATION, Op.GRADIENT: pb.GRADIENT, Op.WEIGHTS: pb.WEIGHTS}
"""The message kind that carries each transfer of a schedule."""

MAX_MESSAGE_BYTES = 1 << 30
KEEPALIVE_S = 10
"""Each side pings the connection this often and closes it when a ping goes unanswered as long: a peer whose
machine or network is gone ends its stream within half a minute, even where nothing else is being sent."""
_METHOD = "/pipelearn.PipeLearn/Session"
_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_S * 1000),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_S * 1000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
# the server accepts the other side's pings at that rate (its default policy refuses pings under 5 minutes apart)
_SERVER_OPTIONS = [
    *_OPTIONS,
    ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_S * 1000 // 2),
    ("grpc.http2.max_ping_strikes", 0),
]

SessionHandler = Callable[[Iterator[pb.Envelope], grpc.ServicerContext], Iterator[pb.Envelope]]


def start_server(handler: SessionHandler, listen: str, workers: int) -> tuple[grpc.Server, int]:
    """Serve sessions on HOST:PORT (port 0 picks a free one); return the server and its port."""
    # gRPC sets SO_REUSEPORT by default, which lets a second server silently share a port already in use
    options = [*_SERVER_OPTIONS, ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=options)
    method = grpc.stream_stream_rpc_method_handler(
        handler,
        request_deserializer=pb.Envelope.FromString,
        response_serializer=pb.Envelope.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("pipelearn.PipeLearn", {"Session": method}),))
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {listen}: the address is taken or invalid ({exc})") from None
    server.start()
    return server, port


def open_session(
    address: str, requests: Iterator[pb.Envelope], connect_timeout_s: float = 30.0
) -> tuple[grpc.Channel, Iterator[pb.Envelope]]:
    """Connect to a server at HOST:PORT, waiting up to connect_timeout_s for it; return the channel and replies."""
    channel = grpc.insecure_channel(address, options=_OPTIONS)
    try:
        grpc.channel_ready_future(channel).result(timeout=connect_timeout_s)
    except grpc.FutureTimeoutError:
        channel.close()
        raise ConnectionError(f"no PipeLearn server answered at {address} within {connect_timeout_s:g} s") from None
    call = channel.stream_stream(
        _METHOD, request_serializer=pb.Envelope.SerializeToString, response_deserializer=pb.Envelope.FromString
    )
    return channel, call(requests)


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


def heartbeat(device: int, progress: int, backlog_s: float) -> pb.Envelope:
    """A heartbeat: the sender is alive, has done `progress` actions of its schedule and has `backlog_s` queued."""
    message = envelope(pb.HEARTBEAT, device)
    message.progress, message.backlog = progress, backlog_s
    return message


def transfer(key: Key, tensors: bytes) -> pb.Envelope:
    """The envelope of a scheduled transfer, tagged with its kind, device, round, iteration and micro-batch."""
    return envelope(
        KIND_OF_TRANSFER[key.op],
        key.device,
        round=key.round,
        iteration=key.iteration,
        microbatch=key.microbatch,
        tensors=tensors,
    )
