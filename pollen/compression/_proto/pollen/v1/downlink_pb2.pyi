from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DownlinkVersion(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOWNLINK_VERSION_UNSPECIFIED: _ClassVar[DownlinkVersion]
    DOWNLINK_VERSION_1: _ClassVar[DownlinkVersion]

class DownlinkKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOWNLINK_KIND_UNSPECIFIED: _ClassVar[DownlinkKind]
    DOWNLINK_KIND_DELTA: _ClassVar[DownlinkKind]
    DOWNLINK_KIND_FULL: _ClassVar[DownlinkKind]
DOWNLINK_VERSION_UNSPECIFIED: DownlinkVersion
DOWNLINK_VERSION_1: DownlinkVersion
DOWNLINK_KIND_UNSPECIFIED: DownlinkKind
DOWNLINK_KIND_DELTA: DownlinkKind
DOWNLINK_KIND_FULL: DownlinkKind

class Downlink(_message.Message):
    __slots__ = ("format_version", "kind", "base_version", "target_version", "base_fingerprint", "target_fingerprint", "base_is_initial", "updates", "codec")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_VERSION_FIELD_NUMBER: _ClassVar[int]
    BASE_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    BASE_IS_INITIAL_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    format_version: DownlinkVersion
    kind: DownlinkKind
    base_version: int
    target_version: int
    base_fingerprint: bytes
    target_fingerprint: bytes
    base_is_initial: bool
    updates: _containers.RepeatedScalarFieldContainer[bytes]
    codec: str
    def __init__(self, format_version: _Optional[_Union[DownlinkVersion, str]] = ..., kind: _Optional[_Union[DownlinkKind, str]] = ..., base_version: _Optional[int] = ..., target_version: _Optional[int] = ..., base_fingerprint: _Optional[bytes] = ..., target_fingerprint: _Optional[bytes] = ..., base_is_initial: _Optional[bool] = ..., updates: _Optional[_Iterable[bytes]] = ..., codec: _Optional[str] = ...) -> None: ...
