from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KIND_UNSPECIFIED: _ClassVar[Kind]
    HELLO: _ClassVar[Kind]
    PLAN: _ClassVar[Kind]
    ACTIVATION: _ClassVar[Kind]
    GRADIENT: _ClassVar[Kind]
    WEIGHTS: _ClassVar[Kind]
    EVENTS: _ClassVar[Kind]
    DONE: _ClassVar[Kind]
    ERROR: _ClassVar[Kind]
    READY: _ClassVar[Kind]
    START: _ClassVar[Kind]
    HEARTBEAT: _ClassVar[Kind]
KIND_UNSPECIFIED: Kind
HELLO: Kind
PLAN: Kind
ACTIVATION: Kind
GRADIENT: Kind
WEIGHTS: Kind
EVENTS: Kind
DONE: Kind
ERROR: Kind
READY: Kind
START: Kind
HEARTBEAT: Kind

class Envelope(_message.Message):
    __slots__ = ("protocol", "kind", "device", "round", "iteration", "microbatch", "tensors", "text", "clock", "progress", "backlog")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    MICROBATCH_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CLOCK_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    protocol: int
    kind: Kind
    device: int
    round: int
    iteration: int
    microbatch: int
    tensors: bytes
    text: str
    clock: float
    progress: int
    backlog: float
    def __init__(self, protocol: _Optional[int] = ..., kind: _Optional[_Union[Kind, str]] = ..., device: _Optional[int] = ..., round: _Optional[int] = ..., iteration: _Optional[int] = ..., microbatch: _Optional[int] = ..., tensors: _Optional[bytes] = ..., text: _Optional[str] = ..., clock: _Optional[float] = ..., progress: _Optional[int] = ..., backlog: _Optional[float] = ...) -> None: ...
