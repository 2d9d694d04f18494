from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SeedFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEED_FORMAT_UNSPECIFIED: _ClassVar[SeedFormat]
    SEED_FORMAT_1: _ClassVar[SeedFormat]
SEED_FORMAT_UNSPECIFIED: SeedFormat
SEED_FORMAT_1: SeedFormat

class SeedPairs(_message.Message):
    __slots__ = ("format_version", "k", "indices", "values")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    format_version: SeedFormat
    k: int
    indices: bytes
    values: bytes
    def __init__(self, format_version: _Optional[_Union[SeedFormat, str]] = ..., k: _Optional[int] = ..., indices: _Optional[bytes] = ..., values: _Optional[bytes] = ...) -> None: ...

class SeedRound(_message.Message):
    __slots__ = ("version", "indices", "values")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    version: int
    indices: bytes
    values: bytes
    def __init__(self, version: _Optional[int] = ..., indices: _Optional[bytes] = ..., values: _Optional[bytes] = ...) -> None: ...

class SeedLog(_message.Message):
    __slots__ = ("rounds",)
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    rounds: _containers.RepeatedCompositeFieldContainer[SeedRound]
    def __init__(self, rounds: _Optional[_Iterable[_Union[SeedRound, _Mapping]]] = ...) -> None: ...

class SeedSet(_message.Message):
    __slots__ = ("indices", "values")
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    indices: bytes
    values: bytes
    def __init__(self, indices: _Optional[bytes] = ..., values: _Optional[bytes] = ...) -> None: ...

class SeedDense(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: bytes
    def __init__(self, values: _Optional[bytes] = ...) -> None: ...

class SeedDownlink(_message.Message):
    __slots__ = ("format_version", "k", "base_version", "version", "log", "set", "dense")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    DENSE_FIELD_NUMBER: _ClassVar[int]
    format_version: SeedFormat
    k: int
    base_version: int
    version: int
    log: SeedLog
    set: SeedSet
    dense: SeedDense
    def __init__(self, format_version: _Optional[_Union[SeedFormat, str]] = ..., k: _Optional[int] = ..., base_version: _Optional[int] = ..., version: _Optional[int] = ..., log: _Optional[_Union[SeedLog, _Mapping]] = ..., set: _Optional[_Union[SeedSet, _Mapping]] = ..., dense: _Optional[_Union[SeedDense, _Mapping]] = ...) -> None: ...

class SeedProbabilities(_message.Message):
    __slots__ = ("format_version", "k", "values")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    format_version: SeedFormat
    k: int
    values: bytes
    def __init__(self, format_version: _Optional[_Union[SeedFormat, str]] = ..., k: _Optional[int] = ..., values: _Optional[bytes] = ...) -> None: ...
