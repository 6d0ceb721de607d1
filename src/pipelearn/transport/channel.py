"""What one side does to the tensors it exchanges with one peer: compress what it sends, check and expand what
it receives, keep the weight references for error feedback, and count bytes before and after compression.

Error feedback applies to weights only. A weight stream (the weights the server sends one device, or the weights
one device sends the server) goes on with the same tensors round after round, so both ends keep a reference: the
receiver's copy of each weight tensor as it last rebuilt it. The sender compresses the difference between the
weights and that reference, and both ends add the decompressed difference to it. What a message drops (top-k's
small entries, int8's and fp16's rounding) stays in the difference, so the next message carries it: the receiver
is never further from the weights than one message's error, and errors do not pile up. The first message of a
stream is coded against zeros; under top-k it is sent whole instead, since keeping a fraction of the weights
themselves would drop most of the model.

Activations and gradients get none: each message is a new micro-batch, other samples, so what one message drops
belongs to samples that are gone. Added to the next message's tensor it would give those samples' features (or
gradients) to other samples, and the device's backward pass would follow another micro-batch's error, not restore
the lost one. Top-k on them is a plain sparsification, its error bounded by what it drops.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch

from pipelearn.config import RunConfig
from pipelearn.schedule import Op
from pipelearn.transport.codec import TensorSpec, WireError, decode, encode, spec_of
from pipelearn.transport.compress import (
    Codec,
    compress_all,
    decompress,
    decompress_all,
    payload_bytes,
    wire_forms,
)

_WHOLE = Codec("none")


class Stream:
    """One direction of the traffic with one peer: its codec, its weight references and its byte counts."""

    def __init__(self, codec: Codec | str) -> None:
        self.codec = Codec.parse(codec)
        self.raw_bytes = 0
        """Bytes the tensors would have taken uncompressed (safetensors, as codec none sends them)."""
        self.wire_bytes = 0
        """Bytes of the tensors as sent (safetensors of their compressed forms)."""
        self.references: dict[str, torch.Tensor] = {}
        """Per weight tensor, the receiver's copy as it last rebuilt it (both ends hold the same)."""

    def encode(self, tensors: Mapping[str, torch.Tensor], *, feedback: bool = False) -> bytes:
        """Safetensors bytes of the compressed tensors; `feedback` codes them against the references (weights)."""
        if self.codec.name == "none":
            data = encode(tensors)
            self._count(len(data), len(data))
            return data
        tensors = {name: t.detach().cpu() for name, t in tensors.items()}
        codecs = self._codecs(spec_of(tensors), feedback)
        if feedback:
            tensors = {name: self._difference(name, x, codecs[name]) for name, x in tensors.items()}
        parts = compress_all(codecs, tensors)
        if feedback:
            for name, x in tensors.items():
                self._rebuild(name, decompress(codecs[name], name, parts, x.shape, x.dtype), codecs[name])
        data = encode(parts)
        self._count(payload_bytes(spec_of(tensors)), len(data))
        return data

    def decode(
        self, data: bytes, expected: Mapping[str, TensorSpec], *, feedback: bool = False
    ) -> dict[str, torch.Tensor]:
        """The tensors of a message, checked against the logical `expected` and the codec's exact form."""
        if self.codec.name == "none":
            tensors = decode(data, expected)
            self._count(len(data), len(data))
            return tensors
        codecs = self._codecs(expected, feedback)
        try:
            parts = decode(data, wire_forms(codecs, expected))
        except WireError as exc:
            raise WireError(f"{self.codec}-compressed tensors: {exc}") from None
        tensors = decompress_all(codecs, parts, expected)
        if feedback:
            tensors = {name: self._rebuild(name, x, codecs[name]).clone() for name, x in tensors.items()}
        self._count(payload_bytes(expected), len(data))
        return tensors

    def usage(self) -> dict[str, Any]:
        """The codec and the bytes before (raw) and after (wire) compression, for metrics.json."""
        return {"codec": str(self.codec), "raw_bytes": self.raw_bytes, "wire_bytes": self.wire_bytes}

    def _codecs(self, specs: Mapping[str, TensorSpec], feedback: bool) -> dict[str, Codec]:
        """Each tensor's codec: the stream's, or for weights (feedback) `weight_codec`'s."""
        if not feedback:
            return dict.fromkeys(specs, self.codec)
        return {name: weight_codec(self.codec, self._reference(name, spec) is None) for name, spec in specs.items()}

    def _reference(self, name: str, spec: TensorSpec) -> torch.Tensor | None:
        ref = self.references.get(name)
        if ref is None or not spec[1].is_floating_point or (tuple(ref.shape), ref.dtype) != (tuple(spec[0]), spec[1]):
            return None
        return ref

    def _difference(self, name: str, x: torch.Tensor, codec: Codec) -> torch.Tensor:
        ref = self._reference(name, (tuple(x.shape), x.dtype))
        return x if ref is None or codec is _WHOLE else x - ref

    def _rebuild(self, name: str, delta: torch.Tensor, codec: Codec) -> torch.Tensor:
        """Add a decompressed difference to the reference (none yet: zeros) and keep the sum as the new one."""
        if not delta.is_floating_point():
            return delta
        ref = self._reference(name, (tuple(delta.shape), delta.dtype))
        value = delta.clone() if ref is None or codec is _WHOLE else ref + delta
        self.references[name] = value
        return value

    def _count(self, raw: int, wire: int) -> None:
        self.raw_bytes += raw
        self.wire_bytes += wire


def weight_codec(codec: Codec, first: bool) -> Codec:
    """The codec of a weight tensor: the stream's, except in its first message under top-k, which goes whole."""
    return _WHOLE if first and codec.name == "topk" else codec


class Channel:
    """One side's traffic with one peer: the up stream (device to server) and the down stream."""

    def __init__(self, side: Literal["server", "device"], up: Codec | str, down: Codec | str) -> None:
        self.up = Stream(up)
        self.down = Stream(down)
        self.sent, self.received = (self.down, self.up) if side == "server" else (self.up, self.down)

    def encode(self, op: Op, tensors: Mapping[str, torch.Tensor]) -> bytes:
        """The bytes of a transfer (Op.ACTIVATION, GRADIENT or WEIGHTS); weights with error feedback."""
        return self.sent.encode(tensors, feedback=op is Op.WEIGHTS)

    def decode(self, op: Op, data: bytes, expected: Mapping[str, TensorSpec]) -> dict[str, torch.Tensor]:
        """The checked tensors of a received transfer; weights with error feedback."""
        return self.received.decode(data, expected, feedback=op is Op.WEIGHTS)

    def usage(self) -> dict[str, dict[str, Any]]:
        """Codec, raw and wire bytes of each direction, for metrics.json."""
        return {"up": self.up.usage(), "down": self.down.usage()}


def channel_for(config: RunConfig, side: Literal["server", "device"]) -> Channel:
    """One end (the server's with one device, or a device's) of the traffic, with the run's codecs."""
    return Channel(side, config.codec("up"), config.codec("down"))
